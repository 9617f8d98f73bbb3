"""A researcher starts a human evaluation in Chromium, a real GPU worker samples it, a labeler judges its tasks,
and the researcher reads the figures, the leaderboard and the version's page. Screenshots land in
var/test-output/screenshots."""

import pytest
from playwright.sync_api import expect

from labeling import services
from labeling.models import Evaluation, Guidelines, LabelerProfile, ModelVersion, Prompt, Ranking
from tests.browser.conftest import shot, sign_in
from tests.factories import ModelVersionFactory, PromptFactory


@pytest.fixture
def world(labeler, researcher, transactional_db, tiny_model, settings):
    settings.POLICY_MODEL = str(tiny_model)
    settings.OVERLAP_SHARE = 0
    guidelines = Guidelines.objects.create(version=1, title="Judging", body="Prefer the helpful, honest answer.")
    LabelerProfile.objects.filter(user=labeler).update(status=LabelerProfile.Status.ACTIVE, languages=["en"],
                                                       guidelines_acknowledged=guidelines)
    base = services.model_version_active(ModelVersion.Kind.POLICY)
    candidate = ModelVersionFactory(kind=ModelVersion.Kind.POLICY, name="ppo-1", status="ready",
                                    artifact_path=str(tiny_model))
    for n in range(2):
        PromptFactory(split=Prompt.Split.TEST, text=f"Name a colour you like ({n}).", created_by=researcher)
    return labeler, researcher, candidate, base


@pytest.mark.slow
def test_a_researcher_starts_an_evaluation_a_labeler_judges_it_and_the_researcher_reads_it(
        open_page, world, start_worker, worker_cache, tiny_model):
    labeler, researcher, candidate, base = world
    start_worker("sampling,default", POLICY_MODEL=tiny_model, OVERLAP_SHARE=0, SAMPLE_MAX_NEW_TOKENS=8)
    desk = open_page()
    sign_in(desk, researcher.username)
    desk.get_by_role("link", name="Evaluations").click()
    desk.get_by_label("Candidate").select_option(label="Policy ppo-1 (ready)")
    desk.get_by_label("Policy base (active)").check()
    desk.get_by_label("Prompts").fill("2")
    desk.get_by_role("button", name="Start the evaluation").click()
    expect(desk.get_by_role("heading", name="Evaluation #")).to_contain_text("ppo-1 against base")
    # The page follows the worker: it reloads itself when the outputs are sampled and the tasks open.
    expect(desk.get_by_role("heading", name="Open for judgments")).to_be_visible(timeout=90_000)
    evaluation = Evaluation.objects.get()
    assert evaluation.tasks.count() == 2

    bench = open_page()
    sign_in(bench, labeler.username)
    bench.get_by_role("button", name="Start labeling").click()
    for _ in range(2):  # the candidate's output first, both rated; ties allowed but not used
        expect(bench.get_by_text("Each output comes from a different model.")).to_be_visible()
        ids = {output.get_attribute("id").removeprefix("output-"): int(output.get_attribute("data-completion"))
               for output in bench.locator(".output").all()}
        from labeling.models import Completion

        makers = dict(Completion.objects.filter(pk__in=ids.values()).values_list("pk", "model_version_id"))
        order = sorted(ids, key=lambda letter: makers[ids[letter]] != candidate.pk)
        for letter in ids:
            bench.locator(f"#output-{letter}").get_by_label("6" if letter == order[0] else "3", exact=True).check()
        bench.locator(f"#output-{order[1]}").get_by_label("Hallucination").check()
        for rank, letter in enumerate(order, start=1):
            bench.locator(f".chip[data-letter='{letter}']").focus()
            bench.keyboard.press(str(rank))
        shot(bench, "evaluation_task")
        bench.get_by_role("button", name="Submit").click()
    expect(bench.get_by_text("Nothing is waiting for you right now")).to_be_visible()
    assert Ranking.objects.filter(task__evaluation=evaluation).count() == 2

    # The page shows the last numbers while a worker counts the new judgments (tests/labeling/test_evaluations.py),
    # and reloads itself until it shows them.
    desk.reload()
    expect(desk.locator(".summary")).to_contain_text("2 judgments on 2 prompts", timeout=30_000)
    table = desk.locator("table.win-rates")
    expect(table).to_contain_text("100% [100%, 100%]")
    expect(desk.locator("#win-rates svg circle")).to_have_count(1)
    expect(desk.locator("table.models-table")).to_contain_text("6.0 [6.0, 6.0]")
    shot(desk, "evaluation_page")
    desk.get_by_role("link", name="Leaderboard").first.click()
    expect(desk.locator("table.leaderboard tbody tr").first).to_contain_text("ppo-1")
    shot(desk, "leaderboard")
    desk.locator("table.leaderboard").get_by_role("link", name="ppo-1").click()
    expect(desk.get_by_text("#1 of 2")).to_be_visible()
