import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from labeling.models import Evaluation, Export, ImportJob, ModelVersion, Prompt, TrainingRun

pytestmark = pytest.mark.django_db

# Every page, and the roles that may open it.
PAGES = {
    "labeler-home": {"labeler"},
    "my-work": {"labeler"},
    "research-home": {"researcher", "admin"},
    "imports": {"researcher", "admin"},
    "import-detail": {"researcher", "admin"},
    "import-progress": {"researcher", "admin"},
    "exports": {"researcher", "admin"},
    "export-detail": {"researcher", "admin"},
    "export-progress": {"researcher", "admin"},
    "training-runs": {"researcher", "admin"},
    "training-run": {"researcher", "admin"},
    "training-run-progress": {"researcher", "admin"},
    "model-versions": {"researcher", "admin"},
    "model-version": {"researcher", "admin"},
    "evaluations": {"researcher", "admin"},
    "evaluation": {"researcher", "admin"},
    "evaluation-progress": {"researcher", "admin"},
    "leaderboard": {"researcher", "admin"},
    "review-queue": {"admin"},
    "team-quality": {"admin"},
    "labeler-quality": {"admin"},
    "admin:index": {"admin"},
    "admin:labeling_prompt_changelist": {"admin"},
}


@pytest.fixture
def job(researcher, labeler):
    """An import job, an export, a training run, a labeler, a model version and its evaluation, for the pages about
    one of them."""
    version = ModelVersion.objects.create(kind="policy", name="ppo-9", status="ready", artifact_path="x")
    return {"import": ImportJob.objects.create(filename="p.jsonl", format="jsonl", created_by=researcher).pk,
            "export": Export.objects.create(kind="rankings", created_by=researcher).pk,
            "run": TrainingRun.objects.create(kind="reward").pk, "labeler": labeler.pk, "version": version.pk,
            "evaluation": Evaluation.objects.create(candidate=version).pk}


ABOUT = {"import-detail": "import", "import-progress": "import", "export-detail": "export",
         "export-progress": "export", "training-run": "run", "training-run-progress": "run",
         "labeler-quality": "labeler", "model-version": "version", "evaluation": "evaluation",
         "evaluation-progress": "evaluation"}


def url_of(name, job):
    return reverse(name, args=[job[ABOUT[name]]]) if name in ABOUT else reverse(name)


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("role", ["labeler", "researcher", "admin", "none"])
def test_every_page_admits_its_roles_and_refuses_the_others(client, users, job, page, role):
    client.force_login(users[role])
    response = client.get(url_of(page, job))
    if role in PAGES[page]:
        assert response.status_code == 200
    elif page.startswith("admin:"):
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    else:
        assert response.status_code == 403
        assert b"not for your role" in response.content


@pytest.mark.parametrize("page", [p for p in PAGES if not p.startswith("admin:")])
def test_anonymous_visitors_are_sent_to_sign_in(client, job, page):
    response = client.get(url_of(page, job))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize(
    "role, start", [("labeler", "labeler-home"), ("researcher", "research-home"), ("admin", "team-quality"),
                    ("none", "no-role")]
)
def test_each_role_lands_on_its_start_page_after_signing_in(client, users, role, start):
    response = client.post(reverse("login"), {"username": users[role].username, "password": "password"})
    assert response.status_code == 302
    assert client.get(response["Location"])["Location"] == reverse(start)


def test_research_home_shows_the_make_up_of_the_dataset(as_researcher):
    Prompt.objects.create(text="a", split="train", source="customer", use_case="chat")
    Prompt.objects.create(text="b", split="test", source="customer", use_case="chat")
    page = as_researcher.get(reverse("research-home")).content.decode()
    assert "2 prompts" in page
    assert "Chat" in page and "100.0%" in page  # use cases as imported
    customer_row = page[page.index("<td>Customer</td>"):].split("</tr>")[0]
    assert [cell.split("<")[0] for cell in customer_row.split('class="num">')[1:]] == ["1", "0", "1"]


def upload(client, content, name="prompts.jsonl", **extra):
    return client.post(reverse("imports"), {"file": SimpleUploadedFile(name, content), **extra})


