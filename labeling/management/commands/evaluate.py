from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from labeling import evaluations, services
from labeling.models import Evaluation, ModelVersion


class Command(BaseCommand):
    help = ("Start a human evaluation of a model version against baselines on test-split prompts (a GPU worker "
            "samples the outputs, then labelers judge them), show one's results (--show ID), or the leaderboard.")

    def add_arguments(self, parser):
        parser.add_argument("candidate", nargs="?", help="The policy or SFT version's name, e.g. ppo-3.")
        parser.add_argument("--against", action="append", default=[], metavar="NAME",
                            help="A baseline version's name (policy first, then SFT); repeat for more.")
        parser.add_argument("--prompts", type=int, default=100, help="Test-split prompts to sample (default 100).")
        parser.add_argument("--held-out-labelers", action="store_true",
                            help="Only labelers with no data the candidate may have learnt from judge it.")
        parser.add_argument("--register-endpoint", nargs=3, metavar=("NAME", "URL", "MODEL"),
                            help="Register a model served elsewhere behind an OpenAI-compatible endpoint as a baseline "
                                 "(evaluate it with --against NAME).")
        parser.add_argument("--api-key-env", default="", metavar="VARIABLE",
                            help="With --register-endpoint: the workers' environment variable holding its API key.")
        parser.add_argument("--show", type=int, metavar="ID", help="Print this evaluation's results.")
        parser.add_argument("--leaderboard", action="store_true", help="Print every judged version's strength.")

    def handle(self, *args, candidate, against, prompts, held_out_labelers, show, leaderboard, register_endpoint,
               api_key_env, **options):
        if register_endpoint:
            name, url, model = register_endpoint
            try:
                version = services.external_model_register(name=name, url=url, model=model, api_key_env=api_key_env)
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
            self.stdout.write(f"Registered {version.name}: {model} at {version.endpoint_url}; evaluate against it "
                              f"with --against {version.name}.")
            return
        if leaderboard:
            for entry in evaluations.leaderboard()["versions"]:
                self.stdout.write(f"{entry['version']:<24} {entry['strength']:+.2f} [{entry['low']:+.2f}, "
                                  f"{entry['high']:+.2f}] {entry['comparisons']} comparisons")
            return
        if show:
            return self._show(show)
        if not candidate or not against:
            raise CommandError("Name the candidate and at least one baseline: evaluate ppo-3 --against base.")
        try:
            evaluation = services.evaluation_start(
                candidate=_version(candidate), baselines=[_version(name) for name in against], prompt_count=prompts,
                held_out_labelers=held_out_labelers, trigger="manage.py evaluate")
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(f"Evaluation #{evaluation.pk}: {len(evaluation.prompt_ids)} prompts queued for sampling; "
                          f"see its results with --show {evaluation.pk}.")

    def _show(self, pk):
        evaluation = Evaluation.objects.filter(pk=pk).first()
        if evaluation is None:
            raise CommandError(f"There is no evaluation #{pk}.")
        results = evaluations.evaluation_results(evaluation)
        self.stdout.write(f"Evaluation #{pk} of {evaluation.candidate.name}: {evaluation.get_state_display()}, "
                          f"{results['judgments']} judgments on {results['prompts_judged']} prompts.")
        for win in results["win_rates"]:
            value = "no judgments yet" if win["value"] is None else (
                f"{win['value']:.0%} [{win['low']:.0%}, {win['high']:.0%}]")
            self.stdout.write(f"  against {win['baseline']}: wins {value}")
            machine = win["reward_model"]
            if machine["value"] is not None:
                self.stdout.write(f"    the reward model {results['reward_model']} on the same outputs: "
                                  f"{machine['value']:.0%} [{machine['low']:.0%}, {machine['high']:.0%}]")


def _version(name):
    """A policy, SFT or external version by name, in that order."""
    for kind in (ModelVersion.Kind.POLICY, ModelVersion.Kind.SFT, ModelVersion.Kind.EXTERNAL):
        version = ModelVersion.objects.filter(kind=kind, name=name).first()
        if version:
            return version
    raise CommandError(f"There is no policy, SFT or external version named {name!r}.")
