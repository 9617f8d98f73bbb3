import json
import statistics

import pytest
import torch

from rlhf.config import EvalRewardConfig, RewardConfig
from rlhf.data import load_rankings
from rlhf.models import RewardModel, encode_for_reward, load_tokenizer, reward_batch
from rlhf.train_reward import (
    RewardTrainer,
    encode_ranking,
    eval_reward,
    fit_linear_reward,
    length_baselines,
    score,
    train_reward,
)
from tests.rlhf.conftest import marker_rankings, write_jsonl


def config(tmp_path, tiny_model, **overrides):
    values = {"data": str(write_jsonl(tmp_path / "train.jsonl", marker_rankings(96))),
              "valid_data": str(write_jsonl(tmp_path / "valid.jsonl", marker_rankings(40, start=1000, seed=1))),
              "model": str(tiny_model), "output": str(tmp_path / "rm"), "epochs": 3, "lr": 1e-3, "batch_size": 8,
              "device": "cpu"}
    return RewardConfig(**(values | overrides))


@pytest.mark.parametrize("pooling, fit_head", [("mean", True), ("last", False)])
def test_a_reward_model_learns_a_planted_preference(tmp_path, tiny_model, pooling, fit_head):
    summary = train_reward(config(tmp_path, tiny_model, pooling=pooling, fit_head=fit_head))
    assert RewardModel.from_pretrained(summary["output"]).pooling == pooling
    metrics = eval_reward(EvalRewardConfig(model=summary["output"], data=str(tmp_path / "valid.jsonl")))
    assert metrics["accuracy"] >= 0.95
    assert metrics["pairs"] == 40 * 3
    run = json.loads((tmp_path / "rm" / "run.json").read_text())
    assert run["finished"] and run["dataset"]["sha256"] and run["seed"] == 1234
    steps = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "split" not in s] == list(range(1, 37))
    assert len([s for s in steps if s.get("split") == "valid"]) == 3


def test_training_only_the_top_layers_leaves_the_rest_as_it_was_and_still_fits(tmp_path, tiny_model):
    summary = train_reward(config(tmp_path, tiny_model, train_top_layers=1))
    before = RewardModel.from_pretrained(str(tiny_model)).model.state_dict()
    after = RewardModel.from_pretrained(summary["output"]).model.state_dict()
    changed = {name for name in before if name in after and not torch.equal(before[name], after[name])}
    assert changed and all(".h.1." in name or name.startswith(("score", "transformer.ln_f")) for name in changed)
    assert not any(".h.0." in name or "wte" in name or "wpe" in name for name in changed)
    # On a random 2-layer model one block cannot learn the marker itself (it learns the training items' tokens);
    # bench/reward_model.py measures what the top layers of a trained model learn.
    metrics = eval_reward(EvalRewardConfig(model=summary["output"], data=str(tmp_path / "train.jsonl")))
    assert metrics["accuracy"] >= 0.9


def test_one_forward_row_per_completion_not_per_pair(tmp_path, tiny_model):
    cfg = config(tmp_path, tiny_model, batch_size=3)
    tokenizer = load_tokenizer(tiny_model)
    model = RewardModel.from_pretrained(tiny_model)
    rows = []
    original = model.model.base_model.forward

    def counting(*args, **kwargs):
        rows.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    model.model.base_model.forward = counting
    rankings = load_rankings(write_jsonl(tmp_path / "k9.jsonl", marker_rankings(3, k=9)))
    trainer = RewardTrainer(cfg, model, tokenizer, rankings)
    loss, _ = trainer.loss(model, trainer.train)
    assert rows == [27]  # 3 prompts x 9 completions in one pass; the 3 x 36 pairs reuse those scores
    assert loss.item() > 0


