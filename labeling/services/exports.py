"""Export snapshots: checked on request, built once by a worker, never changed afterwards."""

import json
import logging
import os
import uuid
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .. import exports
from ..models import Export, Role
from ..permissions import has_role

logger = logging.getLogger(__name__)


def export_create(*, kind, fmt, filters=None, created_by, with_identities=False, queue=True):
    """Check the request and record the export; a worker builds it after the commit."""
    if kind not in Export.Kind.values:
        raise ValidationError(f"Unknown export kind {kind!r}; choose from {', '.join(Export.Kind.values)}.")
    if fmt not in Export.Format.values:
        raise ValidationError(f"Unknown format {fmt!r}; choose from {', '.join(Export.Format.values)}.")
    if with_identities and not (created_by and has_role(created_by, Role.ADMIN)):
        raise ValidationError("Only an admin may export labelers by name; others get pseudonyms.")
    cleaned = exports.filters_parse(kind, filters)
    if fmt == Export.Format.CSV and not exports.writers.is_flat(exports.source_for(kind, cleaned, fmt=fmt).schema):
        raise ValidationError(f"{Export.Kind(kind).label} rows hold lists, which CSV cannot; choose JSONL or Parquet.")
    export = Export.objects.create(
        kind=kind, format=fmt, filters=cleaned, with_identities=with_identities, created_by=created_by
    )
    if queue:
        from ..tasks import build_export

        transaction.on_commit(lambda: build_export.delay(export.pk))
    return export


def export_run(*, export_id, on_progress=None):
    """Build the export's file and manifest. Safe to run twice: a finished export is left alone,
    and of two builds at once only the first to finish is kept."""
    Export.objects.filter(pk=export_id, state=Export.State.QUEUED).update(
        state=Export.State.RUNNING, started_at=timezone.now()
    )
    export = Export.objects.select_related("created_by").get(pk=export_id)
    if export.is_finished:
        return export
    folder = Path(settings.MEDIA_ROOT) / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{export.filename}.{uuid.uuid4().hex}.partial"

    def progress(done, total):
        share = min(done / total, 1.0) if total else 1.0
        Export.objects.filter(pk=export_id).update(progress=share)
        if on_progress:
            on_progress(done, total)

    try:
        source = exports.source_for(
            export.kind, export.filters, with_identities=export.with_identities, fmt=export.format
        )
        counts, columns = exports.write(source, export.format, partial, progress)
        summary = {**source.summary(), "model_versions": exports.model_versions(source.versions)}
    except Exception as exc:
        partial.unlink(missing_ok=True)
        logger.exception("Export #%s failed", export_id)
        Export.objects.filter(pk=export_id, state=Export.State.RUNNING).update(
            state=Export.State.FAILED, error=f"The export failed: {exc}", finished_at=timezone.now()
        )
        raise
    return _publish(export, partial, counts, columns, summary)


def _publish(export, partial, counts, columns, summary):
    sha256, size = exports.sha256_of(partial), partial.stat().st_size
    # Stored rows that break today's rules for answers were left out, by row and rule; the total shows with
    # the other counts.
    left_out = counts.pop("left_out", {})
    if left_out:
        counts["invalid_rows_left_out"] = sum(left_out.values())
    finished_at = timezone.now()
    manifest = {
        "id": export.pk,
        "kind": export.kind,
        "format": export.format,
        "file": export.filename,
        "bytes": size,
        "sha256": sha256,
        "schema_version": exports.SCHEMA_VERSION,
        "columns": columns,
        "filters": export.filters,
        "counts": counts,
        "left_out": dict(sorted(left_out.items())),
        "labelers": "usernames" if export.with_identities else "pseudonyms",
        "code_version": exports.code_version(),
        "created_by": export.created_by.username if export.created_by else None,
        "created_at": export.created_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        **summary,
    }
    with transaction.atomic():
        locked = Export.objects.select_for_update().get(pk=export.pk)
        if locked.state != Export.State.RUNNING:  # another build of the same export finished first
            partial.unlink(missing_ok=True)
            return locked
        name = f"exports/{export.filename}"
        final = Path(settings.MEDIA_ROOT) / name
        os.replace(partial, final)
        final.with_name(final.name + ".manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        Export.objects.filter(pk=export.pk).update(
            state=Export.State.SUCCEEDED, progress=1, row_count=counts["rows"], size_bytes=size, sha256=sha256,
            manifest=manifest, file=name, finished_at=finished_at, error="",
        )
    return Export.objects.get(pk=export.pk)
