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
from .sampling import completions_sample, model_version_activate, model_version_active, prompts_needing_completions
from .training import (
    SAMPLING_QUEUED,
    sampling_queue,
    training_check_due,
    training_run_cancel,
    training_run_execute,
    training_run_start,
    training_runs_reap,
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
    "SAMPLING_QUEUED",
    "IntakeReport",
    "completions_sample",
    "model_version_activate",
    "model_version_active",
    "prompts_needing_completions",
    "sampling_queue",
    "training_check_due",
    "training_run_cancel",
    "training_run_execute",
    "training_run_start",
    "training_runs_reap",
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
