import markdown as markdown_lib
from django import template
from django.utils.safestring import mark_safe

register = template.Library()


@register.filter
def markdown(text):
    """Markdown to HTML, with raw HTML in the source dropped rather than passed through."""
    converter = markdown_lib.Markdown(extensions=["extra", "sane_lists"])
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    return mark_safe(converter.convert(text or ""))


@register.filter
def field_of(form, name):
    return form[name]


@register.filter
def filter_value(value):
    """An export filter's value as the command line writes it: split=train,valid; margin=true."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else value
