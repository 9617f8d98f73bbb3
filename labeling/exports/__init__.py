"""Database rows to versioned dataset files: the only bridge from the site to `rlhf/`.

`write(kind, fmt, filters, path)` streams one export to a file and returns what the manifest
says about its content. Labelers appear as stable pseudonyms: a keyed hash of the user id that
reveals neither name nor e-mail and stays the same from one export to the next.
"""

import hashlib
import hmac
import subprocess
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model

from rlhf.data import sha256_of  # the checksum rlhf records of the files it trains on

from ..models import Export, ModelVersion
from .dialogues import Dialogues
from .filters import FILTERS, OVERLAP_MODES, STYLES, filters_parse
from .labelers import LabelerStats
from .sources import Annotations, Demonstrations, HumanEvaluations, PpoPrompts, PreferencePairs, Rankings
from .trees import OasstTrees
from .writers import WRITERS, is_flat

SCHEMA_VERSION = 1

__all__ = ["FILTERS", "OVERLAP_MODES", "SCHEMA_VERSION", "STYLES", "filters_parse", "model_versions", "sha256_of",
           "source_for", "write"]


def pseudonym(user_id):
    key = (settings.EXPORT_PSEUDONYM_KEY or settings.SECRET_KEY).encode()
    return "labeler-" + hmac.new(key, f"user:{user_id}".encode(), hashlib.sha256).hexdigest()[:12]


def names(with_identities):
    """user id -> what the export calls that person."""
    if not with_identities:
        return lru_cache(maxsize=None)(lambda user_id: None if user_id is None else pseudonym(user_id))
    usernames = dict(get_user_model().objects.values_list("pk", "username"))
    return usernames.get


SOURCES = {
    Export.Kind.PREFERENCE_PAIRS: PreferencePairs,
    Export.Kind.RANKINGS: Rankings,
    Export.Kind.SFT: Demonstrations,
    Export.Kind.PPO_PROMPTS: PpoPrompts,
    Export.Kind.ANNOTATIONS: Annotations,
    Export.Kind.OASST: OasstTrees,
    Export.Kind.DIALOGUES: Dialogues,
    Export.Kind.HUMAN_EVAL: HumanEvaluations,
    Export.Kind.LABELER_STATS: LabelerStats,
}


def source_for(kind, filters, *, with_identities=False, fmt="jsonl"):
    return SOURCES[kind](filters, names(with_identities), fmt=fmt, with_identities=with_identities)


def write(source, fmt, path, progress=None, every=5000):
    """Stream the source's rows into `path`; `progress(done, total)` is called now and then."""
    if fmt == "csv" and not is_flat(source.schema):
        raise ValueError("CSV holds flat rows only.")
    total = source.total()
    writer = WRITERS[fmt](path, source.schema)
    rows = 0
    try:
        for rows, row in enumerate(source.rows(), start=1):
            writer.write(row)
            if progress and rows % every == 0:
                progress(source.done, total)
    finally:
        writer.close()
    if progress:
        progress(total, total)
    return {"rows": rows, **source.counts}, [field.name for field in source.schema]


def model_versions(names):
    """What reproduces each model version whose outputs an export holds: its weights (full, or a LoRA adapter and the
    base it applies to), the version it was trained from, and its training run's options and data snapshots."""
    found = (ModelVersion.objects.filter(name__in=names).order_by("kind", "name")
             .select_related("parent", "training_run__base_model", "training_run__reference_model",
                             "training_run__reward_model"))
    name = lambda version: version and {"kind": version.kind, "name": version.name}  # noqa: E731
    described = []
    for version in found:
        run = version.training_run
        described.append({
            "name": version.name, "kind": version.kind, "served_name": version.served_name,
            "weights": "endpoint" if version.endpoint_url else "adapter" if version.base_path else "full",
            "artifact_path": version.artifact_path, "base_path": version.base_path, "adapter": version.adapter,
            "endpoint": ({"url": version.endpoint_url, "model": version.endpoint_model} if version.endpoint_url
                         else None),
            "trained_from": name(version.parent),
            "training_run": run and {
                "id": run.pk, "kind": run.kind, "options": run.config, "export": run.export_id,
                "valid_export": run.valid_export_id, "ptx_export": run.ptx_export_id, "ptx_path": run.ptx_path,
                "base_model": name(run.base_model), "reference_model": name(run.reference_model),
                "reward_model": name(run.reward_model),
            },
        })
    return described


@lru_cache(maxsize=1)
def code_version():
    """The git revision of the code that wrote an export, or the CODE_VERSION a deployment sets."""
    if settings.CODE_VERSION:
        return settings.CODE_VERSION
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return found.stdout.strip() if found.returncode == 0 else "unknown"
