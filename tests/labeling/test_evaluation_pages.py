"""The researchers' pages of human evaluations: start one, read its figures, the leaderboard, a version's results;
and the charts they draw."""

import re

import pytest
from django.urls import reverse

from labeling import charts, services
from labeling.models import Evaluation, ModelVersion, Prompt
from tests.factories import ModelVersionFactory, PromptFactory
from tests.labeling.test_evaluations import judged

pytestmark = pytest.mark.django_db


@pytest.fixture
def models(settings, tiny_model):
    settings.POLICY_MODEL = str(tiny_model)
    base = services.model_version_active(ModelVersion.Kind.POLICY)
    candidate = ModelVersionFactory(kind=ModelVersion.Kind.POLICY, name="ppo-1", status="ready",
                                    artifact_path=str(tiny_model))
    for n in range(4):
        PromptFactory(split=Prompt.Split.TEST, text=f"Test prompt {n}")
    return candidate, base


def test_a_researcher_starts_an_evaluation_from_the_page(as_researcher, models):
    candidate, base = models
    page = as_researcher.get(reverse("evaluations")).content.decode()
    assert "ppo-1 (ready)" in page and "No evaluations yet." in page
    response = as_researcher.post(reverse("evaluations"), {"start": "1", "candidate": candidate.pk,
                                                          "baselines": [base.pk], "prompts": 3})
    evaluation = Evaluation.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("evaluation", args=[evaluation.pk])
    assert (len(evaluation.prompt_ids), list(evaluation.baselines.all())) == (3, [base])
    page = as_researcher.get(response["Location"]).content.decode()
    assert "Sampling the outputs" in page and "Cancel this evaluation" in page


@pytest.mark.parametrize(("change", "said"), [
    ({"baselines": []}, "This field is required."),
    ({"baselines": ["candidate"]}, "must be different model versions"),
    ({"prompts": 0}, "greater than or equal to 1"),
    ({"prompts": 10 ** 9}, "less than or equal to 2000"),
    ({"prompts": "many"}, "Enter a whole number."),
    ({"candidate": 10 ** 9}, "Select a valid choice"),
])
def test_a_bad_start_says_what_was_wrong_and_starts_nothing(as_researcher, models, change, said):
    candidate, base = models
    body = {"start": "1", "candidate": candidate.pk, "baselines": [base.pk], "prompts": 3, **change}
    body["baselines"] = [candidate.pk if b == "candidate" else b for b in body["baselines"]]
    response = as_researcher.post(reverse("evaluations"), body)
    assert response.status_code == 400 and said in response.content.decode()
    assert not Evaluation.objects.exists()


def test_a_researcher_registers_an_endpoint_from_the_page_and_it_becomes_a_baseline(as_researcher, models):
    response = as_researcher.post(reverse("evaluations"), {"register": "1", "name": "theirs",
                                                          "url": "https://api.example.com/v1", "model": "m-1",
                                                          "api_key_env": "THEIR_KEY"})
    assert response.status_code == 302
    page = as_researcher.get(reverse("evaluations")).content.decode()
    assert "<code>m-1</code> at <code>https://api.example.com/v1</code>, key in <code>$THEIR_KEY</code>" in page
    assert "External endpoint theirs (ready)" in page
    refused = as_researcher.post(reverse("evaluations"), {"register": "1", "name": "<b>x</b>",
                                                         "url": "javascript:alert(1)", "model": "m"})
    page = refused.content.decode()
    assert refused.status_code == 400 and "The name must be" in page and "http(s) base URL" in page
    assert "<b>x</b>" not in page


