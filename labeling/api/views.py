from drf_spectacular.utils import extend_schema
from rest_framework import generics, mixins, status, viewsets
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from .. import selectors, services
from ..models import Prompt
from ..permissions import IsResearcher
from .serializers import (
    ImportJobSerializer,
    ImportUploadSerializer,
    IntakeReportSerializer,
    PromptBulkSerializer,
    PromptSerializer,
)


class PromptListCreate(generics.ListAPIView):
    """List prompts, or create many at once through the intake rules (dedup, cap, split, PII)."""

    permission_classes = [IsResearcher]
    serializer_class = PromptSerializer

    def get_queryset(self):
        prompts = Prompt.objects.all()
        for name in ("split", "source", "language", "use_case"):
            if value := self.request.query_params.get(name):
                prompts = prompts.filter(**{name: value})
        return prompts

    @extend_schema(request=PromptBulkSerializer, responses={201: IntakeReportSerializer, 400: IntakeReportSerializer})
    def post(self, request):
        body = PromptBulkSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        rows = ((index, dict(row), 0) for index, row in enumerate(request.data["prompts"], start=1))
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
