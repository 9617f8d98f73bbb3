"""The server-drawn charts: every value inside the plot where its axis says it is, labels that never collide."""

import math
import re
import xml.etree.ElementTree as ET

import pytest
from django.urls import reverse

from labeling import charts
from labeling.models import TrainingRun

SUFFIXES = {"%": 0.01, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


def number(text):
    """A label or tooltip number back as a float: "-1.5", "123,457", "1.25M", "40%"."""
    text = text.strip().replace(",", "")
    factor = SUFFIXES.get(text[-1], 1)
    return float(text[:-1] if factor != 1 else text) * factor


def parse(markup):
    svg = ET.fromstring(str(markup))
    assert svg.tag == "svg", markup
    return svg


def view_box(svg):
    _, _, width, height = map(float, svg.get("viewBox").split())
    return width, height


def plot_area(svg):
    rect = svg.find("rect[@class='plot']")
    left, top = float(rect.get("x")), float(rect.get("y"))
    return left, top, left + float(rect.get("width")), top + float(rect.get("height"))


def ticks(svg):
    """(value, y, label x) of each tick: a grid line and the label drawn just after it."""
    children = list(svg)
    return [(number(label.text), float(line.get("y1")), float(label.get("x")))
            for line, label in zip(children, children[1:], strict=False)
            if line.get("class") == "grid" and label.get("class") == "tick"]


def text_of(element):
    return element.text or ""


def is_round(step):
    mantissa = step / 10 ** math.floor(math.log10(step))
    return any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 2.5, 5, 10))


def overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def legend_boxes(svg):
    """The estimated box of each legend entry: its swatch and its name at the chart's character width."""
    children = list(svg)
    entries = [(s, n) for s, n in zip(children, children[1:], strict=False) if s.get("class") == "swatch"]
    assert all(n.get("class") == "legend" for _, n in entries)
    return [(float(s.get("x")), float(s.get("y")),
             float(n.get("x")) + charts.CHAR_WIDTH * len(text_of(n)), float(s.get("y")) + 11) for s, n in entries]


def check_value_chart(markup, values):
    """Every check a reader's eye makes on a chart with a value axis, given the values it was asked to draw."""
    svg = parse(markup)
    width, height = view_box(svg)
    left, top, right, bottom = plot_area(svg)
    assert 0 <= left < right <= width and 0 <= top < bottom <= height

    # Round ticks, evenly spaced, the axis ending on two of them, each label where its line is.
    found = ticks(svg)
    tick_values = [value for value, _, _ in found]
    steps = [b - a for a, b in zip(tick_values, tick_values[1:], strict=False)]
    assert len(found) >= 2 and all(math.isclose(s, steps[0], rel_tol=1e-6) for s in steps) and is_round(steps[0])
    (low, low_y, _), (high, high_y, _) = found[0], found[-1]
    assert math.isclose(low_y, bottom, abs_tol=0.1) and math.isclose(high_y, top, abs_tol=0.1)

    def y(value):
        return bottom - (bottom - top) * (value - low) / (high - low)

    assert all(abs(tick_y - y(value)) <= 0.1 for value, tick_y, _ in found)
    assert low <= min(values) and max(values) <= high
    assert all(x <= left - 2 for _, _, x in found)  # right-aligned labels end left of the plot
    zero = svg.findall("line[@class='zero']")
    assert len(zero) == (1 if low <= 0 <= high else 0)
    if zero:
        assert abs(float(zero[0].get("y1")) - y(0)) <= 0.1

    # Data only inside the plot area, each point at its value.
    for circle in svg.findall("circle"):
        cx, cy, r = float(circle.get("cx")), float(circle.get("cy")), float(circle.get("r"))
        assert left + r <= cx <= right - r and top <= cy <= bottom
        assert abs(cy - y(number(text_of(circle.find("title")).rsplit(": ", 1)[1]))) <= 0.1
    for line in svg.findall("polyline"):
        for point in line.get("points").split():
            px, py = map(float, point.split(","))
            assert left <= px <= right and top <= py <= bottom
    for rect in svg.findall("rect"):
        if rect.get("class") in ("plot", "swatch"):
            continue
        x, ry, w, h = (float(rect.get(a)) for a in ("x", "y", "width", "height"))
        assert left <= x and x + w <= right and top - 0.05 <= ry and ry + h <= bottom + 0.05
        value = number(text_of(rect.find("title")).rsplit(": ", 1)[1])
        assert abs(h - abs(y(0) - y(value))) <= 0.2  # a bar's height is its value
        assert (ry + h <= y(0) + 0.1) if value > 0 else (ry >= y(0) - 0.1)  # up from zero, or down

    # X labels inside the chart and apart; legend entries apart, below the plot, inside the chart.
    labels = [(float(t.get("x")) - charts.CHAR_WIDTH * len(text_of(t)) / 2, float(t.get("y")) - 11,
               float(t.get("x")) + charts.CHAR_WIDTH * len(text_of(t)) / 2, float(t.get("y")))
              for t in svg.findall("text[@class='label']")]
    boxes = legend_boxes(svg)
    for n, box in enumerate(labels + boxes):
        assert 0 <= box[0] and box[2] <= width and 0 <= box[1] and box[3] <= height, box
        assert not any(overlap(box, other) for other in (labels + boxes)[n + 1:]), box
    assert all(box[1] >= bottom for box in labels + boxes)
    return svg