def test_the_evaluation_page_draws_and_tabulates_the_results(as_researcher, models, labeler, other_labeler):
    candidate, base = models
    reward = ModelVersionFactory(kind=ModelVersion.Kind.REWARD, name="rm-1", status="ready", artifact_path="x")
    evaluation = Evaluation.objects.create(candidate=candidate, state=Evaluation.State.OPEN, reward_model=reward,
                                           prompt_ids=list(Prompt.objects.values_list("id", flat=True)))
    evaluation.baselines.set([base])
    prompts = list(Prompt.objects.filter(split=Prompt.Split.TEST))
    for n, prompt in enumerate(prompts[:4]):
        order = [[candidate], [base]] if n < 3 else [[base], [candidate]]
        judged(evaluation, prompt, {candidate: f"ours {n}", base: f"theirs {n}"},
               [(order, {candidate: (6, "hallucination") if n == 0 else 6, base: 3})], [labeler])
    scores = {str(c.pk): 1.0 if c.model_version == base else 0.0
              for c in evaluation.tasks.first().completions.model.objects.filter(tasks__evaluation=evaluation)}
    Evaluation.objects.filter(pk=evaluation.pk).update(reward_scores=scores)
    page = as_researcher.get(reverse("evaluation", args=[evaluation.pk])).content.decode()
    win_rates = page[page.index('id="win-rates"'):page.index('id="ratings"')]
    assert 'aria-label="Win rate of the candidate against each baseline' in win_rates
    assert "vs base: 75% [" in win_rates  # the point's tooltip
    table = page[page.index('class="list win-rates"'):].split("</table>")[0]
    assert "75% [" in table and "0% [0%, 0%]" in table and "25% of 4" in table  # the reward model disagrees
    models_table = page[page.index('class="list models-table"'):].split("</table>")[0]
    assert "6.0 [6.0, 6.0]" in models_table and "25%" in models_table  # one output of four hallucinated
    assert "4 judgments on 4 prompts" in page


def test_the_leaderboard_and_a_versions_page_show_its_strength_and_results(as_researcher, models, labeler):
    candidate, base = models
    evaluation = Evaluation.objects.create(candidate=candidate, state=Evaluation.State.OPEN)
    evaluation.baselines.set([base])
    for n, prompt in enumerate(Prompt.objects.all()):
        judged(evaluation, prompt, {candidate: "a", base: "b"},
               [([[candidate], [base]] if n else [[base], [candidate]], {candidate: 5, base: 4})], [labeler])
    page = as_researcher.get(reverse("leaderboard")).content.decode()
    table = page[page.index('class="list leaderboard"'):]
    assert table.index("ppo-1") < table.index("base") and "Fitted on 4 judgments" in page
    assert page.count("<circle") == 2 and 'class="reference"' in page
    version_page = as_researcher.get(reverse("model-version", args=[candidate.pk])).content.decode()
    assert "#1 of 2, strength" in version_page and f"Evaluation #{evaluation.pk}" in version_page
    assert "ppo-1 against base: 75% [" in version_page


def test_cancelling_from_the_page(as_researcher, models):
    candidate, base = models
    evaluation = services.evaluation_start(candidate=candidate, baselines=[base], prompt_count=2)
    progress = as_researcher.get(reverse("evaluation-progress", args=[evaluation.pk])).json()
    assert progress == {"state": "running", "finished": False, "percent": 0, "text": "sampling the outputs"}
    url = reverse("evaluation-progress", args=[evaluation.pk])
    assert as_researcher.get(url, {"shown": "sampling"}).json()["finished"] is False
    assert as_researcher.get(url, {"shown": "open"}).json()["finished"] is True  # the page reloads to show it
    response = as_researcher.post(reverse("evaluation-cancel", args=[evaluation.pk]))
    assert response.status_code == 302
    evaluation.refresh_from_db()
    assert evaluation.state == Evaluation.State.CANCELLED
    again = as_researcher.post(reverse("evaluation-cancel", args=[evaluation.pk]), follow=True)
    assert "cancelled already" in again.content.decode()


# The charts

def numbers_in(svg, attribute):
    return [float(value) for value in re.findall(rf' {attribute}="(-?[\d.]+)"', svg)]


def view_box(svg):
    _, _, width, height = map(float, re.search(r'viewBox="([^"]+)"', svg).group(1).split())
    return width, height


