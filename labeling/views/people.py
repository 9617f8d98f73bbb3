"""Pages about people: signing in and up, screening and its review, API tokens, the team's quality."""

from axes.helpers import get_client_username, get_cool_off
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Max
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from rest_framework.authtoken.models import Token

from .. import charts, selectors, services
from ..forms import AccountForm, DecisionForm, ScreeningForm, StatusForm
from ..models import LabelerProfile, Role, ScreeningAttempt
from ..permissions import role_required, roles_of


@login_required
def start(request):
    return redirect(selectors.start_url_for(request.user))


def sign_in_locked_out(request, original_response=None, credentials=None):
    """The sign-in page again, refusing this account from this address until the cool-off ends (django-axes)."""
    username = get_client_username(request, credentials) or ""
    last = AccessAttempt.objects.filter(username=username, ip_address=request.axes_ip_address).aggregate(
        last=Max("attempt_time"))["last"]
    context = {
        "form": AuthenticationForm(request, initial={"username": username}),
        "next": request.POST.get("next", ""),
        "locked_until": (last or timezone.now()) + get_cool_off(request),
        "locked_username": username,
    }
    return render(request, "registration/login.html", context, status=settings.AXES_HTTP_RESPONSE_CODE)


def client_address(request):
    """The address sign-in failures are counted against. Behind the HTTPS proxy the site trusts, that is the
    address the proxy appended last to X-Forwarded-For; otherwise it is the connection's own."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if settings.SECURE_PROXY_SSL_HEADER and forwarded.strip():
        return forwarded.split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR")


def join(request, token):
    """An invitation link: make an account with the role it grants."""
    try:
        invitation = services.invitation_check(token)
    except ValidationError as exc:
        return render(request, "labeling/join.html", {"refused": " ".join(exc.messages)}, status=400)
    return _account_page(request, token=token, role=invitation.get_role_display())


def apply(request):
    if not settings.OPEN_APPLICATIONS:
        raise Http404("Applications are by invitation only.")
    return _account_page(request, token=None, role="Labeler")


def _account_page(request, *, token, role):
    form = AccountForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.account_create(token=token, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)  # a dict of errors lands on its fields
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("start")
    return render(request, "labeling/join.html", {"form": form, "role": role}, status=400 if form.errors else 200)


@role_required(Role.LABELER)
def screening(request):
    profile = LabelerProfile.objects.get(user=request.user)
    if profile.status != LabelerProfile.Status.SCREENING:
        return redirect("labeler-home")
    form = ScreeningForm(services.screening_items(), request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.screening_submit(user=request.user, answers=form.answers())
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, "Thank you: your test is in. An admin reviews it, usually within a few days.")
            return redirect("labeler-home")
    return render(request, "labeling/screening.html", {"form": form, "parts": form.parts()},
                  status=400 if form.errors else 200)


@require_POST
@role_required(Role.LABELER)
def guidelines_acknowledge(request):
    try:
        services.guidelines_acknowledge(user=request.user, version=int(request.POST.get("version", 0)))
    except (ValidationError, ValueError) as exc:
        messages.error(request, " ".join(getattr(exc, "messages", [str(exc)])))
    return redirect("labeler-home")


@role_required(Role.ADMIN)
def review_queue(request):
    rows = [(attempt, services.cutoffs(attempt)) for attempt in selectors.review_queue()]
    return render(request, "labeling/review_queue.html", {"rows": rows})


@role_required(Role.ADMIN)
def review(request, pk):
    """One applicant, by number only: scores against the cutoffs, every answer beside the researchers', grading
    of the written replies, and the decision."""
    attempt = get_object_or_404(ScreeningAttempt.objects.select_related("decided_by"), pk=pk)
    decision_form = DecisionForm(request.POST if request.POST.get("action") == "decide" else None)
    if request.method == "POST":
        try:
            if request.POST.get("action") == "grade":
                grades = {key.removeprefix("grade_"): value for key, value in request.POST.items()
                          if key.startswith("grade_")}
                services.screening_grade(attempt=attempt, grades=grades, graded_by=request.user)
                messages.success(request, "Grades saved.")
                return redirect("review", pk=attempt.pk)
            if decision_form.is_valid():
                services.screening_decide(attempt=attempt, approve=decision_form.cleaned_data["decision"] == "approve",
                                          reason=decision_form.cleaned_data["reason"], decided_by=request.user)
                messages.success(request, f"Applicant #{attempt.pk}: {attempt.decision}.")
                return redirect("review-queue")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
    items = services.screening_items()
    answers = attempt.answers
    context = {
        "attempt": attempt, "cutoffs": services.cutoffs(attempt), "decision_form": decision_form,
        "flags": [(item, answers.get("flags", {}).get(str(item.pk), [])) for item in items["sensitive_flags"]],
        "rankings": [(item, _letters(answers.get("rankings", {}).get(str(item.pk), [])),
                      _letters(item.gold.get("groups", []))) for item in items["ranking"]],
        "demonstrations": [(item, answers.get("demonstrations", {}).get(str(item.pk), ""),
                            answers.get("grades", {}).get(str(item.pk))) for item in items["demonstration"]],
        "self_assessment": answers.get("self_assessment", {}),
    }
    return render(request, "labeling/review.html", context, status=400 if decision_form.errors else 200)


def _letters(groups):
    """[[0], [1, 2]] -> "A > B = C": a screening ranking as the applicant saw it."""
    return " > ".join(" = ".join(chr(ord("A") + i) for i in group) for group in groups) or "—"


@login_required
def api_token(request):
    """The user's API token: shown here, replaced on request. It reaches only the endpoints of the user's role."""
    if not roles_of(request.user):
        raise PermissionDenied("API tokens are for labelers, researchers and admins.")
    if request.method == "POST":
        services.token_rotate(user=request.user)
        messages.success(request, "Here is your new token; the old one no longer works.")
        return redirect("api-token")
    token = Token.objects.filter(user=request.user).first()
    return render(request, "labeling/api_token.html", {"token": token})


@login_required
def no_role(request):
    return render(request, "labeling/no_role.html", status=403)


@role_required(Role.ADMIN)
def team_quality(request):
    report = selectors.quality_report()
    rows = report["labelers"]
    names = [row["user"].username for row in rows]
    context = {
        "report": report, "rows": rows,
        "chart_agreement": charts.stacked_bars("Agreement with peers", names,
                                               {"Agreement with peers": [row["agreement"] for row in rows]},
                                               domain=(0, 1), percent=True, y_label="Pairs ordered alike"),
        "chart_gold": charts.stacked_bars("Gold accuracy", names,
                                          {"Gold accuracy": [row["gold_accuracy"] for row in rows]},
                                          domain=(0, 1), percent=True, y_label="Gold tasks answered right"),
        "floors": {"gold": settings.QUALITY_MIN_GOLD_ACCURACY, "agreement": settings.QUALITY_MIN_AGREEMENT},
        "invitations": [(invitation, request.build_absolute_uri(invitation.get_absolute_url()))
                        for invitation in selectors.invitations_open()],
    }
    return render(request, "labeling/team_quality.html", context)


@role_required(Role.ADMIN)
def labeler_quality(request, pk):
    profile = get_object_or_404(LabelerProfile.objects.select_related("user"), user_id=pk)
    form = StatusForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.labeler_set_status(profile=profile, status=form.cleaned_data["status"],
                                        reason=form.cleaned_data["reason"], changed_by=request.user)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"{profile.user.username} is now {form.cleaned_data['status']}.")
            return redirect("labeler-quality", pk=pk)
    report = selectors.quality_report(labeler=profile.user)
    row = next(iter(report["labelers"]), None)
    agreement = dict(report["weekly"].get(profile.user_id, []))
    gold = row["gold_weekly"] if row else {}
    weeks = sorted(agreement.keys() | gold.keys())
    weekly = [(week, agreement.get(week), gold.get(week)) for week in weeks]
    throughput = selectors.throughput_by_day(30, labeler=profile.user)
    context = {
        "profile": profile, "row": row, "form": form, "weekly": weekly,
        "history": profile.status_changes.select_related("changed_by"),
        "chart_weekly": charts.line_chart(
            "Agreement with peers and gold accuracy by week", [week.strftime("%d %b") for week in weeks],
            {"Agreement with peers": [a for _, a, _ in weekly], "Gold accuracy": [g for _, _, g in weekly]},
            domain=(0, 1), percent=True,
        ),
        "chart_throughput": charts.stacked_bars("Results submitted per day",
                                                [d.strftime("%d %b") for d in throughput["dates"]],
                                                throughput["series"], y_label="Results per day"),
        "throughput": throughput,
    }
    return render(request, "labeling/labeler_quality.html", context, status=400 if form.errors else 200)
