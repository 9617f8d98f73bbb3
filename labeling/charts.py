"""Small SVG charts drawn on the server: no script, no library, readable without JavaScript.

Each function takes plain numbers and returns safe markup; the page puts the same numbers in a
table one click away. Every axis holds every value it is given, with round ticks whose labels say
exactly where their lines are, and nothing is drawn outside the plot or over a label.
"""

import math
from itertools import groupby

from django.utils.html import format_html, mark_safe

WIDTH, PLOT_HEIGHT, TOP, MARGIN, X_LABELS = 340, 144, 10, 8, 20  # the charts with a value axis
PALETTE = ["#3b6ea8", "#e08a2c", "#5a9e4b", "#b8463f", "#7d5ba6", "#8c6d4f", "#c65d9e", "#6f6f6f"]
# The width of one character of the 11 px chart text, on the wide side: an estimate that is too wide costs a
# little room, one that is too narrow lets names overlap.
CHAR_WIDTH = 7
LEGEND_ROW, SWATCH = 16, 14  # a legend row's height; the swatch and its gap before the name

# Metric names as people read them, with their units where there are any. A metric not here is named after its
# key: response_length -> "Response length".
METRICS = {
    "kl": ("KL", "nats"), "loss": ("Loss", None), "reward": ("Reward", None), "steps": ("Steps", None),
    "accuracy": ("Accuracy", None), "pairs": ("Pairs", None), "episodes": ("Episodes", None),
    "samples_seen": ("Samples seen", None), "beta": ("KL coefficient", None), "win_rate": ("Win rate", None),
    "valid": ("Validation", None), "valid_loss": ("Validation loss", None),
    "active_valid_loss": ("Active model's validation loss", None), "active_accuracy": ("Active model's accuracy", None),
    "active_reward": ("Active model's reward", None), "perplexity": ("Perplexity", None),
    "longer_wins_accuracy": ("Accuracy of the longer wins", None),
    "shorter_wins_accuracy": ("Accuracy of the shorter wins", None),
    "reward_mean": ("Mean reward", None), "reward_std": ("Reward standard deviation", None),
    "response_length": ("Response length", "tokens"), "entropy": ("Entropy", "nats"), "lr": ("Learning rate", None),
    "elapsed": ("Time", "s"), "policy_loss": ("Policy loss", None), "value_loss": ("Value loss", None),
    "ptx_loss": ("Pretraining loss", None), "clip_fraction": ("Clipped share", None),
}


def metric_name(key):
    """A metric's name for people, with its unit: kl -> "KL, nats", loss -> "Loss"."""
    name, unit = METRICS.get(key) or (str(key).replace("_", " ").capitalize(), None)
    return f"{name}, {unit}" if unit else name


def metric_title(key):
    """A metric's name without its unit, for a heading: kl -> "KL"."""
    return METRICS[key][0] if key in METRICS else metric_name(key)


