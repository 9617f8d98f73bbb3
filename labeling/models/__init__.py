from .intake import ImportJob
from .people import Guidelines, LabelerProfile, Role, ScreeningAttempt, ScreeningItem
from .prompts import Completion, ModelVersion, Prompt, UseCase
from .results import CompletionRating, Demonstration, PromptAnnotation, Ranking
from .tasks import Assignment, Task
from .training import Export, TrainingRun

__all__ = [
    "Assignment",
    "Completion",
    "CompletionRating",
    "Demonstration",
    "Export",
    "Guidelines",
    "ImportJob",
    "LabelerProfile",
    "ModelVersion",
    "Prompt",
    "PromptAnnotation",
    "Ranking",
    "Role",
    "ScreeningAttempt",
    "ScreeningItem",
    "Task",
    "TrainingRun",
    "UseCase",
]
