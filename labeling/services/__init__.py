"""Writes. Every function here is keyword-only, atomic, and raises ValidationError
with a message a person can act on."""

from .exports import export_create, export_run
from .people import token_rotate, user_set_role
from .prompts import (
    IntakeReport,
    import_job_create,
    import_job_run,
    import_job_start,
    prompts_create,
    prompts_ingest,
    required_annotations,
)
from .work import (
    annotation_submit,
    assignment_skip,
    assignments_expire,
    demonstration_write,
    prompt_write,
    ranking_save,
    ranking_submit,
    task_lease_next,
)

__all__ = [
    "IntakeReport",
    "annotation_submit",
    "assignment_skip",
    "assignments_expire",
    "demonstration_write",
    "export_create",
    "export_run",
    "import_job_create",
    "import_job_run",
    "import_job_start",
    "prompt_write",
    "prompts_create",
    "prompts_ingest",
    "ranking_save",
    "ranking_submit",
    "required_annotations",
    "task_lease_next",
    "token_rotate",
    "user_set_role",
]
