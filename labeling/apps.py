from django.apps import AppConfig
from django.apps import apps as global_apps
from django.db import DEFAULT_DB_ALIAS
from django.db.models.signals import post_migrate


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling"

    def ready(self):
        from . import checks  # noqa: F401 - registers the system checks

        post_migrate.connect(grant_admin_permissions, sender=self)


def grant_admin_permissions(using=DEFAULT_DB_ALIAS, apps=global_apps, **kwargs):
    """The admin role manages everything in the Django admin: people, data, tokens.

    Permissions exist only after the first migrate, so they are granted here rather than in
    the migration that creates the role groups; a flush of the database also lands here.
    """
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name in ("labeler", "researcher"):
        Group.objects.using(using).get_or_create(name=name)
    admins, _ = Group.objects.using(using).get_or_create(name="admin")
    admins.permissions.set(
        Permission.objects.using(using).filter(content_type__app_label__in=["labeling", "auth", "authtoken"])
    )
