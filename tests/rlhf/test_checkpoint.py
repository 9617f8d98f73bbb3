import json

import pytest
import torch

from rlhf import distributed
from rlhf.config import RewardConfig, SFTConfig
from rlhf.data import load_demonstrations, load_rankings
from rlhf.models import RewardModel, load_policy, load_tokenizer
from rlhf.train_reward import RewardTrainer
from rlhf.train_sft import SFTTrainer
from tests.rlhf.conftest import marker_rankings, write_jsonl
from tests.rlhf.test_train_sft import demonstrations


class Interrupted(Exception):
    pass


def run(trainer_class, config, items, model, tokenizer, stop_after=None):
    distributed.seed_everything(config.seed)
    trainer = trainer_class(config, model, tokenizer, items)
    if stop_after is not None:
        loss, calls = trainer.loss, []

        def crashing(model, batch):
            if len(calls) == stop_after:
                raise Interrupted
            calls.append(1)
            return loss(model, batch)

        trainer.loss = crashing
    trainer.fit()
    return trainer.model


@pytest.mark.parametrize("kind", ["sft", "reward"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, tiny_model, kind):
    if kind == "sft":
        trainer_class, config_class, load = SFTTrainer, SFTConfig, lambda: load_policy(tiny_model)
        data = write_jsonl(tmp_path / "d.jsonl", demonstrations(24))
        items = load_demonstrations(data)
    else:
        trainer_class, config_class, load = RewardTrainer, RewardConfig, lambda: RewardModel.from_pretrained(tiny_model)
        data = write_jsonl(tmp_path / "r.jsonl", marker_rankings(24))
        items = load_rankings(data)
    tokenizer = load_tokenizer(tiny_model)
    common = {"data": str(data), "model": str(tiny_model), "epochs": 2, "batch_size": 4, "lr": 1e-3,
              "warmup_steps": 2, "save_every": 4, "device": "cpu"}

    def fresh_model():
        torch.manual_seed(0)  # the reward head starts at random: the same for both runs
        return load()

    whole = run(trainer_class, config_class(**common, output=str(tmp_path / "whole")), items, fresh_model(), tokenizer)
    interrupted_config = config_class(**common, output=str(tmp_path / "cut"))
    with pytest.raises(Interrupted):
        run(trainer_class, interrupted_config, items, fresh_model(), tokenizer, stop_after=7)
    assert torch.load(tmp_path / "cut" / "checkpoint" / "state.pt", weights_only=False)["step"] == 4
    assert not json.loads((tmp_path / "cut" / "run.json").read_text())["finished"]

    distributed.seed_everything(999)  # whatever the process did in between
    resumed = run(trainer_class, config_class(**common, output=str(tmp_path / "cut"), resume=True), items,
                  fresh_model(), tokenizer)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13)) and json.loads((tmp_path / "cut" / "run.json").read_text())["finished"]
