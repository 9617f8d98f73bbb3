"""The pages in a real browser (Debian's Chromium), against a live server and a real worker."""

import json

from django.core.cache import cache
from playwright.sync_api import expect

from labeling import services
from labeling.models import ImportJob, Prompt
from tests.browser.conftest import sign_in


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
