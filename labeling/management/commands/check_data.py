import sys
from collections import Counter

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from labeling import answers
from labeling.exports.sources import BATCH, batched, rankings_breaking_rules
from labeling.models import Demonstration, Prompt, PromptAnnotation, Ranking, UseCase


class Command(BaseCommand):
    help = (
        "Report stored rows that break today's rules for answers (labeling/answers.py): demonstrations, "
        "rankings and their ratings' notes, prompts, annotations. For each kind: how many, by rule, and the first "
        "ids with the reason. Exits with status 1 when any row breaks a rule, so a deployment or a cron job can "
        "notice; exports leave such rows out and count them in their manifest."
    )

    KINDS = ["demonstrations", "rankings", "prompts", "annotations"]

    def add_arguments(self, parser):
        parser.add_argument("--kind", action="append", choices=self.KINDS,
                            help="Check only this kind; repeat for more. Default: every kind.")
        parser.add_argument("--show", type=int, default=10, metavar="N",
                            help="Show the first N rows of each kind that break a rule (default 10).")

    def handle(self, *args, kind, show, **options):
        limits = answers.Limits.from_settings()
        broken = 0
        for name in kind or self.KINDS:
            queryset, check = getattr(self, name)(limits)
            total = queryset.count()
            rules, shown = Counter(), []
            # The bar draws on a terminal only, so logs of scheduled runs stay clean.
            with tqdm(total=total, desc=name, unit=" rows", file=sys.stderr, disable=None, leave=False) as bar:
                for pk, problems in check(queryset, bar):
                    rules[problems[0].rule] += 1
                    if len(shown) < show:
                        more = f" ({len(problems) - 3} more)" if len(problems) > 3 else ""
                        shown.append(f"  #{pk}: {' '.join(problem.message for problem in problems[:3])}{more}")
            found = sum(rules.values())
            broken += found
            by_rule = f" ({', '.join(f'{rule} {n:,}' for rule, n in rules.most_common())})" if found else ""
            self.stdout.write(f"{name}: {found:,} of {total:,} break the rules{by_rule}")
            for line in shown:
                self.stdout.write(line)
        if broken:
            raise CommandError(f"{broken:,} stored rows break today's rules; exports leave them out. Fix or delete "
                               "them, or change the limits in the settings.")

    # Each kind: the rows to read, and a generator of (id, problems) for those that break a rule.

    def demonstrations(self, limits):
        def check(queryset, bar):
            rows = queryset.order_by("id").values_list("id", "messages", "assignment__task__params")
            for pk, messages, params in rows.iterator(chunk_size=BATCH):
                bar.update()
                if problems := answers.demonstration_problems(messages, limits=limits, params=params):
                    yield pk, problems

        return Demonstration.objects.all(), check

    def rankings(self, limits):
        def check(queryset, bar):
            rows = queryset.order_by("id").values_list("id", "task_id", "groups").iterator(chunk_size=BATCH)
            for batch in batched(rows, BATCH):
                bad = rankings_breaking_rules(batch, limits)
                bar.update(len(batch))
                for pk, _, _ in batch:
                    if pk in bad:
                        yield pk, bad[pk]

        return Ranking.objects.all(), check

    def prompts(self, limits):
        def check(queryset, bar):
            for pk, text, turns in queryset.order_by("id").values_list("id", "text", "turns").iterator(
                chunk_size=BATCH
            ):
                bar.update()
                if problems := answers.prompt_problems(text, turns, limits=limits):
                    yield pk, problems

        return Prompt.objects.all(), check

    def annotations(self, limits):
        def check(queryset, bar):
            rows = queryset.order_by("id").values_list("id", "use_case", "language")
            for pk, use_case, language in rows.iterator(chunk_size=BATCH):
                bar.update()
                if problems := answers.annotation_problems(use_case, language, use_cases=UseCase.values,
                                                           limits=limits):
                    yield pk, problems

        return PromptAnnotation.objects.all(), check
