import json

import pytest
import torch

from rlhf.config import SFTConfig
from rlhf.models import assistant_labels, load_policy, load_tokenizer
from rlhf.train_sft import SFTTrainer, train_sft
from tests.rlhf.conftest import write_jsonl


def demonstrations(n, start=0):
    return [{"messages": [{"role": "user", "content": f"Count to {i % 5 + 2}."},
                          {"role": "assistant", "content": " ".join(["one", "two", "three", "four", "five",
                                                                      "six"][: i % 5 + 2])}]}
            for i in range(start, start + n)]


def test_only_the_assistants_tokens_carry_labels(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "See you."}]
    ids, labels = assistant_labels(tokenizer, messages)
    labelled = tokenizer.decode([t for t, label in zip(ids, labels) if label != -100])
    assert labelled == "Hello!<|im_end|>\nSee you.<|im_end|>\n"
    assert [label for label in labels if label != -100] == [t for t, label in zip(ids, labels) if label != -100]


def test_sft_lowers_the_validation_loss(tmp_path, tiny_model):
    config = SFTConfig(data=str(write_jsonl(tmp_path / "train.jsonl", demonstrations(40))),
                       valid_data=str(write_jsonl(tmp_path / "valid.jsonl", demonstrations(10, start=40))),
                       model=str(tiny_model), output=str(tmp_path / "sft"), epochs=3, lr=3e-3, batch_size=8,
                       device="cpu")
    tokenizer, model = load_tokenizer(tiny_model), load_policy(tiny_model)
    trainer = SFTTrainer(config, model, tokenizer, [d["messages"] for d in demonstrations(40)],
                         [d["messages"] for d in demonstrations(10, start=40)])
    with torch.no_grad():
        before = trainer.evaluate(trainer.valid)["loss"]
    summary = train_sft(config)
    after = summary["valid"]["loss"]
    assert after < before * 0.7
    valid_losses = [json.loads(line)["loss"] for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()
                    if '"split": "valid"' in line]
    assert len(valid_losses) == 3 and valid_losses[-1] == after
    assert (tmp_path / "sft" / "model" / "config.json").is_file()
    assert load_policy(tmp_path / "sft" / "model") is not None


def test_eval_sft_gives_the_validation_loss_training_reports(tiny_model, tmp_path):
    from rlhf.config import EvalSFTConfig
    from rlhf.train_sft import eval_sft

    rows = [{"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]}
            for w in ("sun", "rain", "wind", "snow")]
    data = write_jsonl(tmp_path / "valid.jsonl", rows)
    summary = train_sft(SFTConfig(data=str(data), valid_data=str(data), model=str(tiny_model),
                                  output=str(tmp_path / "out"), epochs=1, batch_size=2, device="cpu"))
    metrics = eval_sft(EvalSFTConfig(model=summary["output"], data=str(data), batch_size=2, device="cpu"))
    assert metrics["loss"] == pytest.approx(summary["valid"]["loss"], rel=1e-5)
