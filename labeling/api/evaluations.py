"""Human evaluations over the API, for researchers: start one, read its results, read the leaderboard."""

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from .. import evaluations, services
from ..models import Evaluation, ModelVersion
from ..permissions import IsResearcher
from .serializers import ModelVersionSerializer


class EstimateSerializer(serializers.Serializer):
    value = serializers.FloatField(allow_null=True)
    low = serializers.FloatField(allow_null=True, help_text="The 95% bootstrap interval over prompts.")
    high = serializers.FloatField(allow_null=True)
    n = serializers.IntegerField(help_text="Judgments (or ratings) behind it.")
    prompts = serializers.IntegerField()


class RewardModelViewSerializer(EstimateSerializer):
    agreement = serializers.FloatField(
        allow_null=True, help_text="How often the reward model prefers the output labelers preferred (ties left out).")
    pairs = serializers.IntegerField(help_text="Judgments without a tie behind the agreement.")


class WinRateSerializer(EstimateSerializer):
    baseline = serializers.CharField()
    baseline_kind = serializers.CharField()
    reward_model = RewardModelViewSerializer(
        help_text="The reward model's win rate for the candidate on the same outputs, one per prompt judged.")


class UseCaseWinRateSerializer(EstimateSerializer):
    use_case = serializers.CharField()
    baseline = serializers.CharField()


class ModelNumbersSerializer(serializers.Serializer):
    version = serializers.CharField()
    kind = serializers.CharField()
    candidate = serializers.BooleanField()
    rating = EstimateSerializer(help_text="The mean 1-7 rating.")
    ratings = serializers.IntegerField()
    flag_rates = serializers.DictField(child=serializers.FloatField(allow_null=True),
                                       help_text="The share of its outputs with each InstructGPT flag set.")


class AgreementSerializer(serializers.Serializer):
    value = serializers.FloatField(allow_null=True, help_text="Mean pairwise agreement on outputs judged twice.")
    tasks = serializers.IntegerField()


class ResultsSerializer(serializers.Serializer):
    judgments = serializers.IntegerField()
    prompts_judged = serializers.IntegerField()
    tasks = serializers.IntegerField()
    tasks_open = serializers.IntegerField()
    win_rates = WinRateSerializer(many=True, help_text="The candidate's, against each baseline; a tie counts half.")
    reward_model = serializers.CharField(allow_null=True, help_text="The reward model that scored the outputs.")
    by_use_case = UseCaseWinRateSerializer(many=True)
    models = ModelNumbersSerializer(many=True)
    agreement = AgreementSerializer()
    stale = serializers.BooleanField(help_text="Always false here: the API computes what is new before it answers.")


class EvaluationSerializer(serializers.ModelSerializer):
    candidate = serializers.CharField(source="candidate.name")
    baselines = serializers.SerializerMethodField()
    prompts = serializers.SerializerMethodField()

    class Meta:
        model = Evaluation
        fields = ["id", "candidate", "baselines", "prompts", "held_out_labelers", "state", "sampling_params",
                  "trigger", "error", "created_at", "opened_at"]

    def get_baselines(self, evaluation) -> list[str]:
        return [baseline.name for baseline in evaluation.baselines.all()]

    def get_prompts(self, evaluation) -> int:
        """How many test-split prompts it samples."""
        return len(evaluation.prompt_ids)


class EvaluationDetailSerializer(EvaluationSerializer):
    results = serializers.SerializerMethodField()

    class Meta(EvaluationSerializer.Meta):
        fields = [*EvaluationSerializer.Meta.fields, "results"]

    @extend_schema_field(ResultsSerializer)
    def get_results(self, evaluation):
        return ResultsSerializer(evaluations.evaluation_results(evaluation)).data


class EvaluationCreateSerializer(serializers.Serializer):
    candidate = serializers.PrimaryKeyRelatedField(queryset=ModelVersion.objects.all(),
                                                   help_text="The policy or SFT version to judge.")
    baselines = serializers.PrimaryKeyRelatedField(queryset=ModelVersion.objects.all(), many=True,
                                                   help_text="The versions to judge it against.")
    prompts = serializers.IntegerField(help_text="How many test-split prompts (each gets one sample per model).")
    held_out_labelers = serializers.BooleanField(
        required=False, default=False, help_text="Only labelers with no data the candidate may have learnt from.")


class ExternalModelSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="Its name here, e.g. gpt-4o-mini; evaluations name it as a baseline.")
    url = serializers.CharField(help_text="The OpenAI-compatible base URL, e.g. https://api.example.com/v1.")
    model = serializers.CharField(help_text="The model name the endpoint serves.")
    api_key_env = serializers.CharField(required=False, default="", allow_blank=True,
                                        help_text="The workers' environment variable that holds its API key.")


class LeaderboardEntrySerializer(serializers.Serializer):
    version = serializers.CharField()
    version_id = serializers.IntegerField()
    strength = serializers.FloatField(help_text="Bradley-Terry log-strength; the board's mean is 0.")
    low = serializers.FloatField()
    high = serializers.FloatField()
    comparisons = serializers.IntegerField()


class LeaderboardSerializer(serializers.Serializer):
    versions = LeaderboardEntrySerializer(many=True)
    judgments = serializers.IntegerField(help_text="The judgments the board was fitted on.")
    computed_at = serializers.DateTimeField()
    stale = serializers.BooleanField()


class EvaluationViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Human evaluations, newest first; one with its results. Start one (202: a GPU worker samples the outputs,
    then its tasks open to labelers)."""

    permission_classes = [IsResearcher]
    queryset = Evaluation.objects.select_related("candidate").prefetch_related("baselines")

    def get_serializer_class(self):
        return EvaluationDetailSerializer if self.action == "retrieve" else EvaluationSerializer

    @extend_schema(request=EvaluationCreateSerializer, responses={202: EvaluationSerializer})
    def create(self, request):
        body = EvaluationCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        evaluation = services.evaluation_start(
            candidate=body.validated_data["candidate"], baselines=body.validated_data["baselines"],
            prompt_count=body.validated_data["prompts"], held_out_labelers=body.validated_data["held_out_labelers"],
            created_by=request.user, trigger=f"{request.user.username}, through the API")
        return Response(EvaluationSerializer(evaluation).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses=LeaderboardSerializer)
    @action(detail=False, pagination_class=None)
    def leaderboard(self, request):
        """Every version judged so far, strongest first, with 95% bootstrap intervals over prompts."""
        return Response(LeaderboardSerializer(evaluations.leaderboard()).data)

    @extend_schema(request=None, responses=EvaluationSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Stop it: open tasks leave the queue; the judgments so far are kept."""
        evaluation = services.evaluation_cancel(evaluation=self.get_object())
        return Response(EvaluationSerializer(evaluation).data)

    @extend_schema(request=ExternalModelSerializer, responses={201: ModelVersionSerializer})
    @action(detail=False, methods=["post"])
    def endpoints(self, request):
        """Register a model served elsewhere behind an OpenAI-compatible endpoint, to evaluate against."""
        body = ExternalModelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        version = services.external_model_register(**body.validated_data, created_by=request.user)
        return Response(ModelVersionSerializer(version).data, status=status.HTTP_201_CREATED)
