"""Links from the Django admin to the site's own pages, each shown only to those its role rule admits."""

from django import template
from django.urls import reverse

from ..permissions import may_open

register = template.Library()

# The site's pages an admin works on, in the order the admin's header lists them.
ADMIN_WAYS = [
    ("Review", "review-queue"),
    ("Team", "team-quality"),
    ("Research", "research-home"),
    ("Training", "training-runs"),
    ("Exports", "exports"),
    ("Evaluations", "evaluations"),
]


@register.simple_tag
def site_pages(user):
    """(label, url) of each of ADMIN_WAYS that `user` may open."""
    return [(label, reverse(name)) for label, name in ADMIN_WAYS if may_open(user, name)]
