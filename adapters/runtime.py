"""The model runtime: one base model per process, tenants' LoRA adapters on top of it in an LRU.

How it works
------------
* The base model (`settings.BASE_MODEL_HF_ID` + `BASE_MODEL_REVISION` when set, else
  `settings.BASE_MODEL_PATH`) is loaded once per process, lazily, by the first request that needs
  it (`runtime_get()` is a double-checked, lock-protected singleton).
* Adapters are loaded through PEFT by name: the first with `PeftModel.from_pretrained(base, dir,
  adapter_name=...)`, the next ones with `load_adapter(dir, adapter_name=...)`. A request selects
  its adapter with `set_adapter(name)`; the base model answers inside `disable_adapter()`.
  At most `settings.ADAPTER_CACHE_SIZE` adapters stay loaded; the least recently used one is
  dropped with `delete_adapter`.
* Integrity: an adapter is never loaded straight from object storage. Its files are copied into a
  local cache folder (`settings.ADAPTER_LOCAL_CACHE_DIR`, default `var/adapter-cache`), each
  file's sha256 is compared with the one recorded on the AdapterVersion row, and only then does
  PEFT read the folder. A mismatch raises `AdapterIntegrityError` (the chat endpoint answers 500
  `adapter_integrity_error`) and the copy is removed. Only `adapter_model.safetensors` and
  `adapter_config.json` are ever copied, so PEFT has no pickle file to fall back to.
* No restart on activation: the runtime keeps no notion of "the active version". The chat service
  reads the active version (or the A/B arm) from the database on every request and asks the
  runtime for that adapter; an adapter loaded once is reused by name (name = tenant, version and
  sha256 prefix, so a re-created version can never be confused with an old one).
* Generation goes through the trainer's `generate_reply` (the same template and greedy decoding
  that the training tests check), serialised by one lock: `set_adapter` changes state shared by
  every thread, so two requests must not interleave between switching and generating. This is
  the right trade-off for the tiny CPU model and small deployments; it is not how to serve many
  tenants at high concurrency (see below).

Serving at scale: vLLM or LoRAX
-------------------------------
A larger deployment hands generation to a multi-LoRA inference server and keeps everything else
(version rows, activation, A/B routing, logging, metrics) in this app:

* **vLLM** (`vllm serve <base> --enable-lora --max-loras 8 --max-lora-rank 64
  --max-cpu-loras 64`, plus `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`): adapters are registered at
  run time with `POST /v1/load_lora_adapter {"lora_name": "acme-v3", "lora_path": "/adapters/
  acme/v3"}` and unregistered with `/v1/unload_lora_adapter`; a request selects one with
  `"model": "acme-v3"` on the OpenAI-compatible `/v1/chat/completions`. vLLM batches requests for
  different adapters together (punica/S-LoRA kernels), so there is no global lock.
* **LoRAX** (`lorax-launcher --model-id <base>`): adapters are fetched on demand per request,
  `"adapter_id": "/adapters/acme/v3", "adapter_source": "local"` (or `s3`), with its own
  GPU/CPU adapter cache and continuous multi-adapter batching.
* **Export**: both load the standard PEFT layout, exactly what the download endpoint returns and
  what storage holds under `tenants/<tenant>/adapters/v<N>/`: `adapter_model.safetensors` +
  `adapter_config.json` (with `base_model_name_or_path` pointing at the same base and revision).
  A deployment syncs verified folders (sha256 checked, as here) onto the inference servers'
  adapter volume, or points LoRAX at the S3 prefix; the chat service then sends the request to
  the server with `model`/`adapter_id` = the routed version instead of calling this runtime.
  Lineage, A/B stickiness and per-version metrics do not change.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

SERVED_FILES = ("adapter_model.safetensors", "adapter_config.json")


class ModelUnavailableError(RuntimeError):
    """The base model cannot be loaded (missing folder, bad hub id)."""


@dataclass(frozen=True)
class AdapterRef:
    """What the runtime needs to fetch, verify and name one adapter version."""

    name: str
    label: str
    tenant_id: int
    storage_prefix: str
    files: dict  # file name -> sha256

    @classmethod
    def of(cls, version) -> AdapterRef:
        return cls(
            name=f"t{version.tenant_id}_v{version.number}_{version.sha256[:12]}",
            label=version.version,
            tenant_id=version.tenant_id,
            storage_prefix=version.storage_prefix,
            files={n: s for n, s in (version.files or {}).items() if n in SERVED_FILES},
        )


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    adapter_name: str | None
    seconds: float


def base_model_source() -> tuple[str, str | None]:
    """(path or hub id, revision) of the serving base model."""
    hf_id = getattr(settings, "BASE_MODEL_HF_ID", "") or ""
    if hf_id:
        return hf_id, getattr(settings, "BASE_MODEL_REVISION", None) or None
    return str(settings.BASE_MODEL_PATH), None


def local_cache_dir() -> Path:
    configured = getattr(settings, "ADAPTER_LOCAL_CACHE_DIR", None)
    return Path(configured) if configured else Path(settings.VAR_DIR) / "adapter-cache"


class ModelRuntime:
    """Base model + LRU of PEFT adapters for one process; thread-safe, one generation at a time."""

    def __init__(self, *, source: str, revision: str | None, cache_size: int, cache_dir: Path):
        self.source = source
        self.revision = revision
        self.cache_size = max(1, int(cache_size))
        self.cache_dir = Path(cache_dir)
        self._lock = threading.RLock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._adapters: OrderedDict[str, AdapterRef] = OrderedDict()
        self.stats = {"base_loads": 0, "adapter_loads": 0, "evictions": 0, "integrity_errors": 0}

    # -- base model --------------------------------------------------------------------------

    def _ensure_base(self) -> None:
        if self._model is not None:
            return
        from training.trainer.modeling import load_model_and_tokenizer

        source_path = Path(self.source)
        if not self.revision and not source_path.exists() and source_path.is_absolute():
            raise ModelUnavailableError(f"The base model folder {self.source} does not exist.")
        try:
            self._model, self._tokenizer = load_model_and_tokenizer(self.source,
                                                                     revision=self.revision)
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(f"The base model {self.source} cannot be loaded: "
                                        f"{exc}") from exc
        self.stats["base_loads"] += 1

    @property
    def loaded_adapters(self) -> list[str]:
        return list(self._adapters)

    # -- adapters ----------------------------------------------------------------------------

    def _materialize(self, ref: AdapterRef) -> Path:
        """Copy the adapter's files from storage into the local cache, verified by sha256."""
        from adapters.services import (
            AdapterIntegrityError,
            safetensors_header_check,
            sha256_of_file,
            stored_files_read,
        )

        missing = [n for n in SERVED_FILES if n not in ref.files]
        if missing:
            raise AdapterIntegrityError(f"{ref.label} has no recorded sha256 for {missing}.")
        target = self.cache_dir / str(ref.tenant_id) / ref.name
        if target.is_dir():
            # A local copy from an earlier load (or another process): verify it again anyway.
            if all((target / n).is_file() and sha256_of_file(target / n) == ref.files[n]
                   for n in SERVED_FILES):
                return target
            shutil.rmtree(target, ignore_errors=True)
        staging = target.with_name(f".{ref.name}.{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True, exist_ok=True)
        try:
            contents, problems = stored_files_read(
                storage_prefix=ref.storage_prefix,
                expected={name: ref.files[name] for name in SERVED_FILES})
            for name, data in contents.items():
                (staging / name).write_bytes(data)
            if problems:
                self.stats["integrity_errors"] += 1
                raise AdapterIntegrityError(
                    f"Adapter {ref.label} failed its integrity check and was not loaded.",
                    details={"version": ref.label, "files": problems})
            safetensors_header_check((staging / SERVED_FILES[0]).read_bytes(),
                                     name=SERVED_FILES[0])
            if target.exists():  # another thread/process won the race with identical files
                shutil.rmtree(staging, ignore_errors=True)
            else:
                staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def _ensure_adapter(self, ref: AdapterRef) -> None:
        if ref.name in self._adapters:
            self._adapters.move_to_end(ref.name)
            return
        from peft import PeftModel

        folder = self._materialize(ref)
        if isinstance(self._model, PeftModel):
            self._model.load_adapter(str(folder), adapter_name=ref.name)
        else:
            self._model = PeftModel.from_pretrained(self._model, str(folder),
                                                    adapter_name=ref.name)
        self._model.eval()
        self._adapters[ref.name] = ref
        self.stats["adapter_loads"] += 1
        while len(self._adapters) > self.cache_size:
            old, _ = self._adapters.popitem(last=False)
            self._model.delete_adapter(old)
            self.stats["evictions"] += 1
            logger.info("adapter %s evicted from the runtime cache", old)

    # -- generation --------------------------------------------------------------------------

    def generate(self, *, messages: list[dict], adapter: AdapterRef | None,
                 max_new_tokens: int, temperature: float = 0.0) -> Completion:
        """The assistant's reply, by `adapter` (None = the base model)."""
        from peft import PeftModel

        from training.trainer.modeling import generate_reply

        with self._lock:
            self._ensure_base()
            if adapter is not None:
                self._ensure_adapter(adapter)
            started = time.monotonic()
            model = self._model
            if adapter is not None:
                model.set_adapter(adapter.name)
                text = generate_reply(model, self._tokenizer, messages,
                                      max_new_tokens=max_new_tokens, temperature=temperature)
            elif isinstance(model, PeftModel):
                with model.disable_adapter():
                    text = generate_reply(model, self._tokenizer, messages,
                                          max_new_tokens=max_new_tokens, temperature=temperature)
            else:
                text = generate_reply(model, self._tokenizer, messages,
                                      max_new_tokens=max_new_tokens, temperature=temperature)
            prompt_tokens = len(self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True,
            )["input_ids"])
            completion_tokens = len(self._tokenizer(text, add_special_tokens=False)["input_ids"])
            seconds = time.monotonic() - started
        finish = "length" if completion_tokens >= max_new_tokens else "stop"
        return Completion(text=text, prompt_tokens=prompt_tokens,
                          completion_tokens=completion_tokens, finish_reason=finish,
                          adapter_name=adapter.name if adapter else None, seconds=seconds)


_runtime: ModelRuntime | None = None
_runtime_lock = threading.Lock()


def _wanted_config() -> dict:
    source, revision = base_model_source()
    return {"source": source, "revision": revision,
            "cache_size": int(settings.ADAPTER_CACHE_SIZE), "cache_dir": local_cache_dir()}


def runtime_get() -> ModelRuntime:
    """The process's runtime, created on first use. A change of the base-model settings (tests
    point BASE_MODEL_PATH elsewhere) builds a new one; in production they never change."""
    global _runtime
    wanted = _wanted_config()
    current = _runtime
    if current is not None and _matches(current, wanted):
        return current
    with _runtime_lock:
        if _runtime is None or not _matches(_runtime, wanted):
            _runtime = ModelRuntime(**wanted)
        return _runtime


def _matches(runtime: ModelRuntime, wanted: dict) -> bool:
    return (runtime.source == wanted["source"] and runtime.revision == wanted["revision"]
            and runtime.cache_size == wanted["cache_size"]
            and runtime.cache_dir == Path(wanted["cache_dir"]))


def runtime_reset() -> None:
    """Forget the process's runtime (tests that need a cold start; never needed to activate)."""
    global _runtime
    with _runtime_lock:
        _runtime = None