def test_uploading_a_small_file_imports_it_and_shows_the_report(as_researcher):
    content = b'{"prompt": "Good one"}\n{"prompt": ""}\n{"prompt": "good ONE"}\n'
    response = upload(as_researcher, content)
    job = ImportJob.objects.get()
    assert response["Location"] == job.get_absolute_url()
    page = as_researcher.get(job.get_absolute_url()).content.decode()
    assert job.state == "succeeded"
    assert '<dd class="accepted">1</dd>' in page
    assert "the prompt is empty" in page
    assert "duplicate of line 1" in page


def test_a_refused_file_says_why_on_the_report(as_researcher):
    upload(as_researcher, b"not json at all\n")
    page = as_researcher.get(ImportJob.objects.get().get_absolute_url()).content.decode()
    assert "Nothing was imported" in page
    assert "Line 1 is not valid JSON" in page


def test_an_unusable_upload_is_a_400_with_the_reason_next_to_the_field(as_researcher):
    response = upload(as_researcher, b"a,b", name="prompts.xlsx")
    assert response.status_code == 400
    assert "neither JSONL (.jsonl) nor CSV" in response.content.decode()
    assert not ImportJob.objects.exists()


def test_a_large_file_goes_to_a_worker_and_the_page_shows_progress(as_researcher, settings):
    settings.PROMPT_IMPORT_INLINE_MAX_BYTES = 10
    response = upload(as_researcher, b'{"prompt": "A prompt long enough to queue"}\n')
    job = ImportJob.objects.get()
    assert job.state == "queued"
    page = as_researcher.get(response["Location"]).content.decode()
    assert "<progress" in page
    progress = json.loads(as_researcher.get(reverse("import-progress", args=[job.pk])).content)
    assert progress == {"state": "queued", "finished": False, "rows_read": 0, "bytes_read": 0,
                        "size_bytes": job.size_bytes, "percent": 0, "text": "0 rows read"}


def test_posting_the_form_without_a_file_says_a_file_is_needed(as_researcher):
    response = as_researcher.post(reverse("imports"), {})
    assert response.status_code == 400
    assert "This field is required." in response.content.decode()


@pytest.mark.parametrize("name", ["work-next", "assignment", "assignment-skip", "my-work-detail"])
@pytest.mark.parametrize("role", ["researcher", "admin", "none"])
def test_work_pages_refuse_everyone_but_labelers(client, users, name, role):
    client.force_login(users[role])
    url = reverse(name) if name == "work-next" else reverse(name, args=[1])
    assert client.post(url).status_code == 403


def test_a_researcher_asks_for_an_export_on_the_page_and_downloads_it(as_researcher, labeler):
    from labeling import services
    from tests.factories import ranking_task

    task = ranking_task(k=4)
    ids = list(task.completions.order_by("id").values_list("id", flat=True))
    services.ranking_save(task=task, labeler=labeler, groups=[[i] for i in ids],
                          ratings={i: {"rating": 3} for i in ids})
    response = as_researcher.post(reverse("exports"), {"kind": "preference_pairs", "format": "jsonl",
                                                       "split": ["train"], "margin": "on"})
    export = Export.objects.get()
    assert response.status_code == 302 and response["Location"] == export.get_absolute_url()
    assert export.filters == {"split": ["train"], "margin": True}
    page = as_researcher.get(export.get_absolute_url()).content.decode()
    assert "<progress" in page and "Waiting for a worker" in page
    assert as_researcher.get(reverse("export-download", args=[export.pk])).status_code == 404

    services.export_run(export_id=export.pk)
    page = as_researcher.get(export.get_absolute_url()).content.decode()
    assert Export.objects.get().sha256 in page and "Download" in page
    download = as_researcher.get(reverse("export-download", args=[export.pk]))
    assert download.status_code == 200 and b"".join(download.streaming_content).count(b"\n") == 6


def test_a_filter_that_does_not_fit_the_kind_is_a_400_saying_so(as_researcher):
    response = as_researcher.post(reverse("exports"), {"kind": "sft", "format": "jsonl", "margin": "on"})
    assert response.status_code == 400
    assert "Filter `margin` does not apply to SFT demonstrations exports." in response.content.decode()
    assert not Export.objects.exists()


def test_only_admins_see_the_option_to_export_usernames(client, researcher, admin_user):
    client.force_login(researcher)
    assert "with_identities" not in client.get(reverse("exports")).content.decode()
    client.force_login(admin_user)
    assert "with_identities" in client.get(reverse("exports")).content.decode()