NEGATIVE = [-0.21, -1.48, -0.93, -0.4, -0.05]
SPANNING = [0.012, -0.031, 0.0, 0.047, -0.0042]
LARGE = [1e6, 123456.7, 4.5e5, 0, 2.2e6]


@pytest.mark.parametrize("values", [NEGATIVE, SPANNING, [0.0] * 5, [0.69, 0.61, 0.55, 0.52, 0.5], LARGE,
                                    [3, 3, 3, 3, 3], [-7.5, 2.5, 1e-3, 80, -0.5]])
def test_a_line_chart_draws_every_value_where_its_axis_says(values):
    svg = check_value_chart(charts.line_chart("t", list(range(1, 6)), {"Reward": values}, y_label="Reward"), values)
    assert len(svg.findall("circle")) == 5 and len(svg.findall("polyline")) == 1
    assert svg.find("text[@class='axis-label']").text == "Reward"


def test_the_ppo_reward_chart_holds_its_lowest_point_and_draws_zero_above_it():
    svg = check_value_chart(charts.line_chart("Reward", [1, 2, 3, 4, 5], {"Reward": NEGATIVE}), NEGATIVE)
    values = [value for value, _, _ in ticks(svg)]
    assert values[0] <= -1.48 and values[-1] == 0  # not an axis from -0.00 to -1.05
    assert [t.text for t in svg.findall("text[@class='tick']")] == ["-1.5", "-1.0", "-0.5", "0.0"]


@pytest.mark.parametrize("chart", [charts.line_chart, charts.stacked_bars])
def test_a_single_value_sits_in_the_middle_of_its_axis(chart):
    for value in (0.42, 0, -3, 5):
        svg = check_value_chart(chart("t", ["only"], {"s": [value]}), [value, 0] if chart is charts.stacked_bars
                                else [value])
        left, top, right, bottom = plot_area(svg)
        if chart is charts.line_chart:
            circle = svg.find("circle")
            assert abs(float(circle.get("cx")) - (left + right) / 2) < 1
            assert top + (bottom - top) / 3 <= float(circle.get("cy")) <= bottom - (bottom - top) / 3


def test_all_equal_values_draw_a_flat_line_in_the_middle():
    svg = check_value_chart(charts.line_chart("t", ["a", "b", "c"], {"s": [2.5, 2.5, 2.5]}), [2.5])
    _, top, _, bottom = plot_area(svg)
    assert {float(c.get("cy")) for c in svg.findall("circle")} == {(top + bottom) / 2}


