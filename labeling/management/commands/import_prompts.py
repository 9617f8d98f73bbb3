import time
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from labeling import services
from labeling.models import ImportJob


class Command(BaseCommand):
    help = (
        "Import prompts from a JSONL or CSV file through the intake rules (dedup and near-duplicates, per-user "
        "cap, split, PII redaction). Small files import here; large ones go to a Celery worker, and this command "
        "follows it. Exits non-zero, with the reason, when nothing was imported."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--format", choices=ImportJob.Format.values, help="Default: from the file name.")
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--inline", action="store_true", help="Import in this process, whatever the size.")
        mode.add_argument("--queue", action="store_true", help="Hand the file to a worker, whatever the size.")
        parser.add_argument("--no-wait", action="store_true", help="With a worker, return once the job is queued.")

    def handle(self, *args, file, format, inline, queue, no_wait, **options):
        if not file.is_file():
            raise CommandError(f"{file} is not a file.")
        with file.open("rb") as handle:
            try:
                job = services.import_job_create(
                    uploaded_file=File(handle, name=file.name), created_by=None, fmt=format
                )
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
        run_here = inline or (not queue and job.size_bytes <= settings.PROMPT_IMPORT_INLINE_MAX_BYTES)
        with tqdm(total=job.size_bytes, unit="B", unit_scale=True, desc=file.name) as bar:
            if run_here:
                job = services.import_job_run(job_id=job.pk, on_progress=lambda rows, done: bar.update(done - bar.n))
            else:
                services.import_job_start(job=job, inline=False)
                self.stdout.write(f"Queued import job #{job.pk} for a worker.")
                if no_wait:
                    return
                job = self._follow(job, bar)
            bar.update(job.size_bytes - bar.n)
        self._report(job)

    def _follow(self, job, bar):
        while not job.is_finished:
            time.sleep(0.5)
            job.refresh_from_db()
            bar.update(job.progress()["bytes_read"] - bar.n)
        return job

    def _report(self, job):
        if job.state == ImportJob.State.FAILED:
            self._row_errors(job)  # every row turned away: each one's reason, then the failure
            raise CommandError(job.error)
        self.stdout.write(
            f"Imported {job.accepted} of {job.rows_read} rows: {job.duplicates} duplicates, {job.over_cap} over "
            f"the per-user cap, {job.rejected} rejected."
        )
        for title, counts in [("Splits", job.split_counts), ("PII redacted", job.redactions),
                              ("Tasks opened", job.tasks_opened)]:
            self.stdout.write(f"{title}: {', '.join(f'{name} {n}' for name, n in counts.items()) or 'none'}.")
        self._row_errors(job)

    def _row_errors(self, job):
        for error in job.row_errors:
            self.stdout.write(f"  line {error['line']}: {error['reason']}")
        if job.row_errors_omitted:
            self.stdout.write(f"  ... and {job.row_errors_omitted} more")
