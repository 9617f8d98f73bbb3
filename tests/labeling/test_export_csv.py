"""CSV exports open in spreadsheets, so text that a spreadsheet would run as a formula is written as text."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labeling import services
from labeling.exports.writers import CsvWriter
from labeling.models import LabelerProfile
from tests.factories import CompletionFactory, PromptFactory, TaskFactory, ranking_task

pytestmark = pytest.mark.django_db

FORMULAS = ["=HYPERLINK(\"http://evil.example\", \"click\")", "+1+1", "-2+3", "@SUM(A1:A9)", "\tcmd", "\rcmd"]


def build(researcher, kind, fmt, **filters):
    export = services.export_create(kind=kind, fmt=fmt, filters=filters, created_by=researcher, queue=False)
    return services.export_run(export_id=export.pk)


def csv_rows(export):
    with open(export.file.path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def jsonl_rows(export):
    with open(export.file.path, encoding="utf-8") as file:
        return [json.loads(line) for line in file]


@pytest.fixture
def formula_ranking(labeler):
    """A ranking task whose prompt and completions all start like formulas, ranked best to worst."""
    prompt = PromptFactory(text=FORMULAS[0])
    task = TaskFactory(kind="rank_completions", prompt=prompt)
    completions = [CompletionFactory(prompt=prompt, text=text) for text in FORMULAS[1:5]]
    task.completions.set(completions)
    services.ranking_save(task=task, labeler=labeler, groups=[[c.pk] for c in completions],
                          ratings={c.pk: {"rating": 4} for c in completions})
    return task


def test_csv_preference_pairs_quote_every_cell_that_starts_like_a_formula(researcher, formula_ranking):
    rows = csv_rows(build(researcher, "preference_pairs", "csv", style="standard"))
    assert len(rows) == 6
    assert {row["prompt"] for row in rows} == {"'" + FORMULAS[0]}
    assert {row["chosen"] for row in rows} | {row["rejected"] for row in rows} == {"'" + t for t in FORMULAS[1:5]}


def test_jsonl_and_parquet_keep_the_text_exact(researcher, formula_ranking):
    rows = jsonl_rows(build(researcher, "preference_pairs", "jsonl", style="standard"))
    assert {row["prompt"] for row in rows} == {FORMULAS[0]}
    assert {row["chosen"] for row in rows} | {row["rejected"] for row in rows} == set(FORMULAS[1:5])
    table = pq.read_table(build(researcher, "preference_pairs", "parquet", style="standard").file.path).to_pydict()
    assert set(table["prompt"]) == {FORMULAS[0]} and set(table["chosen"]) | set(table["rejected"]) == set(FORMULAS[1:5])


@pytest.mark.parametrize("text", FORMULAS)
def test_csv_annotations_quote_a_prompt_that_starts_like_a_formula(researcher, labeler, text):
    LabelerProfile.objects.filter(user=labeler).update(status="active")
    TaskFactory(kind="annotate_prompt", prompt=PromptFactory(text=text))
    services.annotation_submit(assignment=services.task_lease_next(labeler=labeler), labeler=labeler,
                               flags={"ambiguous": True}, use_case="brainstorming", language="en")
    (row,) = csv_rows(build(researcher, "annotations", "csv"))
    assert row["prompt"] == "'" + text
    assert (row["use_case"], row["ambiguous"]) == ("brainstorming", "True")  # ordinary cells are untouched


def test_csv_leaves_ordinary_text_alone(researcher, labeler):
    task = ranking_task(k=4)
    completions = list(task.completions.order_by("id"))
    services.ranking_save(task=task, labeler=labeler, groups=[[c.pk] for c in completions],
                          ratings={c.pk: {"rating": 4} for c in completions})
    rows = csv_rows(build(researcher, "preference_pairs", "csv", style="standard"))
    assert {row["prompt"] for row in rows} == {task.prompt.text}
    assert not any(row["chosen"].startswith("'") for row in rows)


def test_only_text_is_neutralised_so_negative_numbers_stay_numbers(tmp_path):
    schema = pa.schema([("count", pa.int64()), ("share", pa.float64()), ("done", pa.bool_()), ("note", pa.string()),
                        ("empty", pa.string())])
    writer = CsvWriter(tmp_path / "rows.csv", schema)
    writer.write({"count": -3, "share": -0.25, "done": False, "note": "-3", "empty": None})
    writer.close()
    (row,) = csv.DictReader(open(tmp_path / "rows.csv", newline=""))
    assert row == {"count": "-3", "share": "-0.25", "done": "False", "note": "'-3", "empty": ""}
