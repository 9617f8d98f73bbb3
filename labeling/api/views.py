from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, mixins, status, viewsets
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from .. import selectors, services
from ..models import Prompt
from ..permissions import IsResearcher
from .serializers import (
    ImportJobSerializer,
    ImportUploadSerializer,
    IntakeReportSerializer,
    PromptBulkEnvelope,
    PromptBulkSerializer,
    PromptFilterSerializer,
    PromptSerializer,
)


@extend_schema_view(get=extend_schema(parameters=[PromptFilterSerializer]))
class PromptListCreate(generics.ListAPIView):
    """List prompts, or create many at once through the intake rules (dedup, cap, split, PII)."""

    permission_classes = [IsResearcher]
    serializer_class = PromptSerializer
    parser_classes = [JSONParser]

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
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        return selectors.import_jobs_visible_to(self.request.user)

    @extend_schema(request=ImportUploadSerializer, responses={201: ImportJobSerializer, 202: ImportJobSerializer})
    def create(self, request):
        upload = ImportUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        job = services.import_job_create(
            uploaded_file=upload.validated_data["file"],
            created_by=request.user,
            fmt=upload.validated_data.get("format"),
        )
        job = services.import_job_start(job=job)
        code = status.HTTP_201_CREATED if job.is_finished else status.HTTP_202_ACCEPTED
        return Response(ImportJobSerializer(job).data, status=code)
