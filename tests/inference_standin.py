"""A local stand-in for a vLLM server with runtime LoRA updating, for the tests of
adapters.inference_server. vLLM itself needs a GPU and is not installable here; this process
speaks the part of its documented HTTP API the platform uses, with vLLM's status codes and
messages, and really generates (transformers + PEFT, greedy, per request's adapter):

* `GET /v1/models`: the base and every loaded adapter (`parent` = the base), OpenAI's list shape.
* `POST /v1/load_lora_adapter {"lora_name", "lora_path"}`: 200 "Success: LoRA adapter 'x' added
  successfully."; 400 when a field is missing or the name is already loaded; 404 when there is
  no adapter at the path.
* `POST /v1/unload_lora_adapter {"lora_name"}`: 200, or 404 "cannot be found".
* `POST /v1/chat/completions`: `model` is the base's served name or a loaded adapter's name
  (404 "The model `x` does not exist." otherwise); `stream` with `stream_options.include_usage`
  answers `chat.completion.chunk` events and `data: [DONE]`.
* With `--api-key`, every `/v1` call needs `Authorization: Bearer <key>` (401 otherwise).

Not vLLM's: `GET /standin/log` lists the calls received (path, model or lora_name, status), so
a test can see what the platform sent. Started as its own process; prints `READY <port>`.

    python tests/inference_standin.py --model <base folder> --served-model-name base [--port 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Engine:
    def __init__(self, model_path: str, served_name: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(1)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        self.model.eval()
        self.served_name = served_name
        self.adapters: dict[str, str] = {}  # name -> path
        self.lock = threading.Lock()
        eos = self.model.generation_config.eos_token_id
        self.eos = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in self.eos:
            self.eos.append(self.tokenizer.eos_token_id)

    def load(self, name: str, path: str) -> None:
        from peft import PeftModel

        with self.lock:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
            self.model.eval()
            self.adapters[name] = path

    def unload(self, name: str) -> None:
        with self.lock:
            self.model.delete_adapter(name)
            del self.adapters[name]

    def generate(self, model: str, messages: list[dict], max_tokens: int) -> tuple[list[int],
                                                                                 int, str]:
        import contextlib

        import torch

        with self.lock:
            encoded = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            context = contextlib.nullcontext()
            if model in self.adapters:
                self.model.set_adapter(model)
            elif self.adapters:
                context = self.model.disable_adapter()
            with context, torch.no_grad():
                output = self.model.generate(
                    input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                    max_new_tokens=max_tokens, do_sample=False, eos_token_id=self.eos,
                    pad_token_id=self.eos[0] if self.eos else None)
        prompt_len = int(encoded["input_ids"].shape[1])
        new = [int(t) for t in output[0, prompt_len:]]
        finish = "stop" if new and new[-1] in self.eos else (
            "length" if len(new) >= max_tokens else "stop")
        return new, prompt_len, finish


def make_handler(engine: Engine, api_key: str, log: list):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, body, content_type: str = "application/json") -> None:
            data = (json.dumps(body) if not isinstance(body, str) or content_type ==
                    "application/json" else body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, kind: str) -> None:
            self._send(status, {"error": {"message": message, "type": kind, "param": None,
                                          "code": status}})

        def _authorized(self) -> bool:
            if api_key and self.headers.get("Authorization") != f"Bearer {api_key}":
                self._error(401, "Unauthorized", "Unauthorized")
                return False
            return True

        def do_GET(self):
            if self.path == "/standin/log":
                return self._send(200, log)
            if not self._authorized():
                return None
            if self.path == "/v1/models":
                cards = [{"id": engine.served_name, "object": "model", "root": engine.served_name,
                          "parent": None}]
                cards += [{"id": name, "object": "model", "root": path,
                           "parent": engine.served_name}
                          for name, path in engine.adapters.items()]
                return self._send(200, {"object": "list", "data": cards})
            return self._error(404, "Not Found", "NotFoundError")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if not self._authorized():
                return None
            entry = {"path": self.path, "model": body.get("model") or body.get("lora_name")}
            log.append(entry)
            status = self._route(body)
            entry["status"] = status
            return None

        def _route(self, body: dict) -> int:
            if self.path == "/v1/load_lora_adapter":
                name, path = body.get("lora_name"), body.get("lora_path")
                if not name or not path:
                    self._error(400, "Both 'lora_name' and 'lora_path' must be provided.",
                                "InvalidUserInput")
                    return 400
                if name in engine.adapters:
                    self._error(400, f"The lora adapter '{name}' has already been loaded.",
                                "InvalidUserInput")
                    return 400
                if not (Path(path) / "adapter_config.json").is_file():
                    self._error(404, f"No adapter found for {path}", "NotFoundError")
                    return 404
                engine.load(name, path)
                self._send(200, f"Success: LoRA adapter '{name}' added successfully.",
                           "text/plain")
                return 200
            if self.path == "/v1/unload_lora_adapter":
                name = body.get("lora_name")
                if name not in engine.adapters:
                    self._error(404, f"The lora adapter '{name}' cannot be found.",
                                "NotFoundError")
                    return 404
                engine.unload(name)
                self._send(200, f"Success: LoRA adapter '{name}' removed successfully.",
                           "text/plain")
                return 200
            if self.path == "/v1/chat/completions":
                return self._chat(body)
            self._error(404, "Not Found", "NotFoundError")
            return 404

        def _chat(self, body: dict) -> int:
            model = body.get("model")
            if model != engine.served_name and model not in engine.adapters:
                self._error(404, f"The model `{model}` does not exist.", "NotFoundError")
                return 404
            tokens, prompt_len, finish = engine.generate(model, body["messages"],
                                                         int(body.get("max_tokens") or 16))
            text_of = engine.tokenizer.decode
            usage = {"prompt_tokens": prompt_len, "completion_tokens": len(tokens),
                     "total_tokens": prompt_len + len(tokens)}
            if not body.get("stream"):
                self._send(200, {
                    "id": "chatcmpl-standin", "object": "chat.completion", "model": model,
                    "choices": [{"index": 0, "finish_reason": finish, "message": {
                        "role": "assistant",
                        "content": text_of(tokens, skip_special_tokens=True)}}],
                    "usage": usage})
                return 200
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

            def event(choices, **extra):
                chunk = {"id": "chatcmpl-standin", "object": "chat.completion.chunk",
                         "model": model, "choices": choices, **extra}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())

            event([{"index": 0, "delta": {"role": "assistant", "content": ""},
                    "finish_reason": None}])
            sent = ""
            for i in range(len(tokens)):
                text = text_of(tokens[:i + 1], skip_special_tokens=True)
                if len(text) > len(sent) and not text.endswith("\ufffd"):
                    event([{"index": 0, "delta": {"content": text[len(sent):]},
                            "finish_reason": None}])
                    sent = text
            event([{"index": 0, "delta": {}, "finish_reason": finish}])
            if (body.get("stream_options") or {}).get("include_usage"):
                event([], usage=usage)
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            return 200

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="")
    args = parser.parse_args()
    engine = Engine(args.model, args.served_model_name or args.model)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(engine, args.api_key, []))
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
