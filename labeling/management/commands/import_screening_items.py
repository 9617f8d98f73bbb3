from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from labeling import services


class Command(BaseCommand):
    help = (
        'Import screening items from JSONL, all or none. A row: {"part": "sensitive_flags" | "ranking" | '
        '"demonstration", "prompt": "...", "completions": ["..."], "gold": {"flags": [...]} or '
        '{"groups": [[0], [1, 2]]}, "explanation": "..."}.'
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)

    def handle(self, *args, file, **options):
        if not file.is_file():
            raise CommandError(f"{file} is not a file.")
        try:
            with file.open(encoding="utf-8") as lines:
                items = services.screening_items_import(lines=lines)
        except (ValidationError, UnicodeDecodeError) as exc:
            raise CommandError(" ".join(getattr(exc, "messages", [str(exc)]))) from None
        self.stdout.write(f"Imported {len(items)} screening items.")
