"""Who may see what. Roles are groups; admins (and superusers) may do what researchers do."""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.urls import resolve, reverse
from rest_framework.permissions import BasePermission

from .models import Role


def roles_of(user):
    if not user.is_authenticated:
        return set()
    # The API's authentication reads the group names with the user (api/authentication.py); pages ask here.
    names = getattr(user, "group_names", None)
    if names is None:
        names = [group.name for group in user.groups.all()]
    roles = {name for name in names if name in Role.values}
    if user.is_superuser:
        roles.add(Role.ADMIN)
    return roles


def has_role(user, *roles):
    held = roles_of(user)
    if Role.ADMIN in held and Role.RESEARCHER in roles:
        return True
    return bool(held & set(roles))


def role_required(*roles):
    """Page decorator: anonymous users go to the login page, the wrong role gets 403."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, *roles):
                raise PermissionDenied(f"This page is for the {' or '.join(roles)} role.")
            return view(request, *args, **kwargs)

        wrapped.required_roles = roles  # read by may_open, so that links to a page follow the page's own rule
        return wrapped

    return decorator


def may_open(user, url_name):
    """Whether `user` may open the page named `url_name` (one without arguments), as its `role_required` decides;
    a page without that rule is open to everyone signed in."""
    roles = getattr(resolve(reverse(url_name)).func, "required_roles", None)
    return roles is None or has_role(user, *roles)


class IsResearcher(BasePermission):
    message = "This endpoint is for researchers and admins."

    def has_permission(self, request, view):
        return has_role(request.user, Role.RESEARCHER)


class IsLabeler(BasePermission):
    message = "This endpoint is for labelers."

    def has_permission(self, request, view):
        return has_role(request.user, Role.LABELER)
