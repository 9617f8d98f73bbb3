"""Every export opens in Hugging Face `datasets`, and the training exports feed TRL and `rlhf`."""

import json

import pytest
from datasets import load_dataset

from labeling import services
from labeling.models import Evaluation, Export, LabelerProfile, Role, Task
from tests.factories import CompletionFactory, ModelVersionFactory, PromptFactory, TaskFactory, UserFactory, ranking_task

pytestmark = pytest.mark.django_db

LOADERS = {"jsonl": "json", "jsonl.gz": "json", "parquet": "parquet", "csv": "csv"}
FLAT = {"ppo_prompts": False, "annotations": True, "labeler_stats": True}


def test_the_judgments_of_human_evaluations_export_apart_naming_each_outputs_model(researcher, collected):
    from rlhf.data import load_rankings

    export = build(researcher, "human_eval", "jsonl")
    [row] = [json.loads(line) for line in open(export.file.path)]
    assert (row["candidate"], [c["model_version"] for c in row["completions"]], row["ranks"]) == (
        "ppo-1", ["ppo-1", "base"], [[0], [1]])
    assert row["ratings"][1]["flags"] == ["hallucination"]
    assert len(load_rankings(export.file.path)) == 1
    # The manifest carries each evaluation's numbers as the site shows them, and the leaderboard.
    [evaluation] = export.manifest["evaluations"]
    assert (evaluation["id"], evaluation["candidate"], evaluation["baselines"]) == (row["evaluation_id"], "ppo-1",
                                                                                     ["base"])
    [win] = evaluation["results"]["win_rates"]
    assert (win["baseline"], win["value"], win["n"]) == ("base", 1.0, 1)
    assert [entry["version"] for entry in export.manifest["leaderboard"]] == ["ppo-1", "base"]
    # ... and nowhere else unless asked: the rankings export holds only the rankings of training tasks.
    assert build(researcher, "rankings", "jsonl").row_count == 7
    assert build(researcher, "rankings", "jsonl", include_evaluations=True).row_count == 8


@pytest.fixture
def collected(db):
    """A little of everything: overlap and single rankings with ties, demonstrations, annotations."""
    labelers = [UserFactory(username=f"labeler{n}", role=Role.LABELER) for n in range(3)]
    LabelerProfile.objects.filter(user__in=labelers).update(status="active")
    for n in range(4):
        task = ranking_task(k=4 + n)
        ids = list(task.completions.order_by("id").values_list("id", flat=True))
        for labeler in labelers[: 1 + n % 3]:
            groups = [[ids[0]], ids[1:3], *[[cid] for cid in ids[3:]]]
            services.ranking_save(task=task, labeler=labeler, groups=groups,
                                  ratings={cid: {"rating": 4, "notes": "ok"} for cid in ids})
        task.state = Task.State.COMPLETED
        task.save()
    for n in range(len(labelers)):
        chat = PromptFactory(turns=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                    {"role": "user", "content": f"Name a colour, please ({n})."}])
        TaskFactory(kind=Task.Kind.WRITE_DEMONSTRATION, prompt=chat)
        TaskFactory(kind=Task.Kind.ANNOTATE_PROMPT, prompt=PromptFactory())
    for labeler in labelers:
        while assignment := services.task_lease_next(labeler=labeler):
            if assignment.task.kind == Task.Kind.WRITE_DEMONSTRATION:
                services.demonstration_write(assignment=assignment, labeler=labeler,
                                             turns=[{"role": "assistant", "content": "Teal."}])
            else:
                services.annotation_submit(assignment=assignment, labeler=labeler, flags={"ambiguous": True},
                                           use_case="open_qa", language="en")
    # A human evaluation's judgment: a candidate's output and a baseline's, the candidate ranked first.
    candidate, baseline = ModelVersionFactory(name="ppo-1"), ModelVersionFactory(name="base")
    evaluation = Evaluation.objects.create(candidate=candidate, state=Evaluation.State.OPEN)
    evaluation.baselines.set([baseline])
    prompt = PromptFactory(split="test")
    task = TaskFactory(kind=Task.Kind.RANK_COMPLETIONS, prompt=prompt, evaluation=evaluation)
    outputs = [CompletionFactory(prompt=prompt, model_version=version) for version in (candidate, baseline)]
    task.completions.set(outputs)
    services.ranking_save(task=task, labeler=labelers[0], groups=[[outputs[0].pk], [outputs[1].pk]],
                          ratings={c.pk: {"rating": 6, "hallucination": c == outputs[1]} for c in outputs})
    return labelers


def build(researcher, kind, fmt, **filters):
    export = services.export_create(kind=kind, fmt=fmt, filters=filters, created_by=researcher, queue=False)
    return services.export_run(export_id=export.pk)


CASES = [(kind, fmt) for kind in Export.Kind.values for fmt in Export.Format.values
         if fmt != "csv" or FLAT.get(kind)]


@pytest.mark.parametrize("kind, fmt", CASES)
def test_every_export_loads_with_hugging_face_datasets(researcher, collected, kind, fmt, tmp_path):
    export = build(researcher, kind, fmt)
    assert export.state == "succeeded" and export.row_count > 0
    dataset = load_dataset(LOADERS[fmt], data_files=export.file.path, split="train", cache_dir=str(tmp_path))
    assert dataset.num_rows == export.row_count
    assert dataset.column_names == export.manifest["columns"]


def test_preference_pairs_train_trls_reward_model_for_a_step(researcher, collected, tiny_model, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    export = build(researcher, "preference_pairs", "parquet", margin=True)
    pairs = load_dataset("parquet", data_files=export.file.path, split="train", cache_dir=str(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    args = RewardConfig(output_dir=str(tmp_path / "rm"), max_steps=1, per_device_train_batch_size=4,
                        report_to="none", save_strategy="no", use_cpu=True, bf16=False,
                        gradient_checkpointing=False, disable_tqdm=True)
    trainer = RewardTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer)
    result = trainer.train()
    assert trainer.state.global_step == 1 and result.training_loss > 0


def test_demonstrations_train_trls_sft_model_for_a_step(researcher, collected, tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    export = build(researcher, "sft", "jsonl.gz")
    demonstrations = load_dataset("json", data_files=export.file.path, split="train", cache_dir=str(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=2,
                     report_to="none", save_strategy="no", use_cpu=True, bf16=False, disable_tqdm=True,
                     assistant_only_loss=False)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args,
                         train_dataset=demonstrations, processing_class=tokenizer)
    result = trainer.train()
    assert trainer.state.global_step == 1 and result.training_loss > 0


def test_rankings_and_demonstrations_read_in_rlhf(researcher, collected):
    from rlhf.data import load_demonstrations, load_prompts, load_rankings

    rankings = load_rankings(build(researcher, "rankings", "parquet").file.path)
    assert sorted(len(r.completions) for r in rankings) == [4, 5, 5, 6, 6, 6, 7]
    assert all(r.groups[1] == [1, 2] for r in rankings)  # the tie survives
    # C(K, 2) pairs less the tie, per ranking
    assert len(load_rankings(build(researcher, "preference_pairs", "jsonl").file.path)) == 5 + 2 * 9 + 3 * 14 + 20
    demonstrations = load_demonstrations(build(researcher, "sft", "jsonl").file.path)
    assert [m["content"] for m in demonstrations[0]] == ["Hi", "Hello!", "Name a colour, please (0).", "Teal."]
    assert len(load_prompts(build(researcher, "ppo_prompts", "jsonl").file.path)) == 11  # the evaluation's too