def test_the_dashboard_draws_agreement_throughput_annotations_and_model_metrics(as_researcher, users):
    from labeling import selectors, services
    from labeling.models import LabelerProfile, ModelVersion, Task
    from tests.factories import TaskFactory, UserFactory, ranking_task

    carol = UserFactory(username="carol", role="labeler")
    task = ranking_task(k=4)
    ids = list(task.completions.order_by("id").values_list("id", flat=True))
    for labeler, order in [(users["labeler"], ids), (carol, [ids[1], ids[0], ids[2], ids[3]])]:
        services.ranking_save(task=task, labeler=labeler, groups=[[i] for i in order],
                              ratings={i: {"rating": 4} for i in ids})
    task.state = Task.State.COMPLETED
    task.save()
    LabelerProfile.objects.filter(user=carol).update(status="active")
    TaskFactory(kind="annotate_prompt")
    assignment = services.task_lease_next(labeler=carol)
    services.annotation_submit(assignment=assignment, labeler=carol, flags={"closed_domain": True},
                               use_case="closed_qa", language="en")
    ModelVersion.objects.create(kind="reward", name="rm-1", metrics={"accuracy": 0.64})
    ModelVersion.objects.create(kind="reward", name="rm-2", metrics={"accuracy": 0.71}, status="active")
    ModelVersion.objects.create(kind="policy", name="ppo-1", metrics={"reward": 0.4, "kl": 2.5})

    dashboard = selectors.dataset_dashboard()
    ((week, agreement, tasks),) = dashboard["agreement"]
    assert (agreement, tasks) == (5 / 6, 1)  # the two rankings differ on one of six pairs
    assert dashboard["throughput"]["totals"] == [("Annotate a prompt", 1)]
    assert ("Closed domain", 1, 100.0) in dashboard["annotation_shares"]
    assert dashboard["reward_models"] == [("rm-1", "training", 0.64), ("rm-2", "active", 0.71)]

    page = as_researcher.get(reverse("research-home")).content.decode()
    for title in ("Prompts per split and source", "Agreement between labelers, by week", "Results submitted per day",
                  "Reward model accuracy on validation comparisons", "Policy reward and KL"):
        assert f'aria-label="{title}"' in page, title
    assert "83%" in page and "rm-2" in page and "0.710" in page
    # A point per week of agreement (one), reward model (two), and policy for its reward and its KL (one each).
    assert page.count("<circle") == 5 and "&lt;" not in page and ">KL, nats<" in page


def test_a_user_creates_and_replaces_their_api_token(client, researcher, no_role_user):
    from rest_framework.authtoken.models import Token

    client.force_login(researcher)
    assert "no API token yet" in client.get(reverse("api-token")).content.decode()
    client.post(reverse("api-token"))
    first = Token.objects.get(user=researcher).key
    assert first in client.get(reverse("api-token")).content.decode()
    client.post(reverse("api-token"))
    assert Token.objects.get(user=researcher).key != first
    client.force_login(no_role_user)
    assert client.get(reverse("api-token")).status_code == 403


