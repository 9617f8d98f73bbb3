import factory
from django.contrib.auth import get_user_model

from labeling import services
from labeling.models import Completion, ModelVersion, Prompt, Task


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "password")

    @factory.post_generation
    def role(user, create, role, **kwargs):
        user.save()
        if role:
            services.user_set_role(user=user, role=role)


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    text = factory.Sequence(lambda n: f"Write a short poem about the number {n}.")
    split = Prompt.Split.TRAIN
    source_user_id = factory.Sequence(lambda n: f"customer-{n}")


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion

    kind = ModelVersion.Kind.POLICY
    name = factory.Sequence(lambda n: f"v{n}")


class CompletionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Completion

    prompt = factory.SubFactory(PromptFactory)
    text = factory.Sequence(lambda n: f"Completion number {n}.")


class TaskFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Task

    kind = Task.Kind.ANNOTATE_PROMPT
    prompt = factory.SubFactory(PromptFactory)


def ranking_task(k=4):
    """A ranking task over k completions of one prompt."""
    prompt = PromptFactory()
    task = TaskFactory(kind=Task.Kind.RANK_COMPLETIONS, prompt=prompt)
    task.completions.set(CompletionFactory.create_batch(k, prompt=prompt))
    return task
