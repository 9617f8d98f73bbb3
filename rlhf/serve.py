"""A small OpenAI-compatible server for a local model: /v1/models, /v1/chat/completions, /v1/completions.

For trying the OpenAI backend without vLLM, and for a GPU node that should serve its policy to
samplers elsewhere. One request generates at a time; vLLM or TGI are the choice at scale.
"""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .sampling import HFSampler, SamplingParams


class BadRequest(ValueError):
    pass


def make_server(sampler, host="127.0.0.1", port=8000, model_name=None):
    model_name = model_name or sampler.model_version
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # quiet: one line per request is noise for a sampler
            pass

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                return self.reply(200, {"object": "list", "data": [{"id": model_name, "object": "model"}]})
            self.reply(404, {"error": {"message": f"No route {self.path}."}})

        def do_POST(self):
            routes = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}
            kind = routes.get(self.path.rstrip("/"))
            if kind is None:
                return self.reply(404, {"error": {"message": f"No route {self.path}."}})
            try:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                self.reply(200, self.complete(kind, body))
            except (BadRequest, ValueError, TypeError, KeyError) as exc:
                self.reply(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})

        def complete(self, kind, body):
            if kind == "chat":
                prompt = body.get("messages")
                if not isinstance(prompt, list) or not prompt:
                    raise BadRequest("`messages` must be a non-empty list.")
            else:
                prompt = body.get("prompt")
                if not isinstance(prompt, str):
                    raise BadRequest("`prompt` must be text.")
            n = int(body.get("n", 1))
            if not 1 <= n <= 16:
                raise BadRequest("`n` must be 1 to 16.")
            params = SamplingParams(float(body.get("temperature", 1.0)), float(body.get("top_p", 1.0)),
                                    int(body.get("max_tokens", 128)), int(body.get("seed", 0)))
            logprobs = body.get("logprobs")  # chat sends true, completions a number (0 included)
            logprobs = logprobs is not None and logprobs is not False
            with lock:
                samples = sampler.sample([prompt], n, params, logprobs=logprobs)[0]
            choices = [self.choice(kind, index, sample, logprobs) for index, sample in enumerate(samples)]
            used = sum(s.token_count for s in samples)
            return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "chat.completion" if kind == "chat" else
                    "text_completion", "created": int(time.time()), "model": model_name, "choices": choices,
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

        def reply(self, status, payload):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return ThreadingHTTPServer((host, port), Handler)


def serve(config):
    sampler = HFSampler(config.model, config.device, config.model_version, batch_size=1)
    server = make_server(sampler, config.host, config.port)
    print(f"Serving {sampler.model_version} on http://{config.host}:{server.server_port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
