"""Property-based tests of the API against its own OpenAPI schema, for every role and for no token.

Schemathesis generates requests (valid ones and invalid ones) for every operation in the schema and
calls the application in-process. Each answer must not be a server error, and its status code,
media type and body must be the ones the schema documents."""

import json
from datetime import timedelta

import pytest
import schemathesis
from django.core import signals
from django.core.files.base import ContentFile
from django.db import close_old_connections
from django.urls import resolve
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.meta import TestPhase
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from labeling import services
from labeling.models import Assignment, Evaluation, Export, ImportJob, LabelerProfile, Task, TrainingRun
from labeling.permissions import IsLabeler
from tests.factories import ModelVersionFactory, PromptFactory, TaskFactory, ranking_task

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CONFIG = SchemathesisConfig.from_dict({"seed": 20240613, "generation": {"mode": "all", "deterministic": True}})
schema = schemathesis.openapi.from_dict(
    json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True))), config=CONFIG
)
schema.app = application


class World:
    """A few rows of every kind, and the Authorization header of each role."""

    def __init__(self, users):
        LabelerProfile.objects.update(status=LabelerProfile.Status.ACTIVE)
        PromptFactory.create_batch(3)
        ranking_task(k=4)
        TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION)
        assignment = services.task_lease_next(labeler=users["labeler"])
        export = Export.objects.create(kind=Export.Kind.SFT, state=Export.State.SUCCEEDED, created_by=users["researcher"],
                                       row_count=1, size_bytes=3, sha256="0" * 64, progress=1)
        export.file.save(export.filename, ContentFile(b"{}\n"))
        version = ModelVersionFactory()
        run = TrainingRun.objects.create(kind=TrainingRun.Kind.REWARD)
        job = ImportJob.objects.create(filename="p.csv", format="csv", size_bytes=10, created_by=users["researcher"])
        lease = {"labeler": users["labeler"], "lease_expires_at": timezone.now() + timedelta(minutes=30)}
        chat = Assignment.objects.create(task=services.chat_task_create(), **lease)
        conversation = services.chat_start(assignment=chat, labeler=users["labeler"])
        conversation.messages.create(position=1, role="user", text="Hello.")
        reply = conversation.messages.create(position=2, role="assistant", text="Hi!", state="done", model_version=version)
        demonstration = Assignment.objects.create(task=Task.objects.get(kind=Task.Kind.WRITE_DEMONSTRATION), **lease)
        suggestion = services.suggestion_request(assignment=demonstration, labeler=users["labeler"], turns=[])
        evaluation = Evaluation.objects.create(candidate=version, prompt_ids=[1])
        self.ids = {"work/assignments": assignment.pk, "exports": export.pk, "model-versions": version.pk,
                    "evaluations": evaluation.pk,
                    "training-runs": run.pk, "imports": job.pk, "work/chats": conversation.pk,
                    "work/chat-messages": reply.pk, "work/suggestions": suggestion.pk}
        self.headers = {"anonymous": {}}
        for role in ("labeler", "researcher", "admin"):
            token = Token.objects.create(user=users[role])
            self.headers[role] = {"Authorization": f"Token {token.key}"}

    def real_id(self, path):
        return self.ids.get(path.removeprefix("/api/").split("/{")[0])

    def admitted_role(self, path):
        permissions = resolve(path.replace("{id}", "1")).func.cls.permission_classes
        return "labeler" if IsLabeler in permissions else "researcher"


@pytest.fixture
def world(users, settings):
    settings.QUEUE_SHARES = {"rank_completions": 1}  # the lease below takes the ranking task, not the demonstration
    # A private cache, so that earlier runs' request counts cannot throttle this one.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.CHAT_STREAM_SECONDS = 0.2  # a reply no worker writes here streams no longer than this
    # Requests run inside the test's transaction: like Django's test client, keep the connection open between them.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield World(users)
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_answers_as_documented_for_every_role(case, world):
    # The coverage phase sends hundreds of boundary and invalid values to some operations; those go only
    # to a role the operation admits, where they reach validation. Generated cases go to every role.
    if case.meta is not None and case.meta.phase.name == TestPhase.COVERAGE:
        roles = [world.admitted_role(case.path)]
    else:
        roles = list(world.headers)
    for role in roles:
        headers = world.headers[role]
        response = case.call(headers=headers)
        case.validate_response(response, checks=CHECKS, headers=headers)
        real_id = world.real_id(case.path)
        if real_id is not None and "id" in (case.path_parameters or {}):
            # Generated ids rarely name a row; ask again about one that exists.
            real = case.operation.Case(
                path_parameters={**case.path_parameters, "id": real_id},
                query=case.query, body=case.body, media_type=case.media_type,
            )
            response = real.call(headers=headers)
            real.validate_response(response, checks=CHECKS, headers=headers)
