import json
import shutil
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from labeling import exports, services
from labeling.models import Export


class Command(BaseCommand):
    help = (
        "Make an export snapshot: the file and its manifest (counts, filters, sha256). It is built here with a "
        "progress bar, or by a worker with --queue. Filters: "
        + "; ".join(f"{name}: {about}" for name, (_, _, about) in exports.FILTERS.items())
        + "."
    )

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=Export.Kind.values)
        parser.add_argument("--format", default="jsonl", choices=Export.Format.values)
        parser.add_argument("--filter", action="append", default=[], metavar="NAME=VALUE",
                            help="A filter; repeat for more. Lists are comma-separated: --filter split=train,valid")
        parser.add_argument("--output", type=Path, help="Also copy the file (and its manifest beside it) here.")
        parser.add_argument("--user", help="Who asks: recorded in the manifest. Default: the command line.")
        parser.add_argument("--with-identities", action="store_true",
                            help="Usernames instead of pseudonyms; --user must name an admin.")
        parser.add_argument("--queue", action="store_true", help="Hand the export to a worker and return.")

    def handle(self, *args, kind, format, filter, output, user, with_identities, queue, **options):
        filters = {}
        for item in filter:
            name, equals, value = item.partition("=")
            if not equals:
                raise CommandError(f"--filter {item!r}: write it as NAME=VALUE.")
            filters[name.strip()] = value.strip()
        created_by = None
        if user:
            created_by = get_user_model().objects.filter(username=user).first()
            if created_by is None:
                raise CommandError(f"No user named {user!r}.")
        try:
            export = services.export_create(kind=kind, fmt=format, filters=filters, created_by=created_by,
                                            with_identities=with_identities, queue=queue)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        if queue:
            self.stdout.write(f"Queued export #{export.pk} for a worker.")
            return
        with tqdm(total=1, unit=" rows", desc=f"export #{export.pk}") as bar:
            def progress(done, total):
                bar.total = total
                bar.update(done - bar.n)

            try:
                export = services.export_run(export_id=export.pk, on_progress=progress)
            except Exception as exc:
                raise CommandError(f"Export #{export.pk} failed: {exc}") from None
        path = Path(export.file.path)
        if output:
            shutil.copyfile(path, output)
            (output.parent / (output.name + ".manifest.json")).write_text(json.dumps(export.manifest, indent=2) + "\n")
            path = output
        counts = ", ".join(f"{n} {name}" for name, n in export.manifest["counts"].items())
        self.stdout.write(f"Export #{export.pk}: {counts}.\n{path}\nsha256 {export.sha256}")
