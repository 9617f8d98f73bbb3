"""The site's pages: labelers' work, researchers' tools, and people (joining, screening, the team)."""

from .evaluations import evaluation, evaluation_cancel, evaluation_list, evaluation_progress, leaderboard, model_version
from .people import (
    api_token,
    apply,
    guidelines_acknowledge,
    join,
    labeler_quality,
    no_role,
    review,
    review_queue,
    screening,
    start,
    team_quality,
)
from .research import (
    export_detail,
    export_download,
    export_file_response,
    export_progress,
    exports,
    import_detail,
    import_progress,
    imports,
    model_versions,
    research_home,
    training_run,
    training_run_cancel,
    training_run_progress,
    training_runs,
)
from .work import (
    assignment,
    assignment_skip,
    labeler_home,
    my_work,
    my_work_detail,
    work_next,
)

__all__ = [
    "api_token", "apply", "assignment", "assignment_skip", "evaluation", "evaluation_cancel", "evaluation_list",
    "evaluation_progress", "export_detail", "export_download", "export_file_response",
    "export_progress", "exports", "guidelines_acknowledge", "import_detail", "import_progress", "imports", "join",
    "labeler_home", "labeler_quality", "leaderboard", "model_version", "model_versions", "my_work", "my_work_detail",
    "no_role", "research_home",
    "review", "review_queue", "screening", "start", "team_quality", "training_run", "training_run_cancel",
    "training_run_progress", "training_runs", "work_next",
]
