from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from labeling import services


class Command(BaseCommand):
    help = ("Open a chat task: labelers chat with the active policy, one conversation each, and each ended chat "
            "sends one of the model's replies to be ranked against alternatives.")

    def add_arguments(self, parser):
        parser.add_argument("--conversations", type=int, default=1, help="How many labelers chat under it (1-1000).")
        parser.add_argument("--system-prompt", default="", help="What the model reads before each conversation.")
        parser.add_argument("--language", default="en")
        parser.add_argument("--priority", type=int, default=0, help="Higher comes first in the queue.")

    def handle(self, *args, conversations, system_prompt, language, priority, **options):
        try:
            task = services.chat_task_create(conversations=conversations, system_prompt=system_prompt,
                                             language=language, priority=priority)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(f"Opened chat task #{task.pk} for {conversations} conversation(s).")
