"""Memory per GPU of SFT, reward-model and PPO-ptx training, computed from each model's shape; measured on CPU
for the small ones.

    .venv/bin/python bench/scaling.py                     # the tables: GiB per GPU, and the layouts that fit
    .venv/bin/python bench/scaling.py --measure --models smollm2 --jobs sft --modes full

How memory is counted (bytes; GiB = 2**30):

- Trained weights: 16 per parameter (fp32 weight 4, gradient 4, AdamW's m and v 8). bf16 mixed precision
  (`--mixed-precision bf16`, which rlhf allows only with fp32 weights) keeps the weights and Adam state in
  fp32, so still 16, plus 2 for the bf16 copy autocast makes of each weight a gradient flows through, held
  from the forward to the backward pass. DDP adds 4 for its gradient buckets. FSDP over N processes, as rlhf
  shards (FSDP2 per block, fp32 shards, autocast), holds 16 / N and two gathered fp32 blocks, but autocast's
  bf16 copies still add 2 per parameter of the whole model on every process.
- Frozen weights (PPO's reference and reward model, LoRA's base): 4 per parameter in fp32, 2 in bf16
  (`--dtype bfloat16`, SFT and reward model only: PPO has no dtype option). Under FSDP they stay whole.
- LoRA, rank r on every linear layer of the blocks (in x out gets r x (in + out) parameters), trained at 16
  per parameter on a frozen base; a reward or value model also trains its scalar head.
- PPO holds four models. Full: policy and value model trained, reference and reward model frozen. LoRA: the
  policy's adapter sits on its frozen base, which is also the reference; the value model's adapter and head
  sit on the reward model's base, which also scores.
- Activations, per block and token, counted as Korthikanti et al. 2022 ("Reducing Activation Recomputation
  in Large Transformer Models", section 4.1) count a GPT block's (34 x hidden bytes in 16-bit, plus
  5 x heads x seq for the attention matrix): the tensors autograd saves, here for transformers' Llama block
  as torch's saved-tensor hooks list them. SDPA, transformers' default, stores no seq x seq matrix. With h
  the width, q and kv the query and key/value widths and i the MLP's: fp32, 4 x (5h + 3q + 2kv + 4i); bf16
  mixed precision, 4 x 4h (the residual stream and the RMSNorms stay fp32) + 2 x (5h + 2q + 2kv + 4i)
  (autocast casts the fp32 input once for each linear). GPT-2's MLP keeps 2i instead of 4i. LoRA's dropout
  adds, for each adapted linear, its dropped-out input and a one-byte mask. With gradient checkpointing each
  block keeps only its fp32 input, plus one block's activations while it is recomputed. The LM head's
  logits cost 12 bytes per token and vocabulary entry (logits, their shifted copy, fp32 log-softmax).
- Not counted: the CUDA context and allocator slack; a configuration fits a card when it needs at most 90%
  of its memory. On CPU, the Python, torch and transformers runtime, which --measure measures.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMOLLM2 = ROOT / "artifacts" / "models" / "SmolLM2-135M-Instruct"
HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
GIB = 2**30


@dataclass(frozen=True)
class Arch:
    """A decoder's shape: all its parameter count and activations depend on.

    `llama`: SwiGLU MLP, RMSNorm, grouped K/V heads, no biases. `gpt2`: GELU MLP, LayerNorm, biases,
    learned positions (the tiny test model).
    """

    name: str
    family: str
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    head_dim: int = 0  # 0: hidden // heads
    positions: int = 0
    source: str = ""

    @classmethod
    def from_config(cls, folder, name=None):
        config = json.loads((Path(folder) / "config.json").read_text())
        name = name or Path(folder).name
        if config["model_type"] == "gpt2":
            width = config["n_embd"]
            return cls(name, "gpt2", width, config["n_layer"], config.get("n_inner") or 4 * width, config["n_head"],
                       config["n_head"], config["vocab_size"], config.get("tie_word_embeddings", True),
                       positions=config["n_positions"], source=str(folder))
        return cls(name, "llama", config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"],
                   config["num_attention_heads"], config["num_key_value_heads"], config["vocab_size"],
                   config.get("tie_word_embeddings", False), head_dim=config.get("head_dim", 0), source=str(folder))

    @property
    def q_width(self):
        return self.heads * (self.head_dim or self.hidden // self.heads)

    @property
    def kv_width(self):
        return self.kv_heads * (self.head_dim or self.hidden // self.heads)

    def linears(self):
        """(in, out) of each linear layer of one block: what LoRA's all-linear adapts."""
        h, i, q, kv = self.hidden, self.intermediate, self.q_width, self.kv_width
        if self.family == "gpt2":
            return [(h, 3 * h), (h, h), (h, i), (i, h)]
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    def block_params(self):
        biased = self.family == "gpt2"
        return (sum(a * b + (b if biased else 0) for a, b in self.linears())
                + 2 * self.hidden * (2 if biased else 1))

    def lm_params(self):
        norm = self.hidden * (2 if self.family == "gpt2" else 1)
        embeddings = (self.vocab + self.positions) * self.hidden
        return embeddings + self.layers * self.block_params() + norm + (0 if self.tied else self.vocab * self.hidden)

    def reward_params(self):
        """The backbone without the LM head, and a scalar head without bias."""
        return self.lm_params() - (0 if self.tied else self.vocab * self.hidden) + self.hidden

    def lora_params(self, rank):
        return rank * self.layers * sum(a + b for a, b in self.linears())

    def block_activations(self, tokens, mixed):
        """Bytes one block keeps for its backward pass, as transformers' Llama block keeps them (module docstring)."""
        h, q, kv = self.hidden, self.q_width, self.kv_width
        mlp = (4 if self.family == "llama" else 2) * self.intermediate
        if mixed:
            return tokens * (4 * 4 * h + 2 * (5 * h + 2 * q + 2 * kv + mlp))
        return tokens * 4 * (5 * h + 3 * q + 2 * kv + mlp)