def test_a_gap_breaks_the_line_and_nothing_that_is_not_a_number_is_drawn():
    svg = check_value_chart(charts.line_chart("t", [1, 2, 3, 4, 5], {"s": [0.1, 0.2, None, float("nan"), 0.4]}),
                            [0.1, 0.2, 0.4])
    assert len(svg.findall("polyline")) == 1 and len(svg.findall("circle")) == 3
    assert "Nothing to draw yet." in str(charts.line_chart("t", [1], {"s": [None]}))


@pytest.mark.parametrize("series", [
    {"gain": [3, -2, 5, 0], "loss": [-1, -4, 2, 0]},  # stacks both ways from zero
    {"only": [-0.5, -1.25, -0.1, -2]},
    {"counts": [0, 0, 0, 0]},
    {"a": [1e6, 123456.7, 2.2e6, 4]},
])
def test_stacked_bars_grow_from_zero_and_stay_inside_their_axis(series):
    svg = check_value_chart(charts.stacked_bars("t", ["w", "x", "y", "z"], series), extremes(series, True))
    drawn = sum(1 for values in series.values() for v in values if v)
    assert len(svg.findall("rect")) - len(svg.findall("rect[@class='swatch']")) - 1 == drawn
    assert len(svg.findall("line[@class='zero']")) == 1


def test_counts_get_whole_ticks_and_shares_get_percentages():
    svg = check_value_chart(charts.stacked_bars("t", ["a", "b"], {"s": [1, 3]}), [1, 3])
    assert all(float(t.text) == int(t.text) for t in svg.findall("text[@class='tick']"))
    shares = check_value_chart(charts.stacked_bars("t", ["a", "b"], {"s": [0.8, None]}, domain=(0, 1), percent=True),
                               [0, 1])
    assert [t.text for t in shares.findall("text[@class='tick']")] == ["0%", "20%", "40%", "60%", "80%", "100%"]
    assert shares.find("rect/title").text == "a, s: 80%"


def test_large_values_are_written_for_people():
    svg = check_value_chart(charts.line_chart("t", list(range(1, 6)), {"s": LARGE}), LARGE)
    assert [t.text for t in svg.findall("text[@class='tick']")] == ["0", "0.5M", "1.0M", "1.5M", "2.0M", "2.5M"]
    assert [c.find("title").text for c in svg.findall("circle")][:2] == ["s at 1: 1M", "s at 2: 123,457"]


@pytest.mark.parametrize("value, shown", [
    (6, "6"), (6.0, "6"), (0.0123, "0.0123"), (-1.48, "-1.48"), (123456.7, "123,457"), (1e6, "1M"),
    (1234567, "1.23M"), (0.81, "0.81"), (12.345, "12.3"), (-0.0, "0"), (None, "—"), (float("nan"), "not a number"),
])
def test_numbers_are_written_for_people(value, shown):
    assert charts.human_number(value) == shown


def test_metrics_have_names_with_their_units():
    assert [charts.metric_name(key) for key in ("kl", "loss", "reward", "steps", "accuracy", "win_rate")] == [
        "KL, nats", "Loss", "Reward", "Steps", "Accuracy", "Win rate"]
    assert charts.metric_name("head_cv_accuracy") == "Head cv accuracy"


LONG = ["policy trained on the rankings of the whole second quarter", "reward", "KL, nats",
        "sft-12 with a name longer than a legend row could ever hold on a chart this narrow", "a", "b", "c", "d",
        "another quite long series name"]


def extremes(series, stacked):
    """The values an axis must hold: each value, or each stack's top and bottom."""
    if not stacked:
        return [v for values in series.values() for v in values if v is not None]
    columns = list(zip(*series.values(), strict=True))
    return [0] + [sum(max(v or 0, 0) for v in c) for c in columns] + [sum(min(v or 0, 0) for v in c) for c in columns]


