"""K completions per prompt from a policy, for labelers to rank, and one reply streamed as it is written.

Two backends behind one interface, `sampler.sample(prompts, k, params) -> [[Sample] * k]` and
`sampler.stream(prompt, params, should_stop)`, which yields the reply's text in pieces and then the
whole reply as a `Sample`: `HFSampler` generates with transformers in this process (batched, left
padding, the chat template applied); `OpenAISampler` asks an OpenAI-compatible server (vLLM, TGI,
or `python -m rlhf serve`) at scale, streaming with server-sent events as the OpenAI API does.
"""

import contextlib
import http.client
import json
import os
import threading
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

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
    finish_reason: str  # "stop": the model ended its turn; "length": cut at max_new_tokens; "abort": stopped
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

    def stream(self, prompt, params=SamplingParams(), should_stop=lambda: False):
        """One reply to `prompt` as it is generated: pieces of text, then the whole reply as a Sample.

        `should_stop` is asked after every token; once it answers true the reply ends there ("abort"),
        as it does when the caller closes this generator. The same prompt and params give the same
        reply as `sample` does with k 1.
        """
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        left, outcome = threading.Event(), {}

        class Asked(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                outcome["aborted"] = outcome.get("aborted") or left.is_set() or bool(should_stop())
                return torch.full((input_ids.shape[0],), outcome["aborted"], dtype=torch.bool,
                                  device=input_ids.device)

        def generate():
            try:
                outcome["out"] = self._generate([prompt], 1, params, params.seed, False, streamer=streamer,
                                                stopping_criteria=StoppingCriteriaList([Asked()]))
            except BaseException as exc:  # handed to the caller's thread below
                outcome["error"] = exc
                streamer.end()

        worker = threading.Thread(target=generate, name="rlhf-stream", daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            left.set()  # a caller that stops reading stops the generation at its next token
            worker.join()
        if "error" in outcome:
            raise outcome["error"]
        sample = outcome["out"][0][0]
        cut = outcome.get("aborted") and sample.finish_reason == "length"  # stopped, not out of tokens
        yield replace(sample, finish_reason="abort") if cut else sample

    def _encoded(self, prompts, params):
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        if self.context:  # a prompt longer than the model's context keeps its end, with room for the reply
            keep = self.context - params.max_new_tokens
            if keep < 1:
                raise ValueError(f"max_new_tokens {params.max_new_tokens} leaves no room for the prompt in the "
                                 f"model's context of {self.context} tokens.")
            encoded = [e[-keep:] for e in encoded]
        return encoded

    @torch.no_grad()
    def _generate(self, prompts, k, params, seed, logprobs, **generate_options):
        encoded = self._encoded(prompts, params)
        input_ids = pad(encoded, self.tokenizer.pad_token_id, side="left").to(self.device)
        attention_mask = pad([[1] * len(e) for e in encoded], 0, side="left").to(self.device)
        torch.manual_seed(seed)
        greedy = params.temperature == 0  # one sequence per prompt, then K copies of it
        sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": params.temperature,
                                                        "top_p": params.top_p, "top_k": 0}
        out = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=params.max_new_tokens,
            num_return_sequences=1 if greedy else k, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.stop_ids), output_scores=logprobs, return_dict_in_generate=True, **sampling,
            **generate_options,
        )
        new_tokens = out.sequences[:, input_ids.shape[1]:].tolist()
        scores = (self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).tolist()
                  if logprobs else [None] * len(new_tokens))
        copies = k if greedy else 1
        samples = [self._sample(tokens, row) for tokens, row in zip(new_tokens, scores) for _ in range(copies)]
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

    def stream(self, prompt, params=SamplingParams(), should_stop=lambda: False):
        """One reply, streamed by the server (`"stream": true`): pieces of text, then the whole reply as a Sample.

        `should_stop` is asked after every piece; once it answers true the connection is closed, which
        makes vLLM (and `rlhf serve`) stop generating, and the reply ends there ("abort").
        """
        body = self._body(prompt, 1, params) | {"stream": True, "stream_options": {"include_usage": True}}
        pieces, finish, tokens, served = [], None, None, self.model
        with contextlib.closing(self._open("POST", self._path(), body)) as response:
            try:
                for line in response:
                    if not line.startswith(b"data:"):
                        continue  # blank lines between events, comments, keep-alives
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise ServerError(f"{self.base_url}{self._path()} failed while streaming: {chunk['error']}")
                    served = chunk.get("model") or served
                    tokens = (chunk.get("usage") or {}).get("completion_tokens", tokens)
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content") if self.endpoint == "chat" else choice.get(
                            "text")
                        finish = choice.get("finish_reason") or finish
                        if piece:
                            pieces.append(piece)
                            yield piece
                    if should_stop():
                        finish = "abort"
                        break
            except (OSError, http.client.HTTPException) as exc:
                raise ServerError(f"{self.base_url}{self._path()} broke off while streaming: {exc}") from None
            except (ValueError, TypeError, AttributeError) as exc:
                raise ServerError(f"{self.base_url}{self._path()} streamed something that is not an OpenAI "
                                  f"completion: {exc}") from None
        yield Sample(text="".join(pieces).strip(), token_count=tokens, finish_reason=finish or "stop",
                     model_version=self._version(served))

    def _body(self, prompt, k, params):
        body = {"model": self.model, "n": k, "temperature": params.temperature, "top_p": params.top_p,
                "max_tokens": params.max_new_tokens, "seed": params.seed}
        if self.endpoint == "chat":
            return body | {"messages": prompt_messages(prompt), "logprobs": True}
        if not isinstance(prompt, str):
            raise ValueError("The completions endpoint takes text prompts; use the chat endpoint for messages.")
        return body | {"prompt": prompt, "logprobs": 0}

    def _path(self):
        return "/chat/completions" if self.endpoint == "chat" else "/completions"

    def _version(self, served):
        return self.model_version if served == self.model else served

    def _one(self, prompt, k, params):
        reply = self.request("POST", self._path(), self._body(prompt, k, params))
        try:
            choices = sorted(reply["choices"], key=lambda c: c["index"])
            version = self._version(reply.get("model") or self.model)
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

    def request(self, method, path, body=None, text=False):
        """The server's JSON reply to `method` `path` (under the base URL), or with `text` its reply as text (vLLM's
        adapter routes answer so); ServerError if there is none."""
        with self._open(method, path, body) as response:
            try:
                return response.read().decode(errors="replace") if text else json.load(response)
            except ValueError as exc:
                raise ServerError(f"{self.base_url}{path} answered something that is not JSON: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                raise ServerError(f"{self.base_url}{path} broke off its answer: {exc}") from None

    def _open(self, method, path, body=None):
        """The open response to `method` `path`; ServerError if the server cannot be reached or answers an error."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, headers=self.headers, method=method)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise ServerError(f"{self.base_url}{path} answered {exc.code}: {detail}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerError(f"{self.base_url}{path} could not be reached: {reason}") from None


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
