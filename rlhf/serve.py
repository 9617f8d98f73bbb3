"""A small OpenAI-compatible server for local models: /v1/models, /v1/chat/completions, /v1/completions.

For trying the OpenAI backend without vLLM, and for a GPU node that should serve its policies to
samplers elsewhere. It holds up to `max_models` models by name; with `models_dir` set,
`POST /v1/load_model {"model": name, "path": folder}` loads another folder (full weights, or a LoRA
adapter over its base) from under that directory while it runs, and `POST /v1/unload_model
{"model": name}` drops one: that is how the site makes it serve a newly activated version. It also
answers vLLM's `POST /v1/load_lora_adapter {"lora_name", "lora_path"}` and `/v1/unload_lora_adapter`
as vLLM does (plain-text success; 400 for a name already loaded), so the site's vLLM mode runs
against it too. A request names the model it wants; one that is not
loaded is a 404, as vLLM answers. `"stream": true` sends the reply as server-sent events while it is
generated. One request generates at a time; vLLM or TGI are the choice at scale.
"""

import contextlib
import hmac
import itertools
import json
import os
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .adapters import ADAPTER_CONFIG, is_adapter
from .sampling import HFSampler, Sample, SamplingParams


class RequestError(ValueError):
    def __init__(self, status, message, kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.kind = status, kind


MAX_BODY_BYTES = 8 * 1024 * 1024
ROLES = ("system", "user", "assistant")


def _text(value, what):
    """`value` if it is text that encodes as UTF-8 (no lone surrogates), else a 400 naming `what`."""
    if not isinstance(value, str):
        raise RequestError(400, f"{what} must be text.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(400, f"{what} holds a lone surrogate, which is no text.") from None
    return value


def _messages(messages):
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "`messages` must be a non-empty list.")
    for number, turn in enumerate(messages, start=1):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES:
            raise RequestError(400, f"Message {number} must be an object with a role of {', '.join(ROLES)}.")
        _text(turn.get("content"), f"Message {number}'s content")
    return messages


def _whole(body, name, default, low, high):
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(400, f"`{name}` must be {low} to {high} (a whole number).")
    return value


class Models:
    """Loaded models by served name, the least recently used dropped beyond `limit`."""

    def __init__(self, limit):
        self.limit = limit
        self.loaded = OrderedDict()
        self.lock = threading.Lock()

    def add(self, name, sampler):
        with self.lock:
            self.loaded[name] = sampler
            self.loaded.move_to_end(name)
            while len(self.loaded) > self.limit:
                self.loaded.popitem(last=False)

    def get(self, name):
        with self.lock:
            if name is None and self.loaded:
                name = next(reversed(self.loaded))
            if name not in self.loaded:
                raise RequestError(404, f"The model `{name}` does not exist.", "NotFoundError")
            self.loaded.move_to_end(name)
            return name, self.loaded[name]

    def remove(self, name):
        with self.lock:
            if self.loaded.pop(name, None) is None:
                raise RequestError(404, f"The model `{name}` does not exist.", "NotFoundError")

    def names(self):
        with self.lock:
            return list(self.loaded)


def make_server(sampler, host="127.0.0.1", port=8000, model_name=None, *, models_dir=None, max_models=2,
                api_key="", device="auto", log=None):
    """A server for `sampler` under `model_name`; with `models_dir`, more models load from under it."""
    root = Path(models_dir).resolve() if models_dir else None
    models = Models(max(1, max_models))
    models.add(model_name or sampler.model_version, sampler)
    generating, loading = threading.Lock(), threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 120  # seconds a socket may wait: a client that stops reading a stream frees the model

        def log_message(self, format, *args):  # one line per request, from `answer` below
            pass

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                return self.answer(lambda: {"object": "list", "data": [
                    {"id": name, "object": "model", "owned_by": "rlhf"} for name in models.names()]})
            self.reply(404, {"error": {"message": f"No route {self.path}.", "type": "NotFoundError"}})

        def do_POST(self):
            routes = {"/v1/chat/completions": lambda body: self.complete("chat", body),
                      "/v1/completions": lambda body: self.complete("completions", body),
                      "/v1/load_model": self.load, "/v1/unload_model": self.unload,
                      "/v1/load_lora_adapter": self.load_adapter, "/v1/unload_lora_adapter": self.unload_adapter}
            route = routes.get(self.path.rstrip("/"))
            if route is None:
                return self.reply(404, {"error": {"message": f"No route {self.path}.", "type": "NotFoundError"}})
            self.answer(lambda: route(self.body()))

        def answer(self, work):
            started = time.perf_counter()
            status, model = 200, ""
            try:
                self.authorize()
                payload = work()
                if callable(payload):  # a stream: checked, and now answered as it is generated
                    model = payload()
                    return
                if isinstance(payload, str):  # vLLM answers its adapter routes in plain text
                    return self.reply(status, payload)
                model = payload.get("model", "")
            except RequestError as exc:
                status, payload = exc.status, {"error": {"message": str(exc), "type": exc.kind, "code": exc.status}}
            except (ValueError, TypeError, KeyError) as exc:
                status, payload = 400, {"error": {"message": str(exc), "type": "invalid_request_error",
                                                  "code": 400}}
            except Exception as exc:  # the model itself failed: an answer all the same, never a dropped connection
                traceback.print_exc()
                status, payload = 500, {"error": {"message": f"{type(exc).__name__}: {exc}", "type": "server_error",
                                                  "code": 500}}
            finally:
                if log:
                    print(f"{self.command} {self.path} {status} {model} {time.perf_counter() - started:.2f}s",
                          file=log, flush=True)
            self.reply(status, payload)

        def authorize(self):
            given = self.headers.get("Authorization", "")
            if api_key and not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                raise RequestError(401, "A valid API key is needed: Authorization: Bearer <key>.",
                                   "authentication_error")

        def body(self):
            try:
                length = int(self.headers.get("Content-Length", 0))
            except ValueError:
                raise RequestError(400, "Content-Length must be a number.") from None
            if not 0 <= length <= MAX_BODY_BYTES:
                self.close_connection = True  # the body is left unread
                raise RequestError(413, f"The body is over {MAX_BODY_BYTES:,} bytes.")
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise RequestError(400, f"The body is not JSON: {exc}.") from None
            except RecursionError:
                raise RequestError(400, "The body nests too deeply.") from None
            if not isinstance(body, dict):
                raise RequestError(400, "The body must be a JSON object.")
            return body

        def load(self, body):
            name, path = body.get("model"), body.get("path")
            if not isinstance(name, str) or not name.strip() or not isinstance(path, str) or not path:
                raise RequestError(400, "`model` (the name to serve it under) and `path` (its folder) are needed.")
            self.add(name, path)
            return {"id": name, "object": "model", "model": name}

        def unload(self, body):
            models.remove(_text(body.get("model"), "`model`"))
            return {"id": body.get("model"), "object": "model", "deleted": True}

        def load_adapter(self, body):
            name, path = body.get("lora_name"), body.get("lora_path")
            if not isinstance(name, str) or not name.strip() or not isinstance(path, str) or not path:
                raise RequestError(400, "Both 'lora_name' and 'lora_path' must be provided.")
            if name in models.names():
                raise RequestError(400, f"The lora adapter '{name}' has already been loaded.")
            self.add(name, path, adapter=True)
            return f"Success: LoRA adapter '{name}' added successfully."

        def unload_adapter(self, body):
            name = _text(body.get("lora_name"), "'lora_name'")
            try:
                models.remove(name)
            except RequestError:
                raise RequestError(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError") from None
            return f"Success: LoRA adapter '{name}' removed successfully."

        def add(self, name, path, adapter=False):
            """Serve the folder at `path` (full weights or an adapter over its base; with `adapter`, only an adapter)
            as `name`."""
            _text(name, "`model`"), _text(path, "`path`")
            if "\x00" in path:
                raise RequestError(400, "`path` holds a NUL character.")
            if root is None:
                raise RequestError(403, "Loading is off: start the server with --models-dir.", "permission_error")
            folder = Path(path).resolve()
            if not folder.is_relative_to(root):
                raise RequestError(403, f"`path` must be under {root}.", "permission_error")
            if adapter and not is_adapter(folder):
                raise RequestError(400, f"{path} is not a LoRA adapter folder (it has no {ADAPTER_CONFIG}).")
            if not (folder / "config.json").is_file() and not is_adapter(folder):
                raise RequestError(400, f"{path} is not a model folder (it has no config.json or {ADAPTER_CONFIG}).")
            with loading:  # one load at a time; requests for loaded models go on meanwhile
                if name not in models.names():
                    models.add(name, HFSampler(str(folder), device, name, batch_size=1))

        def complete(self, kind, body):
            prompt = _messages(body.get("messages")) if kind == "chat" else _text(body.get("prompt"), "`prompt`")
            name = body.get("model")
            if name is not None:
                _text(name, "`model`")
            n = _whole(body, "n", 1, 1, 16)
            params = SamplingParams(float(body.get("temperature", 1.0)), float(body.get("top_p", 1.0)),
                                    _whole(body, "max_tokens", 128, 1, 2**31 - 1),
                                    _whole(body, "seed", 0, 0, 2**63 - 1))
            logprobs = body.get("logprobs")  # chat sends true, completions a number (0 included)
            logprobs = logprobs is not None and logprobs is not False
            name, sampler = models.get(name)
            if body.get("stream") is not None and body["stream"] is not False:  # null is false, as OpenAI's API
                if body["stream"] is not True or n != 1:
                    raise RequestError(400, "`stream` must be true or false, and a stream holds one reply (`n` 1).")
                return lambda: self.stream(kind, name, sampler, prompt, params)
            with generating:
                samples = sampler.sample([prompt], n, params, logprobs=logprobs)[0]
            choices = [self.choice(kind, index, sample, logprobs) for index, sample in enumerate(samples)]
            used = sum(s.token_count for s in samples)
            return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "chat.completion" if kind == "chat" else
                    "text_completion", "created": int(time.time()), "model": name, "choices": choices,
                    "usage": {"completion_tokens": used}}

        @staticmethod
        def choice(kind, index, sample, logprobs):
            choice = {"index": index, "finish_reason": sample.finish_reason}
            if kind == "chat":
                choice["message"] = {"role": "assistant", "content": sample.text}
                if logprobs:
                    choice["logprobs"] = {"content": [{"token": t, "logprob": p}
                                                      for t, p in zip(sample.tokens, sample.logprobs)]}
            else:
                choice["text"] = sample.text
                if logprobs:
                    choice["logprobs"] = {"tokens": sample.tokens, "token_logprobs": sample.logprobs}
            return choice

        def stream(self, kind, name, sampler, prompt, params):
            """The reply as server-sent events, a chunk per piece of text, as the OpenAI API streams.

            An error before the first piece (a prompt too long, say) is answered as any error; a client that
            goes away stops the generation at its next token. Returns the model's name.
            """
            head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk" if kind == "chat" else
                    "text_completion", "created": int(time.time()), "model": name}

            def chunk(text="", finish=None):
                content = {"delta": {"role": "assistant", "content": text}} if kind == "chat" else {"text": text}
                return head | {"choices": [{"index": 0, "finish_reason": finish, **content}]}

            def send(payload):
                self.wfile.write(b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
                                 + b"\n\n")
                self.wfile.flush()

            with generating, contextlib.closing(sampler.stream(prompt, params)) as pieces:
                first = next(pieces)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")  # the stream's end is the connection's
                self.end_headers()
                self.close_connection = True
                try:
                    for item in itertools.chain([first], pieces):
                        if isinstance(item, Sample):
                            send(chunk(finish=item.finish_reason))
                            send(head | {"choices": [], "usage": {"completion_tokens": item.token_count}})
                        else:
                            send(chunk(item))
                    send(b"[DONE]")
                except OSError:
                    pass  # the client left or stopped reading: closing `pieces` stops the generation
                except Exception as exc:  # the status is sent: the error goes in the stream, as vLLM does
                    traceback.print_exc()
                    with contextlib.suppress(OSError):
                        send({"error": {"message": f"{type(exc).__name__}: {exc}", "type": "server_error",
                                        "code": 500}})
            return name

        def reply(self, status, payload):
            text = isinstance(payload, str)
            data = payload.encode() if text else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return ThreadingHTTPServer((host, port), Handler)


def serve(config):
    sampler = HFSampler(config.model, config.device, config.model_version, batch_size=1)
    api_key = config.api_key or os.environ.get("RLHF_SERVE_API_KEY", "")
    server = make_server(sampler, config.host, config.port, models_dir=config.models_dir or None,
                         max_models=config.max_models, api_key=api_key, device=config.device, log=sys.stdout)
    loading = f", loading models from under {config.models_dir}" if config.models_dir else ""
    print(f"Serving {sampler.model_version} on http://{config.host}:{server.server_port}/v1{loading}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
