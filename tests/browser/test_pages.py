"""The pages in a real browser (Debian's Chromium), against a live server and a real worker."""

import hashlib
import json

import pyarrow.parquet as pq
from django.core.cache import cache
from playwright.sync_api import expect

from labeling import services
from labeling.models import Export, ImportJob, Prompt
from tests.browser.conftest import shot, sign_in
from tests.factories import ranking_task


def test_a_researcher_uploads_a_large_file_and_watches_it_import(page, worker, researcher, settings, tmp_path):
    settings.PROMPT_IMPORT_INLINE_MAX_BYTES = 1_000
    rows = [{"prompt": f"Suggest a name for a bakery on street number {i}", "source_user_id": f"u{i % 40}"}
            for i in range(2_000)]
    rows += [{"prompt": ""}, {"prompt": "Email me at ann@example.com"}]
    upload = tmp_path / "bakeries.jsonl"
    upload.write_text("\n".join(json.dumps(row) for row in rows))

    sign_in(page, researcher.username)
    expect(page.get_by_role("heading", name="Dataset")).to_be_visible()
    page.get_by_role("link", name="Import prompts").first.click()
    page.get_by_label("File", exact=True).set_input_files(upload)
    page.get_by_role("button", name="Import").click()

    expect(page.get_by_text("is large, so a worker imports it")).to_be_visible()
    expect(page.locator("#report")).to_be_visible(timeout=90_000)  # the page reloads when the job is done
    expect(page.locator("dd.accepted")).to_have_text("2,001")
    expect(page.locator("table.row-errors")).to_contain_text("the prompt is empty")
    page.screenshot(path=tmp_path / "import-report.png", full_page=True)
    assert ImportJob.objects.get().state == "succeeded"
    assert Prompt.objects.get(text__startswith="Email me").text == "Email me at [EMAIL]"


def test_a_labeler_lands_on_the_work_page_and_is_kept_out_of_research(page, labeler):
    sign_in(page, labeler.username)
    expect(page.get_by_role("heading", name=f"Hello, {labeler.username}")).to_be_visible()
    expect(page.get_by_role("link", name="Import prompts")).to_have_count(0)
    response = page.goto("/research/imports/")
    assert response.status == 403
    expect(page.get_by_role("heading", name="This page is not for your role")).to_be_visible()


def test_the_import_page_shows_progress_and_then_the_report(page, researcher, settings, tmp_path, transactional_db):
    settings.PROMPT_IMPORT_INLINE_MAX_BYTES = 100
    upload = tmp_path / "few.jsonl"
    upload.write_text("\n".join(json.dumps({"prompt": f"Name a colour, take {i}"}) for i in range(20)))
    sign_in(page, researcher.username)
    page.goto("/research/imports/")
    page.get_by_label("File", exact=True).set_input_files(upload)
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_text("Waiting for a worker.")).to_be_visible()

    job = ImportJob.objects.get()
    ImportJob.objects.filter(pk=job.pk).update(state="running")
    cache.set(job.progress_cache_key, {"rows_read": 10, "bytes_read": job.size_bytes // 2})
    expect(page.get_by_text("50% · 10 rows read")).to_be_visible()
    expect(page.locator("progress")).to_have_attribute("value", "50")

    services.import_job_run(job_id=job.pk)  # what the worker does
    expect(page.locator("dd.accepted")).to_have_text("20")


def test_a_researcher_exports_rankings_and_downloads_the_snapshot(page, worker, researcher, labeler, tmp_path):
    task = ranking_task(k=5)
    ids = list(task.completions.order_by("id").values_list("id", flat=True))
    services.ranking_save(task=task, labeler=labeler, groups=[[ids[0]], ids[1:3], [ids[3]], [ids[4]]],
                          ratings={i: {"rating": 4} for i in ids})

    sign_in(page, researcher.username)
    page.get_by_role("link", name="Exports").first.click()
    page.get_by_label("Kind").select_option("preference_pairs")
    page.get_by_label("Format").select_option("parquet")
    page.get_by_label("Train").check()
    page.get_by_label("Margin column (rank distance)").check()
    page.get_by_role("button", name="Export").click()

    expect(page.locator("#report")).to_be_visible(timeout=90_000)  # the page reloads when the worker is done
    export = Export.objects.get()
    expect(page.locator("code.sha256")).to_have_text(export.sha256)
    expect(page.locator("dl.facts")).to_contain_text("9")  # C(5, 2) pairs less the tie
    shot(page, "export")
    with page.expect_download() as download:
        page.get_by_role("link", name=f"Download {export.filename}").click()
    saved = tmp_path / export.filename
    download.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == export.sha256
    assert pq.read_table(saved).num_rows == 9


def test_the_dashboard_draws_its_charts_with_the_numbers_a_click_away(page, researcher, labeler, other_labeler,
                                                                      transactional_db):
    task = ranking_task(k=4)
    ids = list(task.completions.order_by("id").values_list("id", flat=True))
    for person, order in [(labeler, ids), (other_labeler, ids[::-1])]:
        services.ranking_save(task=task, labeler=person, groups=[[i] for i in order],
                              ratings={i: {"rating": 4} for i in ids})
    sign_in(page, researcher.username)
    agreement = page.locator("#agreement")
    expect(agreement.locator("svg.chart circle")).to_have_count(1)  # one week: a point
    expect(agreement.locator("table")).not_to_be_visible()
    agreement.get_by_text("Numbers").click()
    expect(agreement.locator("table")).to_contain_text("0%")  # the two rankings are opposite
    shot(page, "dashboard")


def test_a_training_run_page_follows_the_run_and_shows_its_curves(page, researcher, transactional_db):
    from django.utils import timezone

    from labeling.models import ModelVersion, TrainingRun

    run = TrainingRun.objects.create(kind="reward", state="running", started_at=timezone.now(), total_steps=40,
                                     trigger="500+ new rankings")
    sign_in(page, researcher.username)
    page.goto(run.get_absolute_url())
    expect(page.get_by_role("heading", name="Training")).to_be_visible()
    history = [{"step": n, "loss": 0.69 - n / 100, "accuracy": 0.5 + n / 100} for n in range(1, 11)]
    TrainingRun.objects.filter(pk=run.pk).update(step=10, history=history)
    expect(page.locator(".progress-text")).to_contain_text("step 10 of 40")
    expect(page.locator("progress")).to_have_attribute("value", "25")

    TrainingRun.objects.filter(pk=run.pk).update(
        state="succeeded", step=40, history=history,
        gate={"passed": True, "reason": "First reward model: validation accuracy 0.720."})
    ModelVersion.objects.create(kind="reward", name=f"reward-{run.pk}", status="active", training_run=run)
    expect(page.locator("#gate")).to_contain_text("validation accuracy 0.720", timeout=15_000)  # reloads when done
    expect(page.locator("svg.chart polyline")).to_have_count(2)
    shot(page, "training-run")