def test_a_researcher_starts_a_run_on_the_page_and_cancels_it(as_researcher, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued:
        response = as_researcher.post(reverse("training-runs"), {"kind": "reward"})
    run = TrainingRun.objects.get()
    assert response["Location"] == run.get_absolute_url() and len(queued) == 1
    assert "Waiting for a GPU worker" in as_researcher.get(run.get_absolute_url()).content.decode()
    again = as_researcher.post(reverse("training-runs"), {"kind": "reward"})
    assert again.status_code == 400 and f"already queued or running (#{run.pk}, queued)" in again.content.decode()
    as_researcher.post(reverse("training-run-cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.state == "cancelled"


@pytest.mark.parametrize("options, error", [
    ("epoch: 2", "Options: unknown option &#x27;epoch&#x27;; did you mean &#x27;epochs&#x27;?"),
    ("epochs: two", "Options: option &#x27;epochs&#x27; must be a whole number, not &#x27;two&#x27;"),
    ("epochs: 2\njust words", "Line 2 is not name: value, such as epochs: 2."),
    ("[2]", "Line 1 is not name: value, such as epochs: 2."),
    ('{"epochs": 2', "The options are not a JSON object: Expecting &#x27;,&#x27; delimiter at character 12."),
    ('{"betas": [0.8, 1.2]}', "option &#x27;betas&#x27; must be two numbers from 0 up to (not including) 1"),
    ("pooling: max", "option &#x27;pooling&#x27; must be one of mean, last, not &#x27;max&#x27;"),
    ("epochs: 0\nfit_head: false",
     "options &#x27;epochs&#x27; 0 and &#x27;fit_head&#x27; false leave nothing to train"),
])
def test_a_run_with_bad_options_is_refused_on_the_page_naming_them(as_researcher, options, error):
    response = as_researcher.post(reverse("training-runs"), {"kind": "reward", "options": options})
    assert response.status_code == 400 and error in response.content.decode()
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize("options, error", [
    ("{" + '"betas": ' + "[" * 1500 + "]" * 1500 + "}", "The options nest too deeply"),
    ("betas: " + "[" * 1500 + "]" * 1500, "must be a pair of numbers"),
    ("epochs: 1" + "0" * 30, "option &#x27;epochs&#x27; is too large"),
    ("epochs: 2\x00", "Null characters are not allowed."),
])
def test_hostile_options_on_the_page_are_a_400_not_a_500(as_researcher, options, error):
    response = as_researcher.post(reverse("training-runs"), {"kind": "reward", "options": options})
    assert response.status_code == 400 and error in response.content.decode()
    assert not TrainingRun.objects.exists()


def test_a_researcher_starts_a_run_with_options_on_the_page(as_researcher):
    options = "epochs: 2\nlr: 1e-4\n\ndtype: bfloat16"
    as_researcher.post(reverse("training-runs"), {"kind": "reward", "options": options})
    assert TrainingRun.objects.get().config == {"epochs": 2, "lr": 1e-4, "dtype": "bfloat16"}


def test_a_finished_run_shows_its_curves_gate_and_model(as_researcher):
    run = TrainingRun.objects.create(
        kind="reward", state="succeeded", step=3, total_steps=3, log="train-rm: 100%",
        history=[{"step": n, "loss": 0.7 - n / 10, "accuracy": 0.5 + n / 10} for n in (1, 2, 3)]
        + [{"step": 3, "split": "valid", "accuracy": 0.81, "pairs": 30}],
        gate={"passed": False, "reason": "Validation accuracy 0.810 against the active rm-1's 0.850."},
    )
    ModelVersion.objects.create(kind="reward", name="reward-7", status="rejected", training_run=run)
    page = as_researcher.get(run.get_absolute_url()).content.decode()
    assert page.count("<polyline") == 2 and 'aria-label="Loss"' in page and 'aria-label="Accuracy"' in page
    assert "Not activated" in page and "against the active rm-1&#x27;s 0.850" in page
    assert "reward-7" in page and "train-rm: 100%" in page and '<td class="num">0.81</td>' in page


def policy_lineage():
    """A finished policy run: SFT sft-2 -> reward-5 -> ppo-3, with its ptx data an export of demonstrations."""
    sft = ModelVersion.objects.create(kind="sft", name="sft-2", status="active")
    reward = ModelVersion.objects.create(kind="reward", name="reward-5", status="active")
    ptx = Export.objects.create(kind="sft", state="succeeded", row_count=12)
    run = TrainingRun.objects.create(kind="ppo", state="succeeded", base_model=sft, reference_model=sft,
                                     reward_model=reward, ptx_export=ptx)
    ModelVersion.objects.create(kind="policy", name="ppo-3", status="active", parent=sft, training_run=run,
                                metrics={"win_rate": 0.62}, status_reason="Win rate 62.0% over the active base")
    return run, ptx


def test_the_models_page_shows_each_kind_with_its_lineage(as_researcher):
    run, ptx = policy_lineage()
    page = as_researcher.get(reverse("model-versions")).content.decode()
    row = page[page.index(">ppo-3</a></strong>"):].split("</tr>")[0]
    assert "Active" in row and f"run #{run.pk}" in row and "win_rate 0.6200" in row
    assert "SFT sft-2<br>" in row and "reference SFT sft-2, reward model reward-5, ptx" in row
    assert f'href="{ptx.get_absolute_url()}">export #{ptx.pk}</a>' in row


def test_a_policy_run_page_shows_its_start_reference_reward_model_and_ptx_data(as_researcher):
    run, ptx = policy_lineage()
    page = as_researcher.get(run.get_absolute_url()).content.decode()
    assert "<dt>Started from</dt><dd>SFT sft-2</dd>" in page and "<dt>KL reference</dt><dd>SFT sft-2</dd>" in page
    assert "<dd>reward-5 (the value model starts from it)</dd>" in page
    assert f"export #{ptx.pk}</a>, SFT demonstrations (12 rows)" in page