@pytest.mark.parametrize("rows", [
    [("a", -1.5, -2.5, -0.4), ("b", 0.0, -0.3, 0.2), ("c", 1.2, 0.9, 3.8)],  # negative, zero, positive
    [("only", 0.3, 0.3, 0.3)],  # a single point with no spread
    [("big", 12000.0, 9000.0, 15000.0), ("none yet", None, None, None)],
])
def test_interval_charts_hold_every_value_inside_the_frame(rows):
    svg = str(charts.intervals("t", rows, reference=0))
    width, height = view_box(svg)
    xs = numbers_in(svg, "x1") + numbers_in(svg, "x2") + numbers_in(svg, "cx")
    ys = numbers_in(svg, "y1") + numbers_in(svg, "y2") + numbers_in(svg, "cy")
    assert xs and all(charts.LABEL_WIDTH <= x <= width for x in xs) and all(0 <= y <= height for y in ys)
    assert svg.count("<circle") == sum(1 for row in rows if row[1] is not None)
    if any(row[1] is None for row in rows):
        assert "no judgments yet" in svg


def test_a_fixed_domain_keeps_a_value_beyond_it_on_its_edge():
    svg = str(charts.intervals("t", [("a", 1.4, 0.9, 1.6)], domain=(0, 1)))
    width, _ = view_box(svg)
    assert max(numbers_in(svg, "cx")) <= width - 12


def test_grouped_bars_wrap_their_legend_without_overlap():
    names = [f"policy-{n}" for n in range(7)]
    svg = str(charts.grouped_bars("t", ["flag a", "flag b"], {name: [0.1 * n, 1.0] for n, name in enumerate(names)}))
    width, height = view_box(svg)
    legend = re.findall(r'<text x="([\d.]+)" y="([\d.]+)" class="legend">', svg)
    assert len(legend) == 7 and len(set(legend)) == 7
    assert all(float(x) + charts.CHAR_WIDTH * len("policy-0") <= width and float(y) <= height for x, y in legend)
    widths = numbers_in(svg, "width")
    assert all(0 <= w <= width for w in widths)
    assert "Nothing to draw yet." in str(charts.grouped_bars("t", ["a"], {"m": [None]}))


def test_axis_labels_say_exactly_where_their_lines_are():
    svg = str(charts.intervals("t", [("a", 4.2, 3.9, 4.6)], domain=(1, 7), x_format="{:.0f}".format))
    labels = re.findall(r'<line x1="([\d.]+)"[^>]*class="grid"/><text x="[\d.]+" y="[\d.]+" class="label">(\d+)<', svg)
    assert [label for _, label in labels] == ["1", "2", "3", "4", "5", "6", "7"]
    xs = [float(x) for x, _ in labels]
    assert all(abs((b - a) - (xs[1] - xs[0])) < 0.2 for a, b in zip(xs, xs[1:], strict=False))
    strengths = str(charts.intervals("t", [("a", -2.4, -2.5, -0.4), ("b", 2.9, 1.0, 3.1)], reference=0))
    assert re.findall(r'class="label">([^<]+)<', strengths) == ["-2.00", "0.00", "2.00"]  # round steps, zero on one


def test_the_list_and_a_baselines_page_never_count_in_the_request(as_researcher, models, labeler, monkeypatch):
    candidate, base = models
    evaluation = Evaluation.objects.create(candidate=candidate, state=Evaluation.State.OPEN)
    evaluation.baselines.set([base])
    judged(evaluation, Prompt.objects.first(), {candidate: "a", base: "b"},
           [([[candidate], [base]], {candidate: 5, base: 4})], [labeler])
    recounts = []
    monkeypatch.setattr("labeling.tasks.refresh_evaluation.delay", recounts.append)
    page = as_researcher.get(reverse("evaluations")).content.decode()
    row = page[page.index('class="list evaluations"'):].split("</tr>")[1]
    assert "1 judgment; 1 of 1 task open" in row and "being counted" in row and recounts == [evaluation.pk]
    baseline_page = as_researcher.get(reverse("model-version", args=[base.pk])).content.decode()
    assert "Its numbers are being counted" in baseline_page
    from labeling.tasks import refresh_evaluation

    refresh_evaluation(evaluation.pk)
    page = as_researcher.get(reverse("evaluations")).content.decode()
    assert "vs base: 100% [100%, 100%]" in page
    assert "ppo-1 against base: 100%" in as_researcher.get(reverse("model-version", args=[base.pk])).content.decode()
