from django.contrib.auth.models import Group
from django.db import transaction
from rest_framework.authtoken.models import Token

from ..models import LabelerProfile, Role


def user_set_role(*, user, role):
    """Put the user in exactly one role group; admins are staff so the Django admin lets them in."""
    role = Role(role)
    user.groups.remove(*Group.objects.filter(name__in=Role.values).exclude(name=role))
    user.groups.add(Group.objects.get(name=role))
    vars(user).pop("group_names", None)  # the groups read with the user by the API's authentication
    user.is_staff = role == Role.ADMIN or user.is_superuser
    user.save(update_fields=["is_staff"])
    if role == Role.LABELER:
        LabelerProfile.objects.get_or_create(user=user)
    return user


@transaction.atomic
def token_rotate(*, user):
    """A new API token for the user; the old one stops working at once."""
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)
