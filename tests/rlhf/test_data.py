import gzip
import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlhf.data import DataError, load_demonstrations, load_prompts, load_rankings
from tests.rlhf.conftest import write_jsonl

RANKING = {"prompt": "Name a colour.", "completions": ["Red.", {"text": "Blue."}, "Green."], "ranks": [[1], [0, 2]]}


def test_k_way_rankings_read_as_groups_of_ties(tmp_path):
    [ranking] = load_rankings(write_jsonl(tmp_path / "r.jsonl", [RANKING]))
    assert (ranking.prompt, ranking.completions, ranking.groups) == ("Name a colour.", ["Red.", "Blue.", "Green."],
                                                                     [[1], [0, 2]])
    assert ranking.pairs() == [(1, 0), (1, 2)]


def test_trl_preference_pairs_read_as_rankings_of_two(tmp_path):
    standard = {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}
    conversational = {"prompt": [{"role": "user", "content": "Hi"}],
                      "chosen": [{"role": "assistant", "content": "Hello!"}],
                      "rejected": [{"role": "assistant", "content": "Go away."}]}
    implicit = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: No."}
    rows = load_rankings(write_jsonl(tmp_path / "p.jsonl", [standard, conversational, implicit]))
    assert [(r.prompt, r.completions, r.groups) for r in rows] == [
        ("Hi", ["Hello!", "Go away."], [[0], [1]]),
        ([{"role": "user", "content": "Hi"}], ["Hello!", "Go away."], [[0], [1]]),
        (None, [implicit["chosen"], implicit["rejected"]], [[0], [1]]),
    ]


def test_gzip_and_parquet_read_like_jsonl(tmp_path):
    with gzip.open(tmp_path / "r.jsonl.gz", "wt") as f:
        f.write(json.dumps(RANKING) + "\n")
    pq.write_table(pa.Table.from_pylist([RANKING | {"completions": ["Red.", "Blue.", "Green."]}]),
                   tmp_path / "r.parquet")
    for name in ("r.jsonl.gz", "r.parquet"):
        [ranking] = load_rankings(tmp_path / name)
        assert ranking.groups == [[1], [0, 2]] and ranking.completions[1] == "Blue."


def test_demonstrations_and_prompts(tmp_path):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert load_demonstrations(write_jsonl(tmp_path / "d.jsonl", [{"messages": messages}])) == [messages]
    assert load_prompts(write_jsonl(tmp_path / "q.jsonl", [{"prompt": "Hi"}, {"prompt": messages[:1]}])) == [
        "Hi", messages[:1]]


@pytest.mark.parametrize("row, reason", [
    ({"prompt": "Hi", "completions": ["a", "b"], "ranks": [[0]]}, "must place each of the 2 completions"),
    ({"prompt": "Hi", "completions": ["a", "b"], "ranks": [[0], [0, 1]]}, "must place each of the 2 completions"),
    ({"prompt": "", "completions": ["a", "b"], "ranks": [[0], [1]]}, "`prompt` must be non-empty"),
    ({"prompt": "Hi", "completions": ["a"], "ranks": [[0]]}, "at least two completions"),
    ({"prompt": "Hi", "chosen": "a"}, "`rejected` must be non-empty"),
])
def test_a_malformed_row_names_its_line_and_what_is_wrong(tmp_path, row, reason):
    path = write_jsonl(tmp_path / "r.jsonl", [RANKING, RANKING, row])
    with pytest.raises(DataError, match=rf"r.jsonl, line 3: .*{reason}"):
        load_rankings(path)


def test_a_demonstration_must_end_with_the_assistant(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": "Hi"}]}])
    with pytest.raises(DataError, match="line 1: `messages` must end with the assistant's message"):
        load_demonstrations(path)


def test_prompt_completion_demonstrations_keep_the_earlier_replies_as_context(tmp_path, tiny_model):
    from rlhf.models import assistant_labels, load_tokenizer

    prompt = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
              {"role": "user", "content": "A colour?"}]
    rows = [{"prompt": prompt, "completion": [{"role": "assistant", "content": "Teal."}]},
            {"prompt": "Say yes.", "completion": "Yes."},
            {"messages": [*prompt[:1], {**prompt[1], "weight": 0}, prompt[2], {"role": "assistant", "content": "Red."}]}]
    first, second, third = load_demonstrations(write_jsonl(tmp_path / "d.jsonl", rows))
    assert first == [prompt[0], {**prompt[1], "weight": 0}, prompt[2], {"role": "assistant", "content": "Teal."}]
    assert second == [{"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "Yes."}]
    tokenizer = load_tokenizer(tiny_model)
    for conversation, trained, context in ((first, "Teal.", "Hello!"), (third, "Red.", "Hello!")):
        ids, labels = assistant_labels(tokenizer, conversation)
        text = tokenizer.decode([token for token, label in zip(ids, labels, strict=True) if label != -100])
        assert trained in text and context not in text


@pytest.mark.parametrize("row, reason", [
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "a", "weight": 0}]},
     "no assistant message to train on"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "a", "weight": 0.5}]},
     r"`messages\[1\].weight` must be 0 \(context\) or 1"),
    ({"prompt": "Hi", "completion": ""}, "`completion` must be non-empty text"),
    ({"prompt": "Hi", "completion": [{"role": "assistant", "content": "a"}] * 2}, "the assistant's one message"),
    ({"prompt": "Hi"}, "needs `messages`, or `prompt` and `completion`"),
    ({"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "a"}], "completion": "b"},
     "must not end with the assistant's message"),
])
def test_a_malformed_demonstration_names_what_is_wrong(tmp_path, row, reason):
    with pytest.raises(DataError, match=rf"line 1: .*{reason}"):
        load_demonstrations(write_jsonl(tmp_path / "d.jsonl", [row]))


def test_broken_json_is_reported_with_its_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(RANKING) + "\n{not json\n")
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        load_rankings(path)


def test_the_command_stops_before_training_with_the_reason(tmp_path, tiny_model):
    path = write_jsonl(tmp_path / "r.jsonl", [RANKING, {"prompt": "Hi", "completions": ["a", "b"], "ranks": [[2]]}])
    run = subprocess.run([sys.executable, "-m", "rlhf", "train-rm", "--data", str(path), "--model", str(tiny_model),
                          "--output", str(tmp_path / "out")], capture_output=True, text=True)
    assert run.returncode == 1
    assert "r.jsonl, line 2: `ranks` must place each of the 2 completions" in run.stderr
    assert not (tmp_path / "out").exists()
