"""Small SVG charts drawn on the server: no script, no library, readable without JavaScript.

Each function takes plain numbers and returns safe markup; the page puts the same numbers in a
table one click away.
"""

from django.utils.html import format_html, format_html_join, mark_safe

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 340, 190, 36, 36, 10
PALETTE = ["#3b6ea8", "#e08a2c", "#5a9e4b", "#b8463f", "#7d5ba6", "#8c6d4f", "#c65d9e", "#6f6f6f"]


def _frame(title, body, y_max, y_format):
    ticks = format_html_join(
        "", '<line x1="{}" x2="{}" y1="{}" y2="{}" class="grid"/><text x="{}" y="{}" class="tick">{}</text>',
        ((LEFT, WIDTH, _n(y), _n(y), LEFT - 4, _n(y + 4), y_format(value)) for value, y in _y_ticks(y_max)),
    )
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}"><title>{}</title>{}{}</svg>',
        WIDTH, HEIGHT, title, title, ticks, body,
    )


def _y_ticks(y_max):
    return [(y_max * i / 4, _y(y_max * i / 4, y_max)) for i in range(5)]


def _y(value, y_max):
    return TOP + (HEIGHT - BOTTOM - TOP) * (1 - (value / y_max if y_max else 0))


def _n(number):
    return f"{number:.1f}"


def _x_labels(labels, xs):
    step = -(-len(labels) // 6)  # at most six labels fit under the axis
    return format_html_join(
        "", '<text x="{}" y="{}" class="label">{}</text>',
        ((_n(x), HEIGHT - BOTTOM + 14, label) for n, (label, x) in enumerate(zip(labels, xs)) if n % step == 0),
    )


def _legend(names):
    return format_html_join(
        "", '<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" class="legend">{}</text>',
        ((LEFT + 100 * n, HEIGHT - 12, PALETTE[n % len(PALETTE)], LEFT + 100 * n + 14, HEIGHT - 3, name)
         for n, name in enumerate(names)),
    )


def line_chart(title, labels, series, *, y_max=None, y_format="{:.2f}".format):
    """Lines over shared x labels; `series` maps a name to values (None leaves a gap)."""
    values = [v for points in series.values() for v in points if v is not None]
    if not labels or not values:
        return format_html('<p class="empty">{}</p>', "Nothing to draw yet.")
    y_max = y_max or max(values) or 1
    span = WIDTH - LEFT - 10
    xs = [LEFT + 5 + (span * n / max(len(labels) - 1, 1)) for n in range(len(labels))]
    lines = []
    for n, points in enumerate(series.values()):
        color = PALETTE[n % len(PALETTE)]
        drawn = [(x, _y(v, y_max)) for x, v in zip(xs, points) if v is not None]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in drawn)
        lines.append(format_html('<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>', path, color))
        lines.append(format_html_join("", '<circle cx="{}" cy="{}" r="3" fill="{}"/>',
                                      ((_n(x), _n(y), color) for x, y in drawn)))
    body = mark_safe("".join(lines)) + _x_labels(labels, xs) + (_legend(series) if len(series) > 1 else mark_safe(""))
    return _frame(title, body, y_max, y_format)


def stacked_bars(title, labels, series, *, y_max=None, y_format="{:.0f}".format):
    """Vertical bars per x label, stacked by series; `series` maps a name to counts (None draws nothing)."""
    series = {name: [value or 0 for value in points] for name, points in series.items()}
    totals = [sum(points[n] for points in series.values()) for n in range(len(labels))]
    if not labels or not any(totals):
        return format_html('<p class="empty">{}</p>', "Nothing to draw yet.")
    y_max = y_max or -(-max(totals) // 4) * 4  # whole numbers on the four ticks
    span = (WIDTH - LEFT - 10) / len(labels)
    bars = []
    for n in range(len(labels)):
        bottom = 0
        for k, points in enumerate(series.values()):
            value = points[n]
            if value:
                top = _y(bottom + value, y_max)
                bars.append(format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {}</title></rect>',
                    _n(LEFT + 5 + span * n), _n(top), _n(span * 0.8), _n(_y(bottom, y_max) - top),
                    PALETTE[k % len(PALETTE)], labels[n], value,
                ))
                bottom += value
    xs = [LEFT + 5 + span * (n + 0.4) for n in range(len(labels))]
    body = mark_safe("".join(bars)) + _x_labels(labels, xs) + (_legend(series) if len(series) > 1 else mark_safe(""))
    return _frame(title, body, y_max, y_format)
