"""Writes. Every function here is keyword-only, atomic, and raises ValidationError
with a message a person can act on."""

from .people import user_set_role
from .prompts import (
    IntakeReport,
    import_job_create,
    import_job_run,
    import_job_start,
    prompts_create,
    prompts_ingest,
)
from .work import assignments_expire, ranking_save

__all__ = [
    "IntakeReport",
    "assignments_expire",
    "import_job_create",
    "import_job_run",
    "import_job_start",
    "prompts_create",
    "prompts_ingest",
    "ranking_save",
    "user_set_role",
]
