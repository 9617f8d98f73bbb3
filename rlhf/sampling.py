"""K completions per prompt from a policy, for labelers to rank.

Two backends behind one interface, `sampler.sample(prompts, k, params) -> [[Sample] * k]`:
`HFSampler` generates with transformers in this process (batched, left padding, the chat
template applied); `OpenAISampler` asks an OpenAI-compatible server (vLLM, TGI, or
`python -m rlhf serve`) at scale.
"""

import json
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .models import encode_prompt, load_policy, load_tokenizer, pad, pick_device, prompt_messages


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 1234

    def __post_init__(self):
        if not (self.temperature >= 0 and 0 < self.top_p <= 1 and self.max_new_tokens >= 1):
            raise ValueError("Sampling needs temperature >= 0, 0 < top_p <= 1 and max_new_tokens >= 1.")


@dataclass
class Sample:
    text: str
    token_count: int | None
    finish_reason: str  # "stop": the model ended its turn; "length": cut at max_new_tokens
    model_version: str
    tokens: list[str] | None = None  # with logprobs=True: each generated token and its log-probability
    logprobs: list[float] | None = None

    def as_row(self):
        row = asdict(self)
        if self.tokens is None:
            del row["tokens"], row["logprobs"]
        return row


def check_k(k):
    if not 4 <= k <= 9:
        raise ValueError(f"K must be 4 to 9 completions per prompt, not {k}.")


class HFSampler:
    def __init__(self, model, device="auto", model_version="", batch_size=8):
        self.device = pick_device(device)
        self.tokenizer = load_tokenizer(model, padding_side="left")
        self.model = load_policy(model).to(self.device).eval()
        self.model_version = model_version or Path(model).name
        self.batch_size = batch_size
        config = self.model.config
        self.context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        stop = self.model.generation_config.eos_token_id
        stop = stop if isinstance(stop, list) else [stop]
        self.stop_ids = {i for i in [*stop, self.tokenizer.eos_token_id] if i is not None}

    def sample(self, prompts, k, params=SamplingParams(), logprobs=False):
        """K samples per prompt. The same prompts, params and batch size give the same samples."""
        results = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            generator_seed = params.seed + start  # one seed per batch: a request replays exactly
            results.extend(self._generate(chunk, k, params, generator_seed, logprobs))
        return results

    @torch.no_grad()
    def _generate(self, prompts, k, params, seed, logprobs):
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        if self.context:  # a prompt longer than the model's context keeps its end, with room for the reply
            keep = self.context - params.max_new_tokens
            if keep < 1:
                raise ValueError(f"max_new_tokens {params.max_new_tokens} leaves no room for the prompt in the "
                                 f"model's context of {self.context} tokens.")
            encoded = [e[-keep:] for e in encoded]
        input_ids = pad(encoded, self.tokenizer.pad_token_id, side="left").to(self.device)
        attention_mask = pad([[1] * len(e) for e in encoded], 0, side="left").to(self.device)
        torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p,
                    "top_k": 0} if params.temperature > 0 else {"do_sample": False}
        out = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=params.max_new_tokens,
            num_return_sequences=k, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=sorted(self.stop_ids),
            output_scores=logprobs, return_dict_in_generate=True, **sampling,
        )
        new_tokens = out.sequences[:, input_ids.shape[1]:].tolist()
        scores = (self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).tolist()
                  if logprobs else [None] * len(new_tokens))
        samples = [self._sample(tokens, row) for tokens, row in zip(new_tokens, scores)]
        return [samples[i * k:(i + 1) * k] for i in range(len(prompts))]

    def _sample(self, tokens, scores):
        end = next((n for n, t in enumerate(tokens) if t in self.stop_ids), None)
        content = tokens if end is None else tokens[:end]
        return Sample(
            text=self.tokenizer.decode(content, skip_special_tokens=True).strip(),
            token_count=len(content),
            finish_reason="length" if end is None else "stop",
            model_version=self.model_version,
            tokens=None if scores is None else self.tokenizer.convert_ids_to_tokens(content),
            logprobs=None if scores is None else scores[:len(content)],
        )


