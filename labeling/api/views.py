from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, mixins, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle

from .. import selectors, services
from ..models import ModelVersion, Prompt
from ..permissions import IsResearcher
from ..views.research import EXPORT_MEDIA_TYPES, export_file_response
from .parsers import StrictFormParser, StrictJSONParser, StrictMultiPartParser
from .serializers import (
    ExportCreateSerializer,
    ExportSerializer,
    ImportJobSerializer,
    ImportUploadSerializer,
    IntakeReportSerializer,
    ModelVersionSerializer,
    PromptBulkEnvelope,
    PromptBulkSerializer,
    PromptFilterSerializer,
    PromptSerializer,
    SamplerSerializer,
    StatisticsSerializer,
    TrainingRunCreateSerializer,
    TrainingRunSerializer,
)


@extend_schema_view(get=extend_schema(parameters=[PromptFilterSerializer]))
class PromptListCreate(generics.ListAPIView):
    """List prompts, or create many at once through the intake rules (dedup, cap, split, PII)."""

    permission_classes = [IsResearcher]
    serializer_class = PromptSerializer
    parser_classes = [StrictJSONParser]

    def get_queryset(self):
        filters = PromptFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return Prompt.objects.filter(**filters.validated_data)

    @extend_schema(request=PromptBulkSerializer, responses={201: IntakeReportSerializer, 400: IntakeReportSerializer})
    def post(self, request):
        # Only the envelope is checked here; the intake rules judge each row and report by position.
        body = PromptBulkEnvelope(data=request.data)
        body.is_valid(raise_exception=True)
        rows = ((index, row, 0) for index, row in enumerate(body.validated_data["prompts"], start=1))
        report = services.prompts_create(rows=rows, created_by=request.user)
        code = status.HTTP_201_CREATED if report.accepted else status.HTTP_400_BAD_REQUEST
        return Response(IntakeReportSerializer(report).data, status=code)


class ImportJobViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Upload a prompt file; small files import at once (201), large ones in a worker (202)."""

    permission_classes = [IsResearcher]
    serializer_class = ImportJobSerializer
    parser_classes = [StrictMultiPartParser, StrictFormParser]

    def get_queryset(self):
        return selectors.import_jobs_visible_to(self.request.user)

    @extend_schema(request=ImportUploadSerializer, responses={
        201: OpenApiResponse(ImportJobSerializer, description="Imported: at least one row was stored."),
        202: OpenApiResponse(ImportJobSerializer, description="Queued for a worker; follow the job."),
        400: OpenApiResponse(ImportJobSerializer, description=(
            "Nothing was imported: the file was refused, or every row was turned away. The job is kept, failed, "
            "with the reason in `error` and `detail` and the rows' reasons in `row_errors`."
        )),
    })
    def create(self, request):
        upload = ImportUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        job = services.import_job_create(
            uploaded_file=upload.validated_data["file"],
            created_by=request.user,
            fmt=upload.validated_data.get("format"),
        )
        job = services.import_job_start(job=job)
        if job.state == job.State.FAILED:
            return Response({**ImportJobSerializer(job).data, "detail": job.error}, status=status.HTTP_400_BAD_REQUEST)
        code = status.HTTP_201_CREATED if job.is_finished else status.HTTP_202_ACCEPTED
        return Response(ImportJobSerializer(job).data, status=code)


class ExportViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Dataset snapshots: ask for one (202; a worker builds it), follow its progress, download the file."""

    permission_classes = [IsResearcher]
    serializer_class = ExportSerializer
    throttle_scope = "exports"

    def get_queryset(self):
        return selectors.exports_visible_to(self.request.user)

    def get_throttles(self):
        # Asking for exports has its own budget; reading them counts against the ordinary one.
        return [ScopedRateThrottle()] if self.action == "create" else super().get_throttles()

    @extend_schema(request=ExportCreateSerializer, responses={202: ExportSerializer})
    def create(self, request):
        body = ExportCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        export = services.export_create(
            kind=body.validated_data["kind"], fmt=body.validated_data["format"],
            filters=body.validated_data["filters"], with_identities=body.validated_data["with_identities"],
            created_by=request.user,
        )
        return Response(self.get_serializer(export).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        description="The export's file, with its checksum in the X-Checksum-SHA256 header; 404 until it is built.",
        responses={(200, media_type): OpenApiResponse(OpenApiTypes.BINARY, description=f"The {fmt} file.")
                   for fmt, media_type in EXPORT_MEDIA_TYPES.items()},
    )
    @action(detail=True, url_path="download", url_name="download")
    def download(self, request, pk=None):
        return export_file_response(self.get_object())


class ModelVersionViewSet(viewsets.ReadOnlyModelViewSet):
    """Model versions of every kind, newest first, with their metrics and lineage."""

    permission_classes = [IsResearcher]
    serializer_class = ModelVersionSerializer
    queryset = ModelVersion.objects.all()


class TrainingRunViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Training runs, newest first: state, progress, metrics, the gate's verdict and the exports each trained on.
    Start one (202; a GPU worker runs it) or cancel one."""

    permission_classes = [IsResearcher]
    serializer_class = TrainingRunSerializer

    def get_queryset(self):
        return selectors.training_runs()

    @extend_schema(request=TrainingRunCreateSerializer, responses={202: TrainingRunSerializer})
    def create(self, request):
        body = TrainingRunCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = services.training_run_start(kind=body.validated_data["kind"], options=body.validated_data["options"],
                                          created_by=request.user)
        return Response(self.get_serializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=TrainingRunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = services.training_run_cancel(run=self.get_object())
        return Response(self.get_serializer(run).data)


@extend_schema(responses=SamplerSerializer)
@api_view(["GET"])
@permission_classes([IsResearcher])
def sampler(request):
    """The sampling backend, the version it should serve, whether its last attempt worked, and prompts waiting."""
    return Response(SamplerSerializer(selectors.sampler_overview()).data)


@extend_schema(responses=StatisticsSerializer)
@api_view(["GET"])
@permission_classes([IsResearcher])
def statistics(request):
    """Prompts per split, source, language and use case; open tasks; submitted results per kind."""
    return Response(StatisticsSerializer(selectors.dataset_statistics()).data)
