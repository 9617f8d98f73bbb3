from django.conf import settings
from django.db import migrations, models

BANDS = ["lsh_band_0", "lsh_band_1", "lsh_band_2", "lsh_band_3"]


def key_and_band_stored_prompts(apps, schema_editor):
    """Key stored prompts by the new normalisation and give them their LSH band keys.

    The new normalisation also strips punctuation, so two stored prompts may now share a key: the older
    keeps it and the newer is left without one.
    """
    from labeling import intake, near_duplicates

    Prompt = apps.get_model("labeling", "Prompt")
    prefix = settings.PROMPT_DEDUP_PREFIX_CHARS
    # Every old key goes first: a new key may equal the old key of a prompt not rewritten yet.
    Prompt.objects.exclude(dedup_key="").update(dedup_key="")
    seen, last = set(), 0
    while batch := list(Prompt.objects.filter(id__gt=last).order_by("id").values_list("id", "text")[:2000]):
        normalised = [intake.normalise(text) for _, text in batch]
        updates = []
        for (pk, _), text, bands in zip(batch, normalised, near_duplicates.lsh_bands(normalised)):
            key = intake.dedup_key(text, prefix, normalised=True)
            if key in seen:
                key = ""
            elif key:
                seen.add(key)
            updates.append(Prompt(id=pk, dedup_key=key, **dict(zip(BANDS, bands))))
        Prompt.objects.bulk_update(updates, ["dedup_key", *BANDS])
        last = batch[-1][0]


class Migration(migrations.Migration):

    dependencies = [
        ("labeling", "0008_run_progress_from_steps"),
    ]

    operations = [
        *[
            migrations.AddField(
                model_name="prompt", name=name, field=models.BigIntegerField(blank=True, editable=False, null=True)
            )
            for name in BANDS
        ],
        *[
            migrations.AddIndex(model_name="prompt", index=models.Index(fields=[name], name=f"prompt_{name}"))
            for name in BANDS
        ],
        migrations.RunPython(key_and_band_stored_prompts, migrations.RunPython.noop),
    ]