class ServerError(RuntimeError):
    """The server could not be reached or answered an error; `status` is its HTTP status (None: no answer)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class OpenAISampler:
    """An OpenAI-compatible server: `chat` posts messages to /chat/completions, `completions` a
    rendered prompt to /completions. Token counts come from the per-token logprobs it returns; each
    sample carries the model name the server says produced it."""

    def __init__(self, base_url, model, endpoint="chat", model_version="", timeout=600, api_key=""):
        if endpoint not in ("chat", "completions"):
            raise ValueError("endpoint must be chat or completions.")
        self.base_url, self.model, self.endpoint, self.timeout = base_url.rstrip("/"), model, endpoint, timeout
        self.model_version = model_version or model
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def sample(self, prompts, k, params=SamplingParams()):
        return [self._one(prompt, k, params) for prompt in prompts]

    def models(self):
        """The model names the server serves now."""
        return [model["id"] for model in self.request("GET", "/models").get("data", [])]

    def _one(self, prompt, k, params):
        body = {"model": self.model, "n": k, "temperature": params.temperature, "top_p": params.top_p,
                "max_tokens": params.max_new_tokens, "seed": params.seed}
        if self.endpoint == "chat":
            body |= {"messages": prompt_messages(prompt), "logprobs": True}
        else:
            if not isinstance(prompt, str):
                raise ValueError("The completions endpoint takes text prompts; use the chat endpoint for messages.")
            body |= {"prompt": prompt, "logprobs": 0}
        reply = self.request("POST", f"/{'chat/completions' if self.endpoint == 'chat' else 'completions'}", body)
        try:
            choices = sorted(reply["choices"], key=lambda c: c["index"])
            served = reply.get("model") or self.model
            version = self.model_version if served == self.model else served
            return [Sample(text=self._text(c).strip(), token_count=self._token_count(c),
                           finish_reason=c.get("finish_reason") or "stop", model_version=version)
                    for c in choices]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ServerError(f"{self.base_url} answered a reply without {exc}: not an OpenAI completion.") from None

    def _text(self, choice):
        return choice["message"]["content"] if self.endpoint == "chat" else choice["text"]

    def _token_count(self, choice):
        logprobs = choice.get("logprobs") or {}
        tokens = logprobs.get("content") if self.endpoint == "chat" else logprobs.get("tokens")
        return len(tokens) if tokens is not None else None

    def request(self, method, path, body=None):
        """The server's JSON reply to `method` `path` (under the base URL); ServerError if there is none."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, headers=self.headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise ServerError(f"{self.base_url}{path} answered {exc.code}: {detail}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerError(f"{self.base_url}{path} could not be reached: {reason}") from None
        except ValueError as exc:
            raise ServerError(f"{self.base_url}{path} answered something that is not JSON: {exc}") from None


def sampler_for(config):
    if config.base_url:
        # vLLM and TGI servers started with an API key expect it as a bearer token.
        return OpenAISampler(config.base_url, config.model, config.endpoint, config.model_version,
                             api_key=os.environ.get("OPENAI_API_KEY", ""))
    return HFSampler(config.model, config.device, config.model_version, config.batch_size)


def sample_file(config):
    """Completions for every prompt of a file, written as JSONL rows of prompt and completions."""
    from tqdm import tqdm

    from .data import load_prompts

    check_k(config.k)
    prompts = load_prompts(config.data)
    params = SamplingParams(config.temperature, config.top_p, config.max_new_tokens, config.seed)
    sampler = sampler_for(config)
    step = sampler.batch_size if isinstance(sampler, HFSampler) else 1
    written = 0
    with open(config.output, "w") as out, tqdm(total=len(prompts), desc="sample", unit="prompt") as bar:
        for start in range(0, len(prompts), step):
            chunk = prompts[start:start + step]
            chunk_params = SamplingParams(**{**asdict(params), "seed": params.seed + start})
            for prompt, samples in zip(chunk, sampler.sample(chunk, config.k, chunk_params)):
                row = {"prompt": prompt, "completions": [s.as_row() for s in samples],
                       "sampling_params": asdict(chunk_params)}
                out.write(json.dumps(row) + "\n")
                written += 1
            bar.update(len(chunk))
    return {"prompts": written, "completions": written * config.k}