def test_demonstrations_score_a_mean_of_zero_after_training(tmp_path, tiny_model):
    demonstrations = [{"messages": [{"role": "user", "content": f"Tell me about item {i}."},
                                    {"role": "assistant", "content": f"Item {i} is excellent."}]} for i in range(10)]
    path = write_jsonl(tmp_path / "demos.jsonl", demonstrations)
    summary = train_reward(config(tmp_path, tiny_model, epochs=1, demonstrations=str(path)))
    model = RewardModel.from_pretrained(summary["output"]).eval()
    tokenizer = load_tokenizer(summary["output"])
    assert model.bias == pytest.approx(summary["reward_bias"])
    sequences = [encode_for_reward(tokenizer, None, d["messages"], 512) for d in demonstrations]
    with torch.no_grad():
        assert statistics.fmean(score(model, tokenizer, sequences, 4, "cpu")) == pytest.approx(0, abs=1e-4)


def test_eval_reads_preference_pairs_with_or_without_a_prompt(tmp_path, tiny_model):
    summary = train_reward(config(tmp_path, tiny_model))
    pairs = [{"prompt": r["prompt"], "chosen": r["completions"][r["ranks"][0][0]],
              "rejected": r["completions"][r["ranks"][1][0]]} for r in marker_rankings(20, start=2000, seed=2)]
    with_prompt = eval_reward(EvalRewardConfig(model=summary["output"],
                                               data=str(write_jsonl(tmp_path / "p.jsonl", pairs))))
    assert with_prompt["pairs"] == 20 and with_prompt["accuracy"] >= 0.95
    assert set(with_prompt["accuracy_by_rank_distance"]) == {1}
    bare = [{"chosen": f"User: {p['prompt']} Assistant: {p['chosen']}",
             "rejected": f"User: {p['prompt']} Assistant: {p['rejected']}"} for p in pairs]
    output = tmp_path / "eval.json"
    eval_reward(EvalRewardConfig(model=summary["output"], data=str(write_jsonl(tmp_path / "b.jsonl", bare)),
                                 output=str(output)))
    assert json.loads(output.read_text())["pairs"] == 20


def test_the_length_baselines_count_how_often_the_longer_or_the_shorter_completion_is_ranked_higher():
    items = [
        ([[1, 2, 3], [1], [1, 2]], [[0], [2], [1]], [3, 1, 2]),  # 3 > 2 > 1 tokens, ranked so: longer wins 3 pairs
        ([[1], [1, 2]], [[0], [1]], [1, 2]),  # the shorter ranked higher
        ([[1, 2], [3, 4]], [[0], [1]], [2, 2]),  # the same length: half to each
        ([[1, 2], [3]], [[0, 1]], [2, 1]),  # a tie: no pair
    ]
    assert length_baselines(items) == pytest.approx({"longer_wins_accuracy": 0.7, "shorter_wins_accuracy": 0.3})


def test_the_length_baselines_see_lengths_that_the_cut_to_max_length_hides(tmp_path, tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    ranking = load_rankings(write_jsonl(tmp_path / "r.jsonl", [{
        "prompt": "Tell me about rivers. " * 60, "completions": ["Short.", "A much longer answer about rivers."],
        "ranks": [[0], [1]]}]))[0]
    sequences, groups, lengths = encode_ranking(tokenizer, ranking, max_length=32)
    assert [len(ids) for ids, _ in sequences] == [32, 32] and lengths[0] < lengths[1]
    assert length_baselines([(sequences, groups, lengths)])["shorter_wins_accuracy"] == 1.0


def test_the_fitted_head_alone_orders_held_out_rankings_and_is_validated(tmp_path, tiny_model):
    summary = train_reward(config(tmp_path, tiny_model, epochs=0))
    assert summary["steps"] == 0 and summary["head_cv_accuracy"] >= 0.95 and summary["head_strength"] > 0
    assert summary["valid"]["accuracy"] >= 0.95  # the gate reads this
    before = RewardModel.from_pretrained(str(tiny_model)).model.state_dict()
    after = RewardModel.from_pretrained(summary["output"]).model.state_dict()
    assert {name for name in before if not torch.equal(before[name], after[name])} == {"score.weight"}


def test_the_linear_fit_recovers_a_planted_direction_and_chooses_its_strength_by_cross_validation():
    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(4, 6, generator=generator) * torch.tensor([1, 1, 1, 1, 1, 100.0]) for _ in range(60)]
    groups = [[[int(x[:, 0].argmax())], [i for i in range(4) if i != int(x[:, 0].argmax())]] for x in features]
    w, strength, accuracy = fit_linear_reward(features, groups)
    assert accuracy >= 0.95 and strength in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    assert w[0] > 5 * w[1:].abs().max()  # the scale of a feature does not buy it weight
    assert sum(int((x @ w.float()).argmax()) == ranks[0][0] for x, ranks in zip(features, groups)) >= 57