# Public config.json values (hidden_size, num_hidden_layers, intermediate_size, num_attention_heads,
# num_key_value_heads, vocab_size, tie_word_embeddings) of the models on the Hugging Face hub.
LLAMA_1B = Arch("Llama-3.2-1B", "llama", 2048, 16, 8192, 32, 8, 128256, True,
                source="https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json")
LLAMA_8B = Arch("Llama-3.1-8B", "llama", 4096, 32, 14336, 32, 8, 128256, False,
                source="https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json")
LLAMA_13B = Arch("Llama-2-13B", "llama", 5120, 40, 13824, 40, 40, 32000, False,
                 source="https://huggingface.co/meta-llama/Llama-2-13b-hf/blob/main/config.json")


@dataclass(frozen=True)
class Setup:
    """How a job is run: precision, adapters, processes and what they share."""

    mixed: bool = True  # compute in bf16; False: everything fp32
    frozen_bytes: int = 4  # 2: frozen weights held in bf16
    lora_rank: int = 0
    lora_dropout: bool = True
    processes: int = 1
    fsdp: bool = False
    checkpointing: bool = False


@dataclass(frozen=True)
class Shape:
    """Tokens through the models in one micro-batch on one process."""

    sequences: int  # SFT: demonstrations; reward model: rankings x K completions; PPO: episodes
    length: int
    ptx: int = 0  # PPO: pretraining rows through the policy beside the episodes
    value_length: int = 0  # PPO: the episodes' length through the value model (default: length)


# The tables' micro-batch per GPU: SFT 8 demonstrations of 512 tokens; the reward model 2 rankings of K = 4;
# PPO a minibatch of 4 episodes with 4 ptx rows (ptx_ratio 1) through the policy, the episodes through the value.
TABLE_SHAPES = {"sft": Shape(8, 512), "rm": Shape(8, 512), "ppo": Shape(4, 512, ptx=4)}
JOBS = {"sft": "SFT", "rm": "reward model", "ppo": "PPO"}


