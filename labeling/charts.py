"""Small SVG charts drawn on the server: no script, no library, readable without JavaScript.

Each function takes plain numbers and returns safe markup; the page puts the same numbers in a
table one click away.
"""

import math

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


ROWS_WIDTH, ROW, LABEL_WIDTH, AXIS, RIGHT = 420, 22, 150, 26, 24  # the charts with a labelled row per item


def _axis_ticks(low, high, most=7):
    """Round ticks inside [low, high], at most `most` of them: steps of 1, 2, 2.5 or 5 times a power of ten, so
    that every label says exactly where its line is."""
    span = high - low
    magnitude = 10 ** math.floor(math.log10(span / (most - 1)))
    step = next(magnitude * m for m in (1, 2, 2.5, 5, 10) if span / (magnitude * m) <= most - 1)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + step * n, 10) for n in range(int((high - first) / step + 1e-9) + 1)]


def _fit(text, characters=23):
    return text if len(text) <= characters else text[: characters - 1] + "…"


def intervals(title, rows, *, domain=None, x_format="{:.2f}".format, reference=None):
    """A horizontal row per label: a point at its value and a whisker over its interval, on one axis, like the
    win-rate and strength figures of InstructGPT and Chatbot Arena. `rows` are (label, value, low, high); a row
    without a value says so. `domain` fixes the axis (0 to 1 for rates); otherwise it holds every value, the
    intervals and `reference` (a dashed line: an even win rate, a strength of zero)."""
    drawn = [row for row in rows if row[1] is not None]
    if not drawn:
        return format_html('<p class="empty">{}</p>', "Nothing to draw yet.")
    if domain is None:
        values = [v for _, *numbers in drawn for v in numbers if v is not None]
        values += [reference] if reference is not None else []
        low, high = min(values), max(values)
        pad = (high - low) * 0.05 or 1
        domain = (low - pad, high + pad)
    low, high = domain
    left, right = LABEL_WIDTH, ROWS_WIDTH - RIGHT
    height = TOP + ROW * len(rows) + AXIS

    def x(value):
        value = min(max(value, low), high)  # a value outside a fixed domain sits on its edge, never beyond
        return left + (right - left) * (value - low) / (high - low)

    parts = [format_html('<line x1="{}" x2="{}" y1="{}" y2="{}" class="grid"/>'
                         '<text x="{}" y="{}" class="label">{}</text>',
                         _n(x(tick)), _n(x(tick)), TOP, height - AXIS, _n(x(tick)), height - AXIS + 14, x_format(tick))
             for tick in _axis_ticks(low, high)]
    if reference is not None and low <= reference <= high:
        parts.append(format_html('<line x1="{}" x2="{}" y1="{}" y2="{}" class="reference"/>',
                                 _n(x(reference)), _n(x(reference)), TOP, height - AXIS))
    for n, (label, value, row_low, row_high) in enumerate(rows):
        y = TOP + ROW * n + ROW / 2
        parts.append(format_html('<text x="{}" y="{}" class="row-label">{}<title>{}</title></text>',
                                 left - 6, _n(y + 4), _fit(label), label))
        if value is None:
            parts.append(format_html('<text x="{}" y="{}" class="legend">{}</text>', left + 4, _n(y + 4),
                                     "no judgments yet"))
            continue
        tip = f"{label}: {x_format(value)}"
        if row_low is not None and row_high is not None:
            tip += f" [{x_format(row_low)}, {x_format(row_high)}]"
            parts.append(format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" class="whisker"/>'
                '<line x1="{}" x2="{}" y1="{}" y2="{}" class="whisker"/>'
                '<line x1="{}" x2="{}" y1="{}" y2="{}" class="whisker"/>',
                _n(x(row_low)), _n(x(row_high)), _n(y), _n(y),
                _n(x(row_low)), _n(x(row_low)), _n(y - 5), _n(y + 5),
                _n(x(row_high)), _n(x(row_high)), _n(y - 5), _n(y + 5)))
        parts.append(format_html('<circle cx="{}" cy="{}" r="4" fill="{}"><title>{}</title></circle>',
                                 _n(x(value)), _n(y), PALETTE[0], tip))
    return _rows_frame(title, height, parts)


def grouped_bars(title, groups, series, *, x_max=1, x_format="{:.0%}".format):
    """Horizontal bars: a group per label (a flag), a bar per series (a model) in it, and a legend that wraps
    below, like InstructGPT's metadata figure. `series` maps a name to one value per group (None: no bar)."""
    if not groups or not any(v for values in series.values() for v in values if v):
        return format_html('<p class="empty">{}</p>', "Nothing to draw yet.")
    left, right, bar = LABEL_WIDTH, ROWS_WIDTH - RIGHT, 7
    group_height = bar * len(series) + 8
    plot_bottom = TOP + group_height * len(groups)
    per_line = 3
    legend_lines = -(-len(series) // per_line)
    height = plot_bottom + AXIS + 16 * legend_lines

    def x(value):
        return left + (right - left) * min(max(value, 0), x_max) / x_max

    parts = [format_html('<line x1="{}" x2="{}" y1="{}" y2="{}" class="grid"/>'
                         '<text x="{}" y="{}" class="label">{}</text>',
                         _n(x(tick)), _n(x(tick)), TOP, plot_bottom, _n(x(tick)), plot_bottom + 14, x_format(tick))
             for tick in _axis_ticks(0, x_max)]
    for g, label in enumerate(groups):
        top = TOP + group_height * g + 4
        parts.append(format_html('<text x="{}" y="{}" class="row-label">{}<title>{}</title></text>',
                                 left - 6, _n(top + bar * len(series) / 2 + 4), _fit(label), label))
        for k, (name, values) in enumerate(series.items()):
            if values[g] is None:
                continue
            parts.append(format_html('<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
                                     left, _n(top + bar * k), _n(x(values[g]) - left), bar - 1,
                                     PALETTE[k % len(PALETTE)], f"{name}, {label}: {x_format(values[g])}"))
    column = (ROWS_WIDTH - 12) / per_line
    for k, name in enumerate(series):
        line, place = divmod(k, per_line)
        y = plot_bottom + AXIS + 16 * line
        parts.append(format_html('<rect x="{}" y="{}" width="10" height="10" fill="{}"/>'
                                 '<text x="{}" y="{}" class="legend">{}<title>{}</title></text>',
                                 _n(6 + column * place), y, PALETTE[k % len(PALETTE)], _n(20 + column * place),
                                 y + 9, _fit(name, 20), name))
    return _rows_frame(title, height, parts)


def _rows_frame(title, height, parts):
    return format_html('<svg class="chart rows" viewBox="0 0 {} {}" role="img" aria-label="{}"><title>{}</title>{}'
                       '</svg>', ROWS_WIDTH, height, title, title, mark_safe("".join(parts)))