@pytest.mark.parametrize("chart", [charts.line_chart, charts.stacked_bars])
def test_legends_wrap_without_overlap_and_keep_long_names_whole_in_a_title(chart):
    series = {name: [n - 3, n, 2 * n] for n, name in enumerate(LONG)}
    svg = check_value_chart(chart("t", ["01 Dec", "08 Dec", "15 Dec"], series),
                            extremes(series, chart is charts.stacked_bars))
    names = svg.findall("text[@class='legend']")
    assert len(names) == len(LONG) and len({n.get("y") for n in names}) > 1  # it wraps into rows
    cut = [n for n in names if n.text.endswith("…")]
    assert cut and all(n.find("title").text in LONG for n in cut)
    assert {n.text for n in names} - {n.text for n in cut} == set(LONG) - {n.find("title").text for n in cut}


def test_one_series_needs_no_legend():
    svg = check_value_chart(charts.line_chart("t", [1, 2], {"Loss": [0.7, 0.6]}), [0.7, 0.6])
    assert not svg.findall("text[@class='legend']")


def test_many_long_x_labels_are_thinned_and_cut_but_never_overlap():
    labels = [f"labeler-with-a-long-name-{n}" for n in range(40)]
    svg = check_value_chart(charts.stacked_bars("t", labels, {"s": [n / 40 for n in range(40)]}, percent=True),
                            [0, 1])
    shown = svg.findall("text[@class='label']")
    assert 1 < len(shown) < 40 and all(t.find("title").text in labels for t in shown)


@pytest.mark.parametrize("chart", [charts.line_chart, charts.stacked_bars])
def test_names_arrive_as_text(chart):
    name = '<script>alert("x")</script>'
    markup = str(chart(name, [name, "b"], {name: [1, 2], "other": [2, 1]}, y_label=name))
    assert "<script" not in markup
    svg = parse(markup)
    assert svg.find("title").text == name and svg.get("aria-label") == name
    assert name in {t.find("title").text if t.find("title") is not None else t.text
                    for t in svg.findall("text[@class='legend']")}


# The row charts of the evaluation pages pass the same checks along their value axis.

def check_row_chart(markup):
    svg = parse(markup)
    width, height = view_box(svg)
    children = list(svg)
    found = [(number(label.text), float(line.get("x1")))
             for line, label in zip(children, children[1:], strict=False)
             if line.get("class") == "grid" and label.get("class") == "label"]
    values = [value for value, _ in found]
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    assert all(math.isclose(s, steps[0], rel_tol=1e-6) for s in steps) and is_round(steps[0])
    (v0, x0), (v1, x1) = found[0], found[-1]
    assert all(abs(x - (x0 + (x1 - x0) * (v - v0) / (v1 - v0))) <= 0.1 for v, x in found)
    plot_bottom = max(float(line.get("y2")) for line in svg.findall("line[@class='grid']"))
    right = charts.ROWS_WIDTH - charts.RIGHT
    for circle in svg.findall("circle"):
        assert charts.LABEL_WIDTH <= float(circle.get("cx")) <= right and float(circle.get("cy")) <= plot_bottom
    for rect in svg.findall("rect"):
        if rect.get("class") == "swatch":
            continue
        x, y, w, h = (float(rect.get(a)) for a in ("x", "y", "width", "height"))
        assert charts.LABEL_WIDTH <= x and x + w <= right + 0.05 and y + h <= plot_bottom
    boxes = legend_boxes(svg)
    for n, box in enumerate(boxes):
        assert 0 <= box[0] and box[2] <= width and plot_bottom < box[1] and box[3] <= height
        assert not any(overlap(box, other) for other in boxes[n + 1:])
    return svg


@pytest.mark.parametrize("rows", [
    [("a", -1.5, -2.5, -0.4), ("b", 0.0, -0.3, 0.2), ("c", 1.2, 0.9, 3.8)],
    [("only", 0.3, 0.3, 0.3)],
    [("big", 1.2e6, 9e5, 1.5e6), ("none yet", None, None, None)],
])
def test_interval_charts_pass_the_same_checks(rows):
    check_row_chart(charts.intervals("t", rows, reference=0))


