from django import template

from ..html import render_markdown

register = template.Library()


@register.filter
def markdown(text):
    """Markdown to sanitized HTML: see labeling/html.py."""
    return render_markdown(text)


@register.filter
def field_of(form, name):
    return form[name]


@register.filter
def filter_value(value):
    """An export filter's value as the command line writes it: split=train,valid; margin=true."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else value