def memory(arch, job, setup, shape):
    """Bytes per process, by part: trained state, frozen weights, activations."""
    nbytes = 2 if setup.mixed else 4
    lm, rm, rank = arch.lm_params(), arch.reward_params(), setup.lora_rank
    has_policy, has_value = job in ("sft", "ppo"), job in ("rm", "ppo")
    trained = frozen = 0
    if has_policy:
        trained += arch.lora_params(rank) if rank else lm
        frozen += lm if rank or job == "ppo" else 0
    if has_value:
        trained += arch.lora_params(rank) + arch.hidden if rank else rm
        frozen += rm if rank or job == "ppo" else 0
    state = 16 * trained
    if setup.fsdp:
        state = state / setup.processes + 2 * arch.block_params() * 4
    elif setup.processes > 1:
        state += 4 * trained
    casts = 0
    if setup.mixed:  # autocast's bf16 copies of the fp32 weights gradients flow through
        casts = 2 * (trained + (frozen if rank and setup.frozen_bytes == 4 else 0))
    policy_tokens = (shape.sequences + shape.ptx) * shape.length if has_policy else 0
    value_tokens = shape.sequences * (shape.value_length or shape.length) if has_value else 0
    activations = (_activations(arch, policy_tokens, nbytes, setup, logits=True)
                   + _activations(arch, value_tokens, nbytes, setup, logits=False))
    return {"trained": state, "casts": casts, "frozen": frozen * setup.frozen_bytes, "activations": activations}


def _activations(arch, tokens, nbytes, setup, logits):
    block = arch.block_activations(tokens, setup.mixed)
    if setup.lora_rank and setup.lora_dropout:
        block += tokens * sum(a for a, _ in arch.linears()) * (nbytes + 1)
    if setup.checkpointing:
        kept = arch.layers * tokens * arch.hidden * 4 + block  # the residual stream is fp32
    else:
        kept = arch.layers * block
    return kept + (tokens * arch.vocab * 12 if logits else 0)


def total(parts):
    return sum(parts.values())


# The tables


COLUMNS = {
    "full fp32": Setup(mixed=False),
    "full bf16": Setup(),
    "LoRA r16": Setup(lora_rank=16),
    "LoRA r16, bf16 base": Setup(lora_rank=16, frozen_bytes=2),
    "FSDP 2": Setup(processes=2, fsdp=True),
    "FSDP 4": Setup(processes=4, fsdp=True),
    "FSDP 8": Setup(processes=8, fsdp=True),
}
CARD_USE = 0.9
# (label, GPUs, usable GiB per GPU); the compose file's GPU is shared with vLLM, which takes 35% of it.
LAYOUTS = [("1×40", 1, 40), ("1×80 shared with vLLM", 1, 80 * 0.65), ("1×80", 1, 80), ("2×80", 2, 80),
           ("4×80", 4, 80), ("8×40", 8, 40), ("8×80", 8, 80)]


def table_models():
    if not (SMOLLM2 / "config.json").is_file():
        sys.exit(f"{SMOLLM2} is missing; run `python -m rlhf prepare-model` first.")
    return [Arch.from_config(SMOLLM2, "SmolLM2-135M"), LLAMA_1B, LLAMA_8B, LLAMA_13B]


def gib(n):
    return f"{n / GIB:,.1f}" if n < 10 * GIB else f"{n / GIB:,.0f}"


