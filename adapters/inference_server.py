"""Generation handed to a multi-LoRA inference server that speaks vLLM's HTTP API.

With `INFERENCE_SERVER_URL` set, the chat endpoint no longer generates in this process for the
base the server serves: it sends the request to the server's OpenAI-compatible
`/v1/chat/completions` with `"model": "<tenant>-v<N>"` (or the base's served name), and the
server batches requests for different adapters together (vLLM: `vllm serve <base>
--enable-lora --max-loras N --max-lora-rank R`, with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`).
Routing (active version, A/B arm, override), logging and per-version metrics stay here.

Registration (vLLM's runtime LoRA API):
* A version's files are copied from storage and sha256-verified (as for the local runtime) into
  `INFERENCE_SERVER_ADAPTER_DIR/<tenant id>/<name>`, a folder the server reads (a shared
  volume; `INFERENCE_SERVER_ADAPTER_DIR_ON_SERVER` names it as the server mounts it), then
  `POST /v1/load_lora_adapter {"lora_name": "<tenant>-v<N>", "lora_path": ...}`. "Already
  loaded" (400) counts as done.
* When a version is created, an RQ job registers it (`adapters.services.inference`); when it
  is archived, another unregisters it (`POST /v1/unload_lora_adapter`; "not found" is done).
* A server that restarted has forgotten its runtime registrations: a chat request whose model
  the server does not know (404) registers the version and is sent once more, and
  `manage.py inference_sync` registers every ready version at once.

Versions trained on another base than the server's (`default_base_ref`) keep being served by the
local runtime. The job's evaluation also stays local: the worker that trained scores it.
An unreachable server is `ModelUnavailableError` (the chat endpoint's 503).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

from adapters.model_refs import (
    AdapterRef,
    BaseRef,
    Completion,
    ModelUnavailableError,
    default_base_ref,
)

logger = logging.getLogger(__name__)


def inference_server_configured() -> bool:
    return bool(getattr(settings, "INFERENCE_SERVER_URL", ""))


def _server_path(local: Path) -> str:
    """The adapter folder as the server sees it (the shared volume may be mounted elsewhere)."""
    root = Path(settings.INFERENCE_SERVER_ADAPTER_DIR)
    seen = getattr(settings, "INFERENCE_SERVER_ADAPTER_DIR_ON_SERVER", "") or ""
    return str(Path(seen) / local.relative_to(root)) if seen else str(local)


class InferenceServerRuntime:
    """The runtime's `generate`/`stream` over HTTP, for the server's base and its adapters."""

    def __init__(self, *, url: str, api_key: str = "", base_model: str = "",
                 timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.base_model = base_model
        self.timeout = timeout
        self.stats = {"requests": 0, "registrations": 0, "re_registrations": 0}

    # -- which requests go there -----------------------------------------------------------

    @staticmethod
    def serves(adapter: AdapterRef | None, base: BaseRef | None) -> bool:
        wanted = (adapter.base if adapter is not None else None) or base or default_base_ref()
        return wanted.key == default_base_ref().key

    def model_name(self, adapter: AdapterRef | None) -> str:
        if adapter is not None:
            return adapter.served_name
        return self.base_model or default_base_ref().source

    # -- HTTP --------------------------------------------------------------------------------

    def _post(self, path: str, body: dict, *, stream: bool = False):
        import requests

        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            return requests.post(f"{self.url}{path}", data=json.dumps(body), headers=headers,
                                 timeout=self.timeout, stream=stream)
        except requests.RequestException as exc:
            raise ModelUnavailableError(
                f"The inference server at {self.url} cannot be reached: {exc}") from exc

    @staticmethod
    def _error_text(response) -> str:
        try:
            body = response.json()
        except ValueError:
            return response.text[:500]
        error = body.get("error") if isinstance(body.get("error"), dict) else body
        return str(error.get("message") or body)[:500]

    # -- registration ------------------------------------------------------------------------

    def register(self, adapter: AdapterRef) -> str:
        """Verified copy + load_lora_adapter; returns the name the server serves it under."""
        from adapters.runtime import adapter_files_materialize

        folder = adapter_files_materialize(adapter, Path(settings.INFERENCE_SERVER_ADAPTER_DIR))
        response = self._post("/v1/load_lora_adapter", {
            "lora_name": adapter.served_name, "lora_path": _server_path(folder)})
        if response.status_code == 400 and "already been loaded" in self._error_text(response):
            return adapter.served_name
        if response.status_code != 200:
            raise ModelUnavailableError(
                f"The inference server refused {adapter.served_name} ({response.status_code}): "
                f"{self._error_text(response)}")
        self.stats["registrations"] += 1
        logger.info("registered %s on the inference server", adapter.served_name)
        return adapter.served_name

    def unregister(self, name: str) -> bool:
        """unload_lora_adapter; False when the server did not have it."""
        response = self._post("/v1/unload_lora_adapter", {"lora_name": name})
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise ModelUnavailableError(f"The inference server could not unload {name} "
                                        f"({response.status_code}): {self._error_text(response)}")
        return True

    def loaded_names(self) -> list[str]:
        import requests

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = requests.get(f"{self.url}/v1/models", headers=headers,
                                    timeout=self.timeout)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise ModelUnavailableError(
                f"The inference server at {self.url} cannot be reached: {exc}") from exc
        return [card["id"] for card in response.json().get("data", [])]

    # -- generation --------------------------------------------------------------------------

    def _chat(self, *, messages: list[dict], adapter: AdapterRef | None, max_new_tokens: int,
              temperature: float, top_p: float | None, stream: bool):
        body: dict[str, Any] = {"model": self.model_name(adapter), "messages": messages,
                                "max_tokens": max_new_tokens, "temperature": temperature}
        if top_p is not None:
            body["top_p"] = top_p
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        self.stats["requests"] += 1
        response = self._post("/v1/chat/completions", body, stream=stream)
        if response.status_code == 404 and adapter is not None:
            # The server does not know the model: never registered, or restarted since.
            response.close()
            self.register(adapter)
            self.stats["re_registrations"] += 1
            response = self._post("/v1/chat/completions", body, stream=stream)
        if response.status_code != 200:
            raise ModelUnavailableError(
                f"The inference server answered {response.status_code} for "
                f"{body['model']}: {self._error_text(response)}")
        return response

    def generate(self, *, messages: list[dict], adapter: AdapterRef | None,
                 max_new_tokens: int, temperature: float = 0.0, top_p: float | None = None,
                 base: BaseRef | None = None) -> Completion:
        started = time.monotonic()
        response = self._chat(messages=messages, adapter=adapter, max_new_tokens=max_new_tokens,
                              temperature=temperature, top_p=top_p, stream=False)
        body = response.json()
        choice = body["choices"][0]
        usage = body.get("usage") or {}
        return Completion(
            text=(choice["message"].get("content") or "").strip(),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason") or "stop",
            adapter_name=adapter.served_name if adapter else None,
            seconds=time.monotonic() - started)

    def stream(self, *, messages: list[dict], adapter: AdapterRef | None, max_new_tokens: int,
               temperature: float = 0.0, top_p: float | None = None,
               base: BaseRef | None = None) -> RemoteCompletionStream:
        response = self._chat(messages=messages, adapter=adapter, max_new_tokens=max_new_tokens,
                              temperature=temperature, top_p=top_p, stream=True)
        return RemoteCompletionStream(response, adapter_name=adapter.served_name
                                      if adapter else None)


class RemoteCompletionStream:
    """The server's server-sent events as text pieces; `completion()` reads to the end (a
    dropped client still gets its whole reply logged), as the local `CompletionStream` does."""

    def __init__(self, response, *, adapter_name: str | None):
        self._response = response
        self._lines = response.iter_lines(decode_unicode=True)
        self._adapter_name = adapter_name
        self._started = time.monotonic()
        self._pieces: list[str] = []
        self._finish = "stop"
        self._usage: dict = {}
        self._done = False

    def _events(self) -> Iterator[str]:
        try:
            for line in self._lines:
                if not line or not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    raise ModelUnavailableError(f"The inference server failed: {event['error']}")
                self._usage = event.get("usage") or self._usage
                for choice in event.get("choices") or []:
                    self._finish = choice.get("finish_reason") or self._finish
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece:
                        if not self._pieces:
                            piece = piece.lstrip()
                        if piece:
                            self._pieces.append(piece)
                            yield piece
        except ModelUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - a cut connection or a garbled event
            raise ModelUnavailableError(f"The inference server's stream failed: {exc}") from exc
        finally:
            self._done = True
            self._response.close()

    def __iter__(self) -> Iterator[str]:
        if not self._done:
            yield from self._events()

    def completion(self) -> Completion:
        if not self._done:
            for _ in self._events():
                pass
        return Completion(
            text="".join(self._pieces).rstrip(),
            prompt_tokens=int(self._usage.get("prompt_tokens") or 0),
            completion_tokens=int(self._usage.get("completion_tokens") or 0),
            finish_reason=self._finish, adapter_name=self._adapter_name,
            seconds=time.monotonic() - self._started)


_remote: InferenceServerRuntime | None = None


def inference_server_get() -> InferenceServerRuntime | None:
    """The configured server's client (None: not configured); rebuilt when the settings change."""
    global _remote
    if not inference_server_configured():
        return None
    wanted = (settings.INFERENCE_SERVER_URL.rstrip("/"), settings.INFERENCE_SERVER_API_KEY,
              settings.INFERENCE_SERVER_BASE_MODEL, float(settings.INFERENCE_SERVER_TIMEOUT))
    current = _remote
    if current is None or (current.url, current.api_key, current.base_model,
                           current.timeout) != wanted:
        current = _remote = InferenceServerRuntime(url=wanted[0], api_key=wanted[1],
                                                   base_model=wanted[2], timeout=wanted[3])
    return current


def serving_runtime(adapter: AdapterRef | None, base: BaseRef | None):
    """What generates a request: the inference server for its base when one is configured,
    else the process's own runtime."""
    from adapters.runtime import runtime_get

    remote = inference_server_get()
    if remote is not None and remote.serves(adapter, base):
        return remote
    return runtime_get()
