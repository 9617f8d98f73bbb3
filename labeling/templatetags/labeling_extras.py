from django import template

from ..charts import human_number, metric_name
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


@register.filter
def estimate(numbers, style="percent"):
    """An estimate as `62% [55%, 69%]` (or `4.8 [4.5, 5.1]` with "number", `+0.42 [...]` with "signed"); a dash
    when there is none."""
    if not numbers or numbers.get("value") is None:
        return "—"
    shown = {"percent": "{:.0%}", "number": "{:.1f}", "signed": "{:+.2f}"}[style].format
    interval = f" [{shown(numbers['low'])}, {shown(numbers['high'])}]" if numbers.get("low") is not None else ""
    return shown(numbers["value"]) + interval


@register.filter
def share(value):
    """A share as a whole percentage; a dash for none."""
    return "—" if value is None else f"{value:.0%}"


@register.filter
def get(mapping, key):
    return mapping.get(key)


@register.filter(name="metric_name")
def metric_name_filter(key):
    """A metric's name for people, with its unit: kl -> "KL, nats"."""
    return metric_name(key)


@register.filter
def number(value):
    """A number as people read it: "6", "0.0123", "123,457", "1.23M"; a dash for none. A group of metrics
    (a run's validation numbers) lists each by name, in brackets."""
    if isinstance(value, dict):
        return "(" + ", ".join(f"{metric_name(key)} {human_number(item)}" for key, item in value.items()) + ")"
    return human_number(value)