def human_number(value):
    """A number as people read it: whole numbers without decimals and with thousands separators ("6",
    "123,457"), millions and more shortened ("1.23M"), others to three significant digits ("0.0123", "-1.48")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    if not math.isfinite(value):
        return {math.inf: "∞", -math.inf: "-∞"}.get(value, "not a number")
    magnitude = abs(value)
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if magnitude >= scale:
            return _trim(f"{value / scale:.{max(0, 2 - math.floor(math.log10(magnitude / scale)))}f}") + suffix
    if value == round(value) or magnitude >= 1000:
        return f"{round(value):,}"
    if magnitude < 1e-4:
        return f"{value:.3g}"
    return _trim(f"{value:,.{2 - math.floor(math.log10(magnitude))}f}")


def _trim(text):
    return text.rstrip("0").rstrip(".") if "." in text else text


def _tick_labels(ticks, *, percent=False):
    """The labels of an axis's ticks, all with the same decimals, as many as the step needs: shares as
    percentages ("20%"), millions and more shortened once the axis reaches them ("0.25M", "0.50M")."""
    biggest = max(abs(tick) for tick in ticks)
    scale, suffix = (0.01, "%") if percent else next(
        ((s, x) for s, x in ((1e12, "T"), (1e9, "B"), (1e6, "M")) if biggest >= s), (1, ""))
    scaled = [round(tick / scale, 10) for tick in ticks]
    decimals = next(d for d in range(12) if all(abs(round(t, d) - t) < 1e-9 * max(1, abs(t)) for t in scaled))
    return ["0" if t == 0 and scale > 1 else f"{t:,.{decimals}f}{suffix}" for t in scaled]


def _value_text(value, percent):
    return human_number(value * 100) + "%" if percent else human_number(value)


def _n(number):
    return f"{number:.1f}"


def _width(text):
    return CHAR_WIDTH * len(str(text))


def _tick_step(span, most=7):
    """The smallest step of 1, 2, 2.5 or 5 times a power of ten that cuts `span` into at most `most` - 1 parts."""
    magnitude = 10 ** math.floor(math.log10(span / (most - 1)))
    return next(magnitude * m for m in (1, 2, 2.5, 5, 10) if span / (magnitude * m) <= most - 1 + 1e-9)


def _axis_ticks(low, high, most=7):
    """Round ticks inside [low, high], at most `most` of them: steps of 1, 2, 2.5 or 5 times a power of ten, so
    that every label says exactly where its line is."""
    step = _tick_step(high - low, most)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + step * n, 10) for n in range(int((high - first) / step + 1e-9) + 1)]


def _value_ticks(low, high, *, whole=False, most=6):
    """Round ticks whose first and last hold [low, high]: the axis of a chart ends on labelled lines. A single
    value sits in the middle of the axis; counts (`whole`) never get a step under one."""
    if low == high:
        pad = abs(low) / 2 or 1
        low, high = low - pad, high + pad
    step = max(_tick_step(high - low, most), 1 if whole else 0)
    while True:
        first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
        if last - first <= most - 1:
            return [round(step * n, 10) for n in range(first, last + 1)]
        step = _tick_step(step * (most - 1) * 1.01, most)  # the next round step up


def _fit(text, characters=23):
    return text if len(text) <= characters else text[: characters - 1] + "…"


def _named(text, characters):
    """`text` cut to `characters` with an ellipsis, its whole in a <title> when it was cut."""
    text = str(text)
    shown = _fit(text, characters)
    return format_html("{}<title>{}</title>", shown, text) if shown != text else format_html("{}", text)


def _legend(names, top, width):
    """Swatches and names in rows that wrap by each name's estimated width: (markup, height). A name too long
    for a row is cut with an ellipsis and kept whole in its <title>."""
    most = int((width - 12 - SWATCH) / CHAR_WIDTH)
    parts, x, row = [], 6, 0
    for k, name in enumerate(names):
        shown = _fit(str(name), min(most, 40))
        size = SWATCH + _width(shown)
        if x > 6 and x + size > width - 6:
            x, row = 6, row + 1
        y = top + LEGEND_ROW * row
        parts.append(format_html('<rect x="{}" y="{}" width="10" height="10" fill="{}" class="swatch"/>'
                                 '<text x="{}" y="{}" class="legend">{}</text>',
                                 _n(x), y, PALETTE[k % len(PALETTE)], _n(x + SWATCH), y + 9, _named(name, len(shown))))
        x += size + 12
    return mark_safe("".join(parts)), LEGEND_ROW * (row + 1)


class _Frame:
    """The plot area of a chart with a value axis: tick labels to its left, never under the data; x labels
    below it, thinned so that they never touch; the legend under them. `y` and `xs` place values in it."""

    def __init__(self, ticks, labels, *, percent, y_label, bars):
        self.ticks, self.tick_labels, self.y_label = ticks, _tick_labels(ticks, percent=percent), y_label
        self.top = TOP + (14 if y_label else 0)
        self.bottom = self.top + PLOT_HEIGHT
        self.left, self.right = 10 + max(map(_width, self.tick_labels)), WIDTH - MARGIN
        self.labels = [str(label) for label in labels]
        half = max(_width(_fit(label, 12)) for label in self.labels) / 2
        n, span = len(labels), self.right - self.left
        if bars:
            # Bars sit in equal slots; the outer slots move in just enough for their labels to fit the chart.
            inset = max(2, (half - span / (2 * n)) * n / (n - 1)) if n > 1 else 2
            self.slot = (span - 2 * inset) / n
            self.xs = [self.left + inset + self.slot * (k + 0.5) for k in range(n)]
        else:
            inset = max(6, half)
            self.xs = ([self.left + inset + (span - 2 * inset) * k / (n - 1) for k in range(n)] if n > 1
                       else [(self.left + self.right) / 2])
        self.label_step = self._label_step()

    def _label_step(self):
        """Label every point, or every second, third...: the fewest skipped that keeps each label clear of the
        next."""
        halves = [_width(_fit(label, 12)) / 2 + 3 for label in self.labels]
        for step in range(1, len(self.labels)):
            shown = range(0, len(self.labels), step)
            if all(self.xs[b] - halves[b] >= self.xs[b - step] + halves[b - step] for b in shown[1:]):
                return step
        return len(self.labels)

    def y(self, value):
        low, high = self.ticks[0], self.ticks[-1]
        return self.bottom - PLOT_HEIGHT * (value - low) / (high - low)

    def svg(self, title, body, legend_names):
        parts = [format_html('<rect x="{}" y="{}" width="{}" height="{}" fill="none" class="plot"/>',
                             self.left, self.top, self.right - self.left, PLOT_HEIGHT)]
        parts += [format_html('<line x1="{}" x2="{}" y1="{}" y2="{}" class="grid"/>'
                              '<text x="{}" y="{}" class="tick" text-anchor="end">{}</text>',
                              self.left, self.right, _n(self.y(tick)), _n(self.y(tick)), self.left - 5,
                              _n(self.y(tick) + 4), label)
                  for tick, label in zip(self.ticks, self.tick_labels, strict=True)]
        if self.y_label:
            parts.append(format_html('<text x="4" y="{}" class="axis-label">{}</text>', self.top - 10,
                                     _named(self.y_label, int((WIDTH - 8) / CHAR_WIDTH))))
        parts.append(body)
        if self.ticks[0] <= 0 <= self.ticks[-1]:
            parts.append(format_html('<line x1="{}" x2="{}" y1="{}" y2="{}" class="zero"/>',
                                     self.left, self.right, _n(self.y(0)), _n(self.y(0))))
        parts += [format_html('<text x="{}" y="{}" class="label" text-anchor="middle">{}</text>',
                              _n(x), self.bottom + 14, _named(label, 12))
                  for n, (label, x) in enumerate(zip(self.labels, self.xs, strict=True)) if n % self.label_step == 0]
        height = self.bottom + X_LABELS
        if len(legend_names) > 1:
            legend, legend_height = _legend(legend_names, height, WIDTH)
            parts.append(legend)
            height += legend_height
        return format_html('<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}"><title>{}</title>{}'
                           '</svg>', WIDTH, height, title, title, mark_safe("".join(parts)))


def _clean(series, labels):
    """Each series as one value or None per label: a value that is missing, not a number or infinite is None."""
    cleaned = {}
    for name, points in series.items():
        points = [v if isinstance(v, (int, float)) and math.isfinite(v) else None for v in points][: len(labels)]
        cleaned[name] = points + [None] * (len(labels) - len(points))
    return cleaned


def line_chart(title, labels, series, *, domain=(), percent=False, y_label=None):
    """Lines over shared x labels; `series` maps a name to values (None leaves a gap). The axis, named
    `y_label`, holds every value and at least `domain`: (0, 1) for shares, written as percentages (`percent`)."""
    series = _clean(series, labels)
    values = [v for points in series.values() for v in points if v is not None]
    if not labels or not values:
        return format_html('<p class="empty">{}</p>', "Nothing to draw yet.")
    frame = _Frame(_value_ticks(min(values + list(domain)), max(values + list(domain))), labels,
                   percent=percent, y_label=y_label, bars=False)
    parts = []
    for k, (name, points) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        for gap, run in groupby(zip(frame.xs, points, strict=True), key=lambda point: point[1] is None):
            run = [] if gap else [f"{x:.1f},{frame.y(value):.1f}" for x, value in run]
            if len(run) > 1:
                parts.append(format_html('<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>',
                                         " ".join(run), color))
        drawn = [(x, frame.y(v), label, v) for x, v, label in zip(frame.xs, points, frame.labels, strict=True)
                 if v is not None]
        parts += [format_html('<circle cx="{}" cy="{}" r="3" fill="{}"><title>{} at {}: {}</title></circle>',
                              _n(x), _n(y), color, name, label, _value_text(v, percent)) for x, y, label, v in drawn]
    return frame.svg(title, mark_safe("".join(parts)), list(series))


def stacked_bars(title, labels, series, *, domain=(), percent=False, y_label=None):
    """Vertical bars per x label, stacked by series from zero: up for positive values, down for negative ones.
    `series` maps a name to values (None draws nothing); the axis holds every stack and at least `domain`."""
    series = _clean(series, labels)
    values = [v for points in series.values() for v in points if v is not None]
    if not labels or not values:
        return format_html('<p class="empty">{}</p>', "Nothing to draw yet.")
    ups = [sum(max(points[n] or 0, 0) for points in series.values()) for n in range(len(labels))]
    downs = [sum(min(points[n] or 0, 0) for points in series.values()) for n in range(len(labels))]
    low, high = min(downs + [0, *domain]), max(ups + [0, *domain])
    whole = all(isinstance(v, int) for v in values)
    frame = _Frame(_value_ticks(low, high if high > low else 1, whole=whole), labels, percent=percent,
                   y_label=y_label, bars=True)
    width = min(frame.slot * 0.7, 40)
    parts = []
    for n, (label, x) in enumerate(zip(frame.labels, frame.xs, strict=True)):
        up = down = 0
        for k, (name, points) in enumerate(series.items()):
            value = points[n]
            if not value:
                continue
            if value > 0:
                bottom, top, up = up, up + value, up + value
            else:
                bottom, top, down = down + value, down, down + value
            parts.append(format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}, {}: {}</title></rect>',
                _n(x - width / 2), _n(frame.y(top)), _n(width), _n(frame.y(bottom) - frame.y(top)),
                PALETTE[k % len(PALETTE)], label, name, _value_text(value, percent)))
    return frame.svg(title, mark_safe("".join(parts)), list(series))


ROWS_WIDTH, ROW, LABEL_WIDTH, AXIS, RIGHT = 420, 22, 150, 26, 24  # the charts with a labelled row per item


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
    legend, legend_height = _legend(list(series), plot_bottom + AXIS, ROWS_WIDTH)
    parts.append(legend)
    return _rows_frame(title, plot_bottom + AXIS + legend_height, parts)


def _rows_frame(title, height, parts):
    return format_html('<svg class="chart rows" viewBox="0 0 {} {}" role="img" aria-label="{}"><title>{}</title>{}'
                       '</svg>', ROWS_WIDTH, height, title, title, mark_safe("".join(parts)))
