from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from labeling import intake, services
from labeling.models import Guidelines, LabelerProfile, Prompt, Role, ScreeningItem, Task

DEMO_PROMPTS = Path(__file__).resolve().parents[2] / "fixtures" / "demo_prompts.jsonl"
DEMO_SCREENING = DEMO_PROMPTS.with_name("demo_screening.jsonl")
DEMO_GUIDELINES = DEMO_PROMPTS.with_name("demo_guidelines.md")
GUIDELINES_TITLE = "Helpful, truthful and harmless"

# Demo logins: printed on every run, and refused outside DEBUG unless --force is given.
ACCOUNTS = [
    ("admin", "admin-demo", Role.ADMIN),
    ("researcher", "researcher-demo", Role.RESEARCHER),
    ("labeler1", "labeler-demo", Role.LABELER),
    ("labeler2", "labeler-demo", Role.LABELER),
    ("labeler3", "labeler-demo", Role.LABELER),
]
WRITING_HINTS = [
    "A plain prompt: any task you would ask an assistant for help with at work.",
    "A few-shot prompt: an instruction followed by three examples of it being done.",
    "A user-based prompt for brainstorming: ideas for a small business.",
]
LABELER_LANGUAGES = {"labeler1": ["en"], "labeler2": ["en", "es"], "labeler3": ["en", "fr", "de"]}


class Command(BaseCommand):
    help = "Create demo accounts (one admin, one researcher, three labelers) and load the demo prompts."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Run even with DEBUG off (known passwords!).")
        parser.add_argument("--site-url", default="http://127.0.0.1:8000",
                            help="Where the site is served, for the invitation link printed (default: make run's).")

    def handle(self, *args, force, site_url, **options):
        if not settings.DEBUG and not force:
            raise CommandError("seed_demo creates accounts with known passwords; run it with DEBUG=1 or --force.")
        with transaction.atomic():
            self._accounts()
            report = self._prompts()
            self._prompt_writing_tasks()
            self._chat_tasks()
            self._screening_items()
            self._guidelines()
            invitation = services.invitation_create(note="demo applicant")
            services.sampling_queue()  # the first ranking tasks, as soon as the workers start, not at beat's first tick
        self.stdout.write(
            f"Demo prompts: {report.accepted} loaded, {report.duplicates} already there, {report.rejected} rejected."
        )
        self.stdout.write("Demo logins (username / password):")
        for username, password, role in ACCOUNTS:
            self.stdout.write(f"  {role.label:<11} {username} / {password}")
        link = site_url.rstrip("/") + invitation.get_absolute_url()
        self.stdout.write(f"Try the way in for a new labeler: {link} (single use)")

    def _accounts(self):
        User = get_user_model()
        for username, password, role in ACCOUNTS:
            user, created = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.com"})
            if created:
                user.set_password(password)
                user.save()
            services.user_set_role(user=user, role=role)
            if role == Role.LABELER:
                LabelerProfile.objects.filter(user=user).update(
                    status=LabelerProfile.Status.ACTIVE, languages=LABELER_LANGUAGES[username]
                )

    def _prompt_writing_tasks(self):
        """Labelers also write prompts, as InstructGPT's did; open one task per style once."""
        if not Task.objects.filter(kind=Task.Kind.WRITE_PROMPT).exists():
            Task.objects.bulk_create(Task(kind=Task.Kind.WRITE_PROMPT, params={"hint": hint}) for hint in WRITING_HINTS)

    def _chat_tasks(self):
        """Chats with the model, ahead of the other work, so that the demo shows them early."""
        if not Task.objects.filter(kind=Task.Kind.CHAT).exists():
            services.chat_task_create(conversations=6, priority=1,
                                      system_prompt="You are a helpful, honest and harmless assistant.")

    def _prompts(self):
        with DEMO_PROMPTS.open("rb") as handle:
            return services.prompts_ingest(
                rows=intake.read_rows(handle, "jsonl"), default_source=Prompt.Source.CUSTOMER
            )

    def _screening_items(self):
        """A small screening test, so that the way in for new labelers can be tried."""
        if not ScreeningItem.objects.exists():
            with DEMO_SCREENING.open(encoding="utf-8") as lines:
                services.screening_items_import(lines=lines)

    def _guidelines(self):
        """Guidelines published once; the demo labelers have read them, so that they can work at once, while a
        newly invited labeler reads and acknowledges them during onboarding."""
        guidelines = Guidelines.objects.filter(title=GUIDELINES_TITLE).first() or services.guidelines_publish(
            title=GUIDELINES_TITLE, body=DEMO_GUIDELINES.read_text(encoding="utf-8"))
        if guidelines != Guidelines.objects.first():
            return  # newer guidelines were published since: the demo labelers read those like anyone else
        labelers = [username for username, _, role in ACCOUNTS if role == Role.LABELER]
        unread = LabelerProfile.objects.filter(user__username__in=labelers, guidelines_acknowledged=None)
        for profile in unread.select_related("user"):
            services.guidelines_acknowledge(user=profile.user, version=guidelines.version)
