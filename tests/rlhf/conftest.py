import json

import pytest
import torch


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def marker_rankings(n, start=0, k=4, seed=0):
    """Rankings where the completion holding the word "excellent" is always best and the rest tie."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(start, start + n):
        texts = [f"answer {j} about item {i}" for j in range(k)]
        best = rng.randrange(k)
        texts[best] += " excellent"
        rows.append({"prompt": f"Tell me about item {i}.", "completions": texts,
                     "ranks": [[best], [j for j in range(k) if j != best]]})
    return rows


@pytest.fixture(scope="session")
def tiny_base(tiny_model, tmp_path_factory):
    """The tiny model with its tied embeddings ten times larger, so that its next-token distributions are as peaked
    as a pretrained model's. At the tiny model's own scale every logit stays within about ±1, and an adapter on the
    inner layers (which leaves the embeddings as they are) cannot make any token much likelier: LoRA presumes a
    pretrained base."""
    from rlhf.models import load_policy, load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-base")
    model = load_policy(tiny_model)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10)
    model.save_pretrained(folder)
    load_tokenizer(tiny_model).save_pretrained(folder)
    return folder
