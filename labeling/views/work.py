"""The labeler's pages: home, the task pages, skipping, and their own work."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from .. import selectors, services
from ..api.chat import ConversationSerializer
from ..forms import AnnotationForm, DemonstrationForm, RankingForm, SkipForm, WritePromptForm
from ..models import Assignment, Role, Task
from ..permissions import role_required


@role_required(Role.LABELER)
def labeler_home(request):
    return render(request, "labeling/labeler_home.html", selectors.labeler_overview(request.user))


@require_POST
@role_required(Role.LABELER)
def work_next(request):
    return _to_next_task(request)


def _to_next_task(request, done=""):
    """Lease the next task and open it. `done` says what just happened to the last one ("Saved."): it opens the
    one message the labeler reads next, so that it never sits beside a message that says the opposite."""
    try:
        assignment = services.task_lease_next(labeler=request.user)
    except ValidationError as exc:
        if done:
            messages.success(request, done)
        messages.error(request, " ".join(exc.messages))
        return redirect("labeler-home")
    if assignment is None:
        tell = messages.success if done else messages.info
        tell(request, f"{done} Nothing is waiting for you right now. Check back soon.".lstrip())
        return redirect("labeler-home")
    if done:
        messages.success(request, f"{done} Here is your next task.")
    return redirect("assignment", pk=assignment.pk)


# The form class, the service that saves it and the arguments it takes, per task kind.
TASK_PAGES = {
    Task.Kind.WRITE_PROMPT: (
        WritePromptForm, services.prompt_write,
        lambda form: {key: form.cleaned_data[key] for key in ("style", "text", "use_case", "language")},
    ),
    Task.Kind.WRITE_DEMONSTRATION: (
        DemonstrationForm, services.demonstration_write,
        lambda form: {"turns": form.turns(), "used_model_suggestion": form.cleaned_data["used_suggestion"],
                      "suggestions_used": form.suggestions()},
    ),
    Task.Kind.RANK_COMPLETIONS: (
        RankingForm, services.ranking_submit,
        lambda form: {"groups": form.groups(), "ratings": form.ratings(),
                      "none_acceptable": form.cleaned_data["none_acceptable"]},
    ),
    Task.Kind.ANNOTATE_PROMPT: (
        AnnotationForm, services.annotation_submit,
        lambda form: {"flags": form.flags(), "use_case": form.cleaned_data["use_case"],
                      "language": form.cleaned_data["language"],
                      "contains_personal_data": form.cleaned_data["contains_personal_data"]},
    ),
}


@role_required(Role.LABELER)
def assignment(request, pk):
    assignment = selectors.assignment_of(request.user, pk)
    if assignment.state in (Assignment.State.SUBMITTED, Assignment.State.SKIPPED) and request.method == "GET":
        return redirect("my-work-detail", pk=assignment.pk)
    if assignment.task.kind == Task.Kind.CHAT:
        return _chat(request, assignment)
    form_class, submit, arguments = TASK_PAGES[assignment.task.kind]
    form = form_class(request.POST or None, **_form_options(assignment))
    if request.method == "POST" and form.is_valid():
        try:
            submit(assignment=assignment, labeler=request.user,
                   time_spent_seconds=form.cleaned_data["time_spent"], **arguments(form))
        except ValidationError as exc:
            form.add_answer_error(exc)
        else:
            if assignment.task.is_practice:  # feedback at once: the researchers' answer and why
                return redirect("my-work-detail", pk=assignment.pk)
            return _to_next_task(request, done="Saved.")
    context = {
        "assignment": assignment,
        "task": assignment.task,
        "form": form,
        "skip_form": SkipForm(),
        **selectors.workspace_panel(request.user),
    }
    if assignment.task.kind == Task.Kind.WRITE_DEMONSTRATION:
        context["suggestion"] = selectors.model_suggestion(assignment.task.prompt)
    status = 400 if form.errors else 200
    return render(request, f"labeling/work/{assignment.task.kind}.html", context, status=status)


def _chat(request, assignment):
    """The chat page: the conversation so far, then turns and replies through the chat API."""
    try:
        conversation = services.chat_start(assignment=assignment, labeler=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("labeler-home")
    chat = {
        "conversation": ConversationSerializer(conversation).data,
        "urls": {
            "detail": reverse("api-chat", args=[conversation.pk]),
            "send": reverse("api-chat-send", args=[conversation.pk]),
            "end": reverse("api-chat-end", args=[conversation.pk]),
            "message": reverse("api-chat-message", args=[0]),
        },
    }
    return render(request, "labeling/work/chat.html", {
        "assignment": assignment, "task": assignment.task, "conversation": conversation, "chat": chat,
        "skip_form": SkipForm(), **selectors.workspace_panel(request.user),
    })


def _form_options(assignment):
    task = assignment.task
    if task.kind == Task.Kind.RANK_COMPLETIONS:
        return {"completions": selectors.completions_in_order(assignment)}
    if task.kind == Task.Kind.ANNOTATE_PROMPT:
        return {"initial": {"language": task.prompt.language}}
    return {}


@require_POST
@role_required(Role.LABELER)
def assignment_skip(request, pk):
    assignment = selectors.assignment_of(request.user, pk)
    form = SkipForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose why you skip this task.")
        return redirect("assignment", pk=assignment.pk)
    try:
        services.assignment_skip(assignment=assignment, labeler=request.user, reason=form.cleaned_data["reason"])
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("my-work-detail", pk=assignment.pk)
    return _to_next_task(request, done="Skipped; the task goes back to others.")


@role_required(Role.LABELER)
def my_work(request):
    return render(request, "labeling/work/my_work.html", {"assignments": selectors.work_of(request.user)[:200]})


@role_required(Role.LABELER)
def my_work_detail(request, pk):
    assignment = selectors.assignment_of(request.user, pk)
    return render(request, "labeling/work/my_work_detail.html", {
        "assignment": assignment, "task": assignment.task, **selectors.result_of(assignment),
        "feedback": selectors.practice_feedback(assignment),
    })