def test_the_linear_fit_is_the_regularised_optimum():
    features = [torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 1.0], [0.0, 0.0]])]
    w, strength, _ = fit_linear_reward(features, [[[0], [1]], [[1], [0]]], strengths=(0.5,), folds=1)
    # Two rankings cannot be cross-validated in one fold: strength 1. On standardised differences d, the gradient
    # of mean softplus(-d·v) + strength |v|^2 is zero at the optimum v = w * scale.
    scale = torch.cat(features).double().std(0)
    d = torch.stack([features[0][0] - features[0][1], features[1][1] - features[1][0]]).double() / scale
    v = (w * scale).requires_grad_(True)
    (torch.nn.functional.softplus(-d @ v).mean() + strength * v.square().sum()).backward()
    assert strength == 1.0 and v.grad.abs().max() < 1e-4  # at v = 0 it is about 0.5


def test_the_linear_fit_refuses_rankings_of_nothing_but_ties():
    with pytest.raises(ValueError, match="all ties"):
        fit_linear_reward([torch.ones(2, 3)], [[[0, 1]]])


@pytest.mark.parametrize("prompt, completion, expected", [
    ("Tell me about rivers.", "Rivers flow.", "Rivers flow."),
    (None, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "And rivers?"}, {"role": "assistant", "content": "Rivers flow."}],
     "Rivers flow."),
])
def test_the_completion_starts_where_the_last_assistant_turn_does(tiny_model, prompt, completion, expected):
    tokenizer = load_tokenizer(tiny_model)
    for max_length in (512, 12):
        ids, start = encode_for_reward(tokenizer, prompt, completion, max_length)
        assert len(ids) <= max_length
        assert tokenizer.decode(ids[start:], skip_special_tokens=True).strip() == expected
    ids, start = encode_for_reward(tokenizer, "Hi", "", 512)
    assert start < len(ids) and not tokenizer.decode(ids[start:], skip_special_tokens=True).strip()  # the end
    ids, start = encode_for_reward(tokenizer, "Hi", "Hello there, rivers.", 3)
    assert start == 0 and len(ids) == 3  # a cut inside the completion keeps what is left of it
    assert encode_for_reward(tokenizer, None, "Human: hi Assistant: hello", 512)[1] == 0  # plain text: all of it


def test_mean_pooling_reads_the_completion_over_every_layer_whatever_the_padding(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    model = RewardModel.from_pretrained(tiny_model).eval()
    model.pooling = "mean"
    short, long = (encode_for_reward(tokenizer, "Hi", text, 512) for text in ("Fine.", "A longer answer about rivers."))
    with torch.no_grad():
        together = model(*reward_batch([short, long], tokenizer.pad_token_id))
        alone = model(*reward_batch([short], tokenizer.pad_token_id))
        ids, start = short
        layers = model.model.base_model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[1:]
        by_hand = model.head(torch.stack(layers).mean(0)[0, start:].mean(0)).item()
    assert together[0].item() == pytest.approx(alone[0].item(), abs=1e-5) == pytest.approx(by_hand, abs=1e-5)
    with pytest.raises(ValueError, match="pooling must be one of last, mean"):
        model.pooling = "max"


def test_a_reward_model_saved_before_pooling_was_an_option_reads_the_last_token(tmp_path, tiny_model):
    model = RewardModel.from_pretrained(tiny_model)
    model.save_pretrained(tmp_path / "old")
    config_file = tmp_path / "old" / "config.json"
    config_file.write_text(json.dumps({k: v for k, v in json.loads(config_file.read_text()).items()
                                       if k != "reward_pooling"}))
    assert RewardModel.from_pretrained(tmp_path / "old").pooling == "last"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"reward_pooling": "max"}))
    with pytest.raises(ValueError, match="reward_pooling must be one of last, mean, not 'max'"):
        RewardModel.from_pretrained(tmp_path / "old")
