from .chat import ChatMessage, Conversation, TurnSuggestion
from .intake import ImportJob
from .people import Guidelines, Invitation, LabelerProfile, Role, ScreeningAttempt, ScreeningItem, StatusChange
from .prompts import Completion, ModelVersion, Prompt, UseCase
from .results import CompletionRating, Demonstration, PromptAnnotation, Ranking
from .tasks import Assignment, Task
from .training import Evaluation, Export, TrainingRun

__all__ = [
    "Assignment",
    "ChatMessage",
    "Completion",
    "CompletionRating",
    "Conversation",
    "Evaluation",
    "Demonstration",
    "Export",
    "Guidelines",
    "ImportJob",
    "Invitation",
    "LabelerProfile",
    "ModelVersion",
    "Prompt",
    "PromptAnnotation",
    "Ranking",
    "Role",
    "ScreeningAttempt",
    "ScreeningItem",
    "StatusChange",
    "Task",
    "TrainingRun",
    "TurnSuggestion",
    "UseCase",
]
