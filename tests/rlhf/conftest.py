import json


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
