import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from labeling import services
from labeling.forms import typed_value
from labeling.models import TrainingRun


class Command(BaseCommand):
    help = (
        "Start a training run for a GPU worker (sft, reward or ppo) and follow it with a progress bar, cancel "
        "one (--cancel ID), or list the latest (--list)."
    )

    def add_arguments(self, parser):
        parser.add_argument("kind", nargs="?", choices=TrainingRun.Kind.values)
        parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                            help="An rlhf option for this run, e.g. --option epochs=2; repeat for more.")
        parser.add_argument("--no-wait", action="store_true", help="Return once the run is queued.")
        parser.add_argument("--cancel", type=int, metavar="ID", help="Cancel this run.")
        parser.add_argument("--list", action="store_true", help="The latest runs and their state.")

    def handle(self, *args, kind, option, no_wait, cancel, list, **options):
        if list:
            for run in TrainingRun.objects.select_related("model_version")[:20]:
                version = getattr(run, "model_version", None)
                made = f"{version.name} {version.status}" if version else ""
                self.stdout.write(f"#{run.pk} {run.kind} {run.state} {run.step}/{run.total_steps} {made} "
                                  f"{run.gate.get('reason', '')}")
            return
        try:
            if cancel:
                run = services.training_run_cancel(run=TrainingRun.objects.get(pk=cancel))
                self.stdout.write(f"Run #{run.pk}: {'cancelled' if run.is_finished else 'cancel requested'}.")
                return
            if not kind:
                raise CommandError("Name the kind to train: sft, reward or ppo.")
            values = {}
            for item in option:
                name, equals, value = item.partition("=")
                if not equals:
                    raise CommandError(f"--option {item!r}: write it as NAME=VALUE.")
                values[name.strip()] = typed_value(value.strip())
            run = services.training_run_start(kind=kind, options=values, trigger="started from the command line")
        except TrainingRun.DoesNotExist:
            raise CommandError(f"No training run #{cancel}.") from None
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(f"Queued {run} for a GPU worker.")
        if no_wait:
            return
        with tqdm(total=1, unit="step", desc=str(run)) as bar:
            while not run.is_finished:
                time.sleep(1)
                run.refresh_from_db()
                bar.total = max(run.total_steps, 1)
                bar.update(run.step - bar.n)
        if run.state != TrainingRun.State.SUCCEEDED:
            raise CommandError(f"{run} {run.state}: {run.error}")
        self.stdout.write(f"{run}: {run.gate.get('reason', '')}")