def memory_table(models):
    head = ["model", "job", "trained params", *COLUMNS, "activations bf16 (ckpt)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for arch in models:
        for job, name in JOBS.items():
            shape = TABLE_SHAPES[job]
            trained = {"sft": arch.lm_params(), "rm": arch.reward_params()}.get(job,
                                                                                arch.lm_params() + arch.reward_params())
            cells = [gib(total(memory(arch, job, setup, shape))) for setup in COLUMNS.values()]
            plain = memory(arch, job, Setup(), shape)["activations"]
            saved = memory(arch, job, Setup(checkpointing=True), shape)["activations"]
            lines.append(f"| {arch.name} | {name} | {trained / 1e9:.2f} B | " + " | ".join(cells)
                         + f" | {gib(plain)} ({gib(saved)}) |")
    return "\n".join(lines)


def options_for(gpus):
    """(label, setup) in the order one would try them on `gpus` GPUs of one node, full weights first."""
    full = [("full", Setup(processes=gpus)), ("full + ckpt", Setup(processes=gpus, checkpointing=True))]
    if gpus > 1:
        full += [(f"FSDP {gpus}", Setup(processes=gpus, fsdp=True)),
                 (f"FSDP {gpus} + ckpt", Setup(processes=gpus, fsdp=True, checkpointing=True))]
    lora = [(f"LoRA{base}{ckpt}", Setup(processes=gpus, lora_rank=16, frozen_bytes=nbytes, checkpointing=bool(ckpt)))
            for base, nbytes in (("", 4), (" bf16 base", 2)) for ckpt in ("", " + ckpt")]
    return full, lora


def fits(arch, job, setup, usable):
    return total(memory(arch, job, setup, TABLE_SHAPES[job])) <= CARD_USE * usable * GIB


def layout_table(models):
    """The first full-weight configuration that fits each layout and, where that is not plain `full`, LoRA's;
    `none` where neither fits."""
    lines = ["| model | job | " + " | ".join(label for label, _, _ in LAYOUTS) + " |",
             "|---|---|" + "---|" * len(LAYOUTS)]
    for arch in models:
        for job, name in JOBS.items():
            cells = []
            for _, gpus, usable in LAYOUTS:
                full, lora = options_for(gpus)
                found = [next((label for label, setup in full if fits(arch, job, setup, usable)), None)]
                if found[0] != "full":
                    found.append(next((label for label, setup in lora if fits(arch, job, setup, usable)), None))
                cells.append("; ".join(label for label in found if label) or "none")
            lines.append(f"| {arch.name} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_counts(arch, folder):
    """The computed counts against the model loaded by transformers and adapted by peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32)
    found = [("LM", arch.lm_params(), lm.num_parameters()),
             ("reward model", arch.reward_params(), reward.num_parameters())]
    adapted = get_peft_model(lm, LoraConfig(r=16, target_modules="all-linear"))
    found.append(("LoRA r16 all-linear", arch.lora_params(16), adapted.get_nb_trainable_parameters()[0]))
    return "; ".join(f"{name} {computed:,} computed, {loaded:,} loaded" + ("" if computed == loaded else " (DIFFERENT)")
                     for name, computed, loaded in found)


# Measured on CPU


def peak_rss(command, log):
    """(peak RSS in bytes, None) of a fresh child process, or (None, why it failed)."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        lines = [line for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
        return None, (lines[-1] if lines else f"exit status {process.returncode}")
    return usage.ru_maxrss * 1024, None  # Linux reports kilobytes


def hh_texts():
    import gzip

    with gzip.open(HH, "rt") as f:
        return [json.loads(line)["chosen"] for line in f]


def write_data(folder, long_chars=2400):
    """Demonstrations, rankings and prompts whose texts outrun any --max-length up to about 512 tokens,
    so that every sequence is cut to exactly that length."""
    texts = hh_texts()
    long = ["".join(texts[n:n + 8])[:long_chars] for n in range(0, 8 * 40, 8)]
    questions = [text.split("\n\nHuman: ")[1].split("\n\nAssistant:")[0].strip() for text in texts[:40]]
    files = {
        "demonstrations": [{"messages": [{"role": "user", "content": questions[n]},
                                         {"role": "assistant", "content": long[n]}]} for n in range(16)],
        "rankings": [{"prompt": questions[n], "completions": long[n:n + 4], "ranks": [[0], [1], [2], [3]]}
                     for n in range(16)],
        "prompts": [{"prompt": long[n] + "\n\n" + questions[n]} for n in range(16)],
    }
    for name, rows in files.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {name: str(folder / f"{name}.jsonl") for name in files}


def rlhf_command(job, model, data, output, args, lora_rank):
    common = ["--device", "cpu", "--output", str(output), *(["--lora-rank", str(lora_rank)] if lora_rank else [])]
    if job == "sft":
        options = ["--data", data["demonstrations"], "--model", model, "--epochs", "1"]
    elif job == "rm":
        options = ["--data", data["rankings"], "--model", model, "--epochs", "1", "--no-fit-head"]
    else:
        return [sys.executable, "-m", "rlhf", "train-ppo", "--data", data["prompts"], "--policy", model,
                "--reward-model", model, "--ptx-data", data["demonstrations"], "--steps", str(args.steps),
                "--rollout-batch-size", str(args.batch_size), "--minibatch-size", str(args.batch_size),
                "--ppo-epochs", "1", "--max-new-tokens", str(args.new_tokens),
                "--max-prompt-length", str(args.max_length // 2), "--reward-max-length", str(args.max_length),
                *common]
    return [sys.executable, "-m", "rlhf", f"train-{job}", *options, "--max-steps", str(args.steps),
            "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), *common]


def measured_shape(job, args):
    """The micro-batch the commands above run: PPO's prompts are cut to half of max_length and its ptx rows to
    max_length, so its policy batch is padded to max_length and its value batch is prompt + response."""
    if job == "sft":
        return Shape(args.batch_size, args.max_length)
    if job == "rm":
        return Shape(args.batch_size * 4, args.max_length)
    return Shape(args.batch_size, args.max_length, ptx=args.batch_size,
                 value_length=args.max_length // 2 + args.new_tokens)


def measure(args):
    from rlhf.models import save_tiny_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_data(tmp)
        runtime, why = peak_rss([sys.executable, "-c", "import peft, rlhf.train_sft, rlhf.train_reward, "
                                 "rlhf.train_ppo"], tmp / "runtime.log")
        if why:
            sys.exit(f"importing the trainers failed: {why}")
        print(f"runtime (python, torch, transformers, peft and rlhf imported): {runtime / GIB:.2f} GiB")
        folders = {"tiny": save_tiny_model(tmp / "tiny"), "smollm2": SMOLLM2}
        for name in args.models.split(","):
            arch = Arch.from_config(folders[name], name)
            for job in args.jobs.split(","):
                for mode in args.modes.split(","):
                    rank = 16 if mode == "lora" else 0
                    output = tmp / f"{name}-{job}-{mode}"
                    command = rlhf_command(job, str(folders[name]), data, output, args, rank)
                    rss, why = peak_rss(command, tmp / "run.log")
                    if why is None and rank and not (output / "model" / "adapter_config.json").is_file():
                        why = "rlhf saved no adapter (no adapter_config.json), so it did not train LoRA"
                    if why:
                        print(f"skipped {name} {job} {mode}: {why}")
                        continue
                    parts = memory(arch, job, Setup(mixed=False, lora_rank=rank), measured_shape(job, args))
                    rows.append((name, JOBS[job], mode, rss, total(parts), runtime))
                    print(f"measured {name} {job} {mode}: {rss / GIB:.2f} GiB peak RSS", flush=True)
                    shutil.rmtree(output, ignore_errors=True)
    lines = ["| model | job | mode | measured peak RSS | computed | computed + runtime | measured / that |",
             "|---|---|---|---:|---:|---:|---:|"]
    for name, job, mode, rss, computed, runtime in rows:
        lines.append(f"| {name} | {job} | {mode} | {rss / GIB:.2f} | {computed / GIB:.2f} | "
                     f"{(computed + runtime) / GIB:.2f} | {rss / (computed + runtime):.2f} |")
    print(f"\nfp32 on CPU, steps {args.steps}, batch {args.batch_size}, max_length {args.max_length}; GiB\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", action="store_true", help="Run the trainers on CPU and compare their peak RSS.")
    parser.add_argument("--models", default="tiny,smollm2", help="With --measure: tiny, smollm2.")
    parser.add_argument("--jobs", default="sft,rm,ppo", help="With --measure: sft, rm, ppo.")
    parser.add_argument("--modes", default="full,lora", help="With --measure: full, lora (rank 16).")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=32, help="PPO's response length.")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.measure:
        measure(args)
        return
    models = table_models()
    print(f"{models[0].name} ({SMOLLM2}): {check_counts(models[0], SMOLLM2)}\n")
    for arch in models[1:]:
        print(f"{arch.name}: {arch.lm_params():,} parameters ({arch.source})")
    print("\nGiB per GPU, micro-batch of 8 sequences x 512 tokens (PPO: 4 episodes + 4 ptx rows through the policy, "
          "4 through the value model), no gradient checkpointing\n")
    print(memory_table(models))
    print(f"\nWhat fits each node (at most {CARD_USE:.0%} of each card), with the same micro-batch\n")
    print(layout_table(models))


if __name__ == "__main__":
    main()