def test_grouped_bars_pass_the_same_checks_with_long_names():
    series = {name: [0.1 * n, 0.9, None] for n, name in enumerate(LONG)}
    svg = check_row_chart(charts.grouped_bars("t", ["flag a", "flag b", "<b>flag</b>"], series))
    assert len(svg.findall("text[@class='legend']")) == len(LONG)
    assert "<b>flag</b>" in {t.find("title").text for t in svg.findall("text[@class='row-label']")}


# The pages that draw them

def test_a_ppo_run_page_draws_negative_rewards_inside_its_chart_and_names_its_metrics(as_researcher):
    rewards, kls = [-0.21, -1.48, -0.93, -0.4, -0.05, 0.12], [0.0, 0.0123, -0.004, 0.031, 0.02, 0.0123]
    run = TrainingRun.objects.create(
        kind="ppo", state="succeeded", step=6, total_steps=6,
        history=[{"step": n, "episodes": 4 * n, "reward": r, "kl": k}
                 for n, (r, k) in enumerate(zip(rewards, kls, strict=True), start=1)],
        metrics={"steps": 6, "episodes": 24, "kl": 0.0123, "win_rate": 0.625},
    )
    page = as_researcher.get(run.get_absolute_url()).content.decode()
    drawn = {label: svg for svg, label in re.findall(r'(<svg class="chart"[^>]*aria-label="([^"]+)">.*?</svg>)',
                                                     page, re.S)}
    assert set(drawn) == {"Reward", "KL"}
    reward = check_value_chart(drawn["Reward"], rewards)
    assert [float(c.get("cy")) for c in reward.findall("circle")][1] == max(
        float(c.get("cy")) for c in reward.findall("circle"))  # -1.48 is the lowest point, inside the plot
    kl = check_value_chart(drawn["KL"], kls)
    assert kl.find("text[@class='axis-label']").text == "KL, nats" and len(kl.findall("line[@class='zero']")) == 1
    assert "<h2>KL by step</h2>" in page and "<h2>Reward by step</h2>" in page
    metrics = re.search(r"<dt>Metrics</dt><dd>(.*?)</dd>", page).group(1)
    assert sorted(metrics.split(", ")) == sorted(["Steps 6", "Episodes 24", "KL", "nats 0.0123", "Win rate 0.625"])
    assert "6.0000" not in page and "Kl" not in page


def test_a_reward_run_page_lists_validation_by_metric_name(as_researcher):
    run = TrainingRun.objects.create(
        kind="reward", state="succeeded", step=4, total_steps=4,
        history=[{"step": n, "loss": 0.7 - n / 10, "accuracy": 0.5 + n / 10} for n in (1, 2, 3, 4)]
        + [{"step": 2, "epoch": 0, "split": "valid", "accuracy": 0.75, "pairs": 30},
           {"step": 4, "epoch": 1, "split": "valid", "pairs": 30, "accuracy": 0.8127, "reward_mean": 1234.6}],
        metrics={"steps": 4, "valid": {"accuracy": 0.8127, "pairs": 30}},
    )
    page = as_researcher.get(reverse("training-run", args=[run.pk])).content.decode()
    table = page[page.index("<h2>Validation</h2>"):].split("</table>")[0]
    headings = re.findall(r"<th[^>]*>([^<]+)</th>", table)
    assert headings[0] == "Step" and sorted(headings[1:]) == ["Accuracy", "Mean reward", "Pairs"]
    rows = [dict(zip(headings, re.findall(r'<td class="num">([^<]*)</td>', row), strict=True))
            for row in table.split("</tr>")[1:-1]]
    assert rows == [{"Step": "2", "Accuracy": "0.75", "Pairs": "30", "Mean reward": "—"},  # each under its heading
                    {"Step": "4", "Accuracy": "0.813", "Pairs": "30", "Mean reward": "1,235"}]
    metrics = re.search(r"<dt>Metrics</dt><dd>(.*?)</dd>", page).group(1)
    assert "Steps 4" in metrics and re.search(r"Validation \((Accuracy 0.813, Pairs 30|Pairs 30, Accuracy 0.813)\)",
                                                metrics)
