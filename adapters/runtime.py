"""The model runtime: base models per process (an LRU), tenants' LoRA adapters on top of them.

How it works
------------
* Base models are named by `settings.BASE_MODELS` (name -> folder; `DEFAULT_BASE_MODEL` answers
  "base", its folder overridable with `BASE_MODEL_PATH`; `BASE_MODEL_HF_ID` + `BASE_MODEL_REVISION`
  replace it with a hub model). `base_ref_resolve` turns what a version records (a configured
  name, a folder or a hub id, plus the manifest's revision) into a `BaseRef`.
* A base is loaded lazily by the first request that needs it, on the hardware's device and dtype
  (`serving_device_and_dtype`: bf16 on a bf16-capable CUDA GPU, fp32 on the CPU). At most
  `settings.BASE_MODEL_CACHE_SIZE` bases stay resident; the least recently used one is dropped
  together with its adapters. Each adapter version is served on the base it was trained on.
* Adapters are loaded through PEFT by name: the first one on a base with `PeftModel.
  from_pretrained(base, dir, adapter_name=...)`, the next ones with `load_adapter(dir,
  adapter_name=...)`. A request selects its adapter with `set_adapter(name)`; the base model
  answers inside `disable_adapter()`. At most `settings.ADAPTER_CACHE_SIZE` adapters stay loaded
  (over all bases); the least recently used one is dropped with `delete_adapter`.
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
* Generation follows the model's own `generation_config` (training.trainer.generation): greedy
  unless the request asks for a temperature, stopping at the chat template's end-of-turn token,
  which never reaches the reply's text. `generate` answers whole; `stream` runs `generate` in a
  thread with transformers' `TextIteratorStreamer` and hands out the text as it comes.
* Batching: greedy `generate` calls go through one batcher thread per runtime. Requests that
  arrive within `SERVING_BATCH_WINDOW_MS` of the oldest waiting one (up to `SERVING_MAX_BATCH`,
  same base, no more distinct adapters than the cache holds) are generated in one left-padded
  call, each row with its own adapter: `adapters.lora_rows` gathers the rows' LoRA matrices
  once per batch so that every layer adds them in two batched products whatever the mix (PEFT's
  mixed-adapter batch, `adapter_names`, loops over the adapters in every layer and remains the
  path for anything but plain linear LoRA). Each request gets the completion it gets alone (its
  own length limit and stop), or its own error.
* One lock serialises generation: `set_adapter` (and `lora_rows`, which swaps the LoRA layers'
  forward for a batch) changes state shared by every thread, so two
  requests must not interleave between switching and generating. A stream holds the lock from
  the request's thread (loading and switching) to the end of its generation thread (a plain
  `Lock`, released by the thread that finishes). This is the right trade-off for small
  deployments on a CPU; it is not how to serve many tenants at high concurrency (see below).

Serving at scale: vLLM or LoRAX
-------------------------------
A larger deployment hands generation to a multi-LoRA inference server and keeps everything else
(version rows, activation, A/B routing, logging, metrics) in this app: with
`INFERENCE_SERVER_URL` set, `adapters.inference_server` registers each version on a server that
speaks vLLM's API and sends chat requests there; this runtime then serves only versions on other
bases and the evaluation. LoRAX (`"adapter_id"`, `"adapter_source": "local"` or `s3`) loads the
same PEFT layout: `adapter_model.safetensors` + `adapter_config.json`, exactly what the download
endpoint returns and what storage holds under `tenants/<tenant>/adapters/v<N>/`.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from adapters.model_refs import (  # noqa: F401 - re-exported: callers import them from here
    SERVED_FILES,
    AdapterRef,
    BaseRef,
    Completion,
    LoadedBase,
    ModelUnavailableError,
    base_model_source,
    base_models_configured,
    base_ref_resolve,
    default_base_ref,
    finish_reason,
    local_cache_dir,
    serving_device_and_dtype,
    version_base_ref,
)
from adapters.streaming import CompletionStream

logger = logging.getLogger(__name__)


# After a batch, how many batching windows a request that waited through it may wait for the
# clients that batch answered to come back (see `_batch_loop`).
REGROUP_WINDOWS = 5


@dataclass
class _Request:
    """One greedy chat request waiting for the batcher."""

    messages: list[dict]
    adapter: AdapterRef | None
    base: BaseRef
    max_new_tokens: int
    queued_at: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    completion: Completion | None = None
    error: BaseException | None = None


class ModelRuntime:
    """An LRU of base models, each with its PEFT adapters; thread-safe, one generation at a
    time. `source`/`revision` name the base that answers when a request names none (default:
    the settings' default base, read per request)."""

    def __init__(self, *, source: str | None = None, revision: str | None = None,
                 cache_size: int, cache_dir: Path, base_cache_size: int = 2,
                 max_batch: int = 1, batch_window: float = 0.0):
        self.source = source
        self.revision = revision
        self.cache_size = max(1, int(cache_size))
        self.base_cache_size = max(1, int(base_cache_size))
        self.cache_dir = Path(cache_dir)
        self.max_batch = max(1, int(max_batch))
        self.batch_window = max(0.0, float(batch_window))
        self._lock = threading.Lock()
        self._bases: OrderedDict[str, LoadedBase] = OrderedDict()
        self._adapters: OrderedDict[str, tuple[str, AdapterRef]] = OrderedDict()
        self._queue: list[_Request] = []
        self._queue_cond = threading.Condition()
        self._batcher: threading.Thread | None = None
        self.stats = {"base_loads": 0, "base_evictions": 0, "adapter_loads": 0, "evictions": 0,
                      "integrity_errors": 0, "batches": 0, "batched_requests": 0,
                      "largest_batch": 0, "mixed_batches": 0, "peft_mixed_batches": 0,
                      "regrouped": 0, "regroup_timeouts": 0}

    # -- base models -------------------------------------------------------------------------

    def _default_base(self) -> BaseRef:
        return BaseRef(self.source, self.revision) if self.source else default_base_ref()

    def _ensure_base(self, ref: BaseRef) -> LoadedBase:
        loaded = self._bases.get(ref.key)
        if loaded is not None:
            self._bases.move_to_end(ref.key)
            return loaded
        from training.trainer.generation import end_of_turn_strings
        from training.trainer.modeling import load_model_and_tokenizer

        source_path = Path(ref.source)
        if not ref.revision and not source_path.exists() and source_path.is_absolute():
            raise ModelUnavailableError(f"The base model folder {ref.source} does not exist.")
        device, dtype = serving_device_and_dtype()
        try:
            model, tokenizer = load_model_and_tokenizer(ref.source, revision=ref.revision,
                                                        dtype=dtype, device=device)
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(f"The base model {ref.source} cannot be loaded: "
                                        f"{exc}") from exc
        loaded = LoadedBase(ref=ref, model=model, tokenizer=tokenizer,
                             end_strings=end_of_turn_strings(tokenizer, model.generation_config))
        self._bases[ref.key] = loaded
        self.stats["base_loads"] += 1
        while len(self._bases) > self.base_cache_size:
            old_key, _ = self._bases.popitem(last=False)
            for name in [n for n, (key, _) in self._adapters.items() if key == old_key]:
                del self._adapters[name]
            self.stats["base_evictions"] += 1
            logger.info("base model %s evicted from the runtime cache", old_key)
        return loaded

    @property
    def loaded_bases(self) -> list[str]:
        return list(self._bases)

    @property
    def loaded_adapters(self) -> list[str]:
        return list(self._adapters)

    # -- adapters ----------------------------------------------------------------------------

    def _materialize(self, ref: AdapterRef) -> Path:
        from adapters.services import AdapterIntegrityError

        try:
            return adapter_files_materialize(ref, self.cache_dir)
        except AdapterIntegrityError:
            self.stats["integrity_errors"] += 1
            raise

    def _ensure_adapter(self, base: LoadedBase, ref: AdapterRef) -> None:
        if ref.name in self._adapters:
            self._adapters.move_to_end(ref.name)
            return
        from peft import PeftModel

        folder = self._materialize(ref)
        if isinstance(base.model, PeftModel):
            base.model.load_adapter(str(folder), adapter_name=ref.name)
        else:
            base.model = PeftModel.from_pretrained(base.model, str(folder), adapter_name=ref.name)
        base.model.eval()
        self._adapters[ref.name] = (base.ref.key, ref)
        self.stats["adapter_loads"] += 1
        while len(self._adapters) > self.cache_size:
            old, (base_key, _) = self._adapters.popitem(last=False)
            owner = self._bases.get(base_key)
            if owner is not None:
                owner.model.delete_adapter(old)
            self.stats["evictions"] += 1
            logger.info("adapter %s evicted from the runtime cache", old)

    # -- generation --------------------------------------------------------------------------

    def _prepare(self, adapter: AdapterRef | None, base: BaseRef | None) -> tuple[LoadedBase,
                                                                                  Any]:
        """Load what answers and select it; (the loaded base, a context manager to generate
        in). Called with the lock held."""
        import contextlib

        from peft import PeftModel

        wanted = (adapter.base if adapter is not None else None) or base or self._default_base()
        loaded = self._ensure_base(wanted)
        if adapter is not None:
            self._ensure_adapter(loaded, adapter)
            loaded.model.set_adapter(adapter.name)
            return loaded, contextlib.nullcontext()
        if isinstance(loaded.model, PeftModel):
            return loaded, loaded.model.disable_adapter()
        return loaded, contextlib.nullcontext()

    @staticmethod
    def _inputs(loaded: LoadedBase, messages: list[dict]) -> dict:
        encoded = loaded.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        device = next(loaded.model.parameters()).device
        return {"input_ids": encoded["input_ids"].to(device),
                "attention_mask": encoded["attention_mask"].to(device)}

    def generate(self, *, messages: list[dict], adapter: AdapterRef | None,
                 max_new_tokens: int, temperature: float = 0.0, top_p: float | None = None,
                 base: BaseRef | None = None) -> Completion:
        """The assistant's whole reply, by `adapter` on its base (None = the base model).

        Greedy requests go through the batcher (when `max_batch` > 1): those that arrive
        together are generated in one batch, whatever adapter each needs."""
        if self.max_batch > 1 and not (temperature and temperature > 0):
            return self._generate_batched(messages=messages, adapter=adapter, base=base,
                                          max_new_tokens=max_new_tokens)
        import torch

        from training.trainer.generation import generation_kwargs, reply_clean, stop_token_ids

        with self._lock:
            loaded, context = self._prepare(adapter, base)
            started = time.monotonic()
            inputs = self._inputs(loaded, messages)
            kwargs = generation_kwargs(loaded.model, loaded.tokenizer,
                                       max_new_tokens=max_new_tokens, temperature=temperature,
                                       top_p=top_p)
            with context, torch.no_grad():
                output = loaded.model.generate(**inputs, **kwargs)
            new_tokens = output[0, inputs["input_ids"].shape[1]:]
            text = reply_clean(loaded.tokenizer.decode(new_tokens, skip_special_tokens=True),
                               loaded.end_strings)
            seconds = time.monotonic() - started
        return Completion(
            text=text, prompt_tokens=int(inputs["input_ids"].shape[1]),
            completion_tokens=int(new_tokens.shape[0]),
            finish_reason=finish_reason(new_tokens, stop_token_ids(kwargs),
                                       max_new_tokens),
            adapter_name=adapter.name if adapter else None, seconds=seconds)

    # -- batching: requests that arrive together, one generate call ---------------------------

    def _generate_batched(self, *, messages: list[dict], adapter: AdapterRef | None,
                          base: BaseRef | None, max_new_tokens: int) -> Completion:
        wanted = (adapter.base if adapter is not None else None) or base or self._default_base()
        if adapter is not None and adapter.name not in self._adapters:
            # Fetch and verify a cold adapter's files here, outside the generation lock (object
            # storage round trips); loading it into the model waits for the batcher.
            self._materialize(adapter)
        request = _Request(messages=messages, adapter=adapter, base=wanted,
                           max_new_tokens=int(max_new_tokens))
        with self._queue_cond:
            self._queue.append(request)
            if self._batcher is None or not self._batcher.is_alive():
                self._batcher = threading.Thread(target=self._batch_loop, name="chat-batcher",
                                                 daemon=True)
                self._batcher.start()
            self._queue_cond.notify()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.completion

    def _batch_loop(self) -> None:
        ended, answered = 0.0, 0  # when the last batch ended, and how many requests it answered
        while True:
            with self._queue_cond:
                while not self._queue:
                    self._queue_cond.wait()
                first = self._queue[0]
                waited = sum(1 for r in self._queue if r.queued_at < ended)
                if waited:
                    # Requests that waited through the last batch: the clients that batch just
                    # answered are likely to send their next request within moments. Starting
                    # without them would make them wait a whole generation (and the batches stay
                    # split from then on), so wait up to `REGROUP_WINDOWS` windows from the end
                    # of that batch for as many requests as it answered.
                    want = min(waited + answered, self.max_batch)
                    came = self._queue_cond.wait_for(
                        lambda want=want: len(self._queue) >= want,
                        timeout=max(0.0, ended + self.batch_window * REGROUP_WINDOWS
                                    - time.monotonic()))
                    self.stats["regrouped" if came else "regroup_timeouts"] += 1
            # Otherwise the window counts from the first waiting request's arrival.
            delay = first.queued_at + self.batch_window - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with self._lock:
                with self._queue_cond:
                    batch = self._batch_take()
                self._batch_run(batch)
            ended, answered = time.monotonic(), len(batch)

    def _batch_take(self) -> list[_Request]:
        """The oldest request and the next ones on its base, up to `max_batch` requests and as
        many distinct adapters as the cache holds (so loading one never evicts another of the
        same batch). Call with the queue's condition held."""
        base_key = self._queue[0].base.key
        batch: list[_Request] = []
        adapters: set[str] = set()
        for request in list(self._queue):
            if len(batch) >= self.max_batch:
                break
            if request.base.key != base_key:
                continue
            name = request.adapter.name if request.adapter is not None else None
            if name is not None and name not in adapters and len(adapters) >= self.cache_size:
                continue
            if name is not None:
                adapters.add(name)
            batch.append(request)
            self._queue.remove(request)
        return batch

    def _batch_run(self, batch: list[_Request]) -> None:
        """Load what the batch needs and generate it; each request gets its completion or its
        own error (a tampered adapter fails its requests only). Call with the lock held."""
        ready: list[_Request] = []
        try:
            loaded = self._ensure_base(batch[0].base)
        except BaseException as exc:  # noqa: BLE001 - handed to each waiting request
            for request in batch:
                request.error = exc
                request.done.set()
            return
        for request in batch:
            try:
                if request.adapter is not None:
                    self._ensure_adapter(loaded, request.adapter)
                ready.append(request)
            except BaseException as exc:  # noqa: BLE001
                request.error = exc
                request.done.set()
        if not ready:
            return
        try:
            for request, completion in zip(ready, self._batch_generate(loaded, ready),
                                           strict=True):
                request.completion = completion
        except BaseException as exc:  # noqa: BLE001
            logger.exception("batched generation failed")
            for request in ready:
                request.error = ModelUnavailableError(f"Generation failed: {exc}")
        finally:
            for request in ready:
                request.done.set()

    def _batch_generate(self, loaded: LoadedBase, requests: list[_Request]) -> list[Completion]:
        """One left-padded greedy `generate` for all, each row with its own adapter (or the
        base): plain linear LoRA through `adapters.lora_rows` (two matrix products per layer
        whatever the mix), anything else through PEFT's mixed-adapter batch (`adapter_names`,
        "__base__" for the base model)."""
        import contextlib

        import torch
        from peft import PeftModel

        from adapters.lora_rows import rows_lora
        from training.trainer.generation import (
            chat_batch,
            generation_kwargs,
            reply_clean,
            stop_token_ids,
        )

        started = time.monotonic()
        tokenizer, model = loaded.tokenizer, loaded.model
        kwargs = generation_kwargs(model, tokenizer, max_new_tokens=max(
            r.max_new_tokens for r in requests))
        pad_id = kwargs["generation_config"].pad_token_id
        stops = stop_token_ids(kwargs)
        ids, mask, prompt_lengths = chat_batch(tokenizer, [r.messages for r in requests],
                                               pad_id=pad_id,
                                               device=next(model.parameters()).device)
        width = ids.shape[1]
        names = [r.adapter.name if r.adapter is not None else None for r in requests]
        context: Any = contextlib.nullcontext()
        extra: dict[str, Any] = {}
        if isinstance(model, PeftModel):
            if len(set(names)) > 1:
                self.stats["mixed_batches"] += 1
            lean = rows_lora(model, names)
            if lean is not None:
                context = lean
            elif all(n is None for n in names):
                context = model.disable_adapter()
            elif len(set(names)) > 1:
                extra["adapter_names"] = [n or "__base__" for n in names]
                self.stats["peft_mixed_batches"] += 1
            else:
                model.set_adapter(names[0])
        with context, torch.no_grad():
            output = model.generate(input_ids=ids, attention_mask=mask, **kwargs, **extra)
        seconds = time.monotonic() - started
        self.stats["batches"] += 1
        self.stats["batched_requests"] += len(requests)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(requests))
        completions = []
        for row, request, prompt_tokens in zip(output[:, width:].tolist(), requests,
                                               prompt_lengths, strict=True):
            row = row[:request.max_new_tokens]
            cut = next((i + 1 for i, token in enumerate(row) if token in stops), len(row))
            new_tokens = row[:cut]
            text = reply_clean(tokenizer.decode(new_tokens, skip_special_tokens=True),
                               loaded.end_strings)
            completions.append(Completion(
                text=text, prompt_tokens=prompt_tokens, completion_tokens=len(new_tokens),
                finish_reason=finish_reason(new_tokens, stops, request.max_new_tokens),
                adapter_name=request.adapter.name if request.adapter else None,
                seconds=seconds))
        return completions

    def generate_batch(self, *, conversations: list[list[dict]], adapter: AdapterRef | None,
                       max_new_tokens: int, base: BaseRef | None = None,
                       batch_size: int = 16) -> list[str]:
        """Greedy replies to many conversations (left-padded batches; the evaluation's path).
        Holds the runtime for the whole call: chat requests wait, as for any generation."""
        from training.trainer.generation import greedy_replies

        with self._lock:
            loaded, context = self._prepare(adapter, base)
            with context:
                replies = greedy_replies(loaded.model, loaded.tokenizer, conversations,
                                         max_new_tokens=max_new_tokens, batch_size=batch_size)
        return [text for text, _ in replies]

    def base_branches(self, *, conversations: list[list[dict]], checks: list,
                      max_new_tokens: int, base: BaseRef | None = None) -> list[dict]:
        """For each conversation the base answers right (`checks[k](text)`), how firmly it
        holds that answer: `training.trainer.generation.reply_branches` on the base, adapters
        off. The evaluation's note on a regression (a base near-tie, or knowledge lost)."""
        from training.trainer.generation import reply_branches

        with self._lock:
            loaded, context = self._prepare(None, base)
            with context:
                return [reply_branches(loaded.model, loaded.tokenizer, conversation, check,
                                       max_new_tokens=max_new_tokens)
                        for conversation, check in zip(conversations, checks, strict=True)]

    def stream(self, *, messages: list[dict], adapter: AdapterRef | None, max_new_tokens: int,
               temperature: float = 0.0, top_p: float | None = None,
               base: BaseRef | None = None) -> CompletionStream:
        """Start generating in a thread; the returned stream yields the reply's text pieces.

        Loading and integrity errors are raised here, before anything is streamed. The
        generation runs to its end whether or not the caller keeps reading (a dropped client
        still gets its message logged); `CompletionStream.completion()` waits for it.
        """
        from transformers import TextIteratorStreamer

        from training.trainer.generation import generation_kwargs

        self._lock.acquire()
        try:
            loaded, context = self._prepare(adapter, base)
            inputs = self._inputs(loaded, messages)
            kwargs = generation_kwargs(loaded.model, loaded.tokenizer,
                                       max_new_tokens=max_new_tokens, temperature=temperature,
                                       top_p=top_p)
            streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True,
                                            skip_special_tokens=True)
            stream = CompletionStream(loaded=loaded, streamer=streamer, inputs=inputs,
                                      kwargs=kwargs, max_new_tokens=max_new_tokens,
                                      adapter_name=adapter.name if adapter else None)
            thread = threading.Thread(target=stream._run, args=(context, self._lock),
                                      name="chat-stream", daemon=True)
            thread.start()
        except BaseException:
            self._lock.release()
            raise
        stream._thread = thread
        return stream


def adapter_files_materialize(ref: AdapterRef, cache_dir: Path) -> Path:
    """Copy the adapter's files from storage into `cache_dir/<tenant id>/<name>`, each verified
    by its sha256 (and the weights' safetensors header); an existing copy is verified again."""
    from adapters.services import (
        AdapterIntegrityError,
        safetensors_header_check,
        sha256_of_file,
        stored_files_read,
    )

    missing = [n for n in SERVED_FILES if n not in ref.files]
    if missing:
        raise AdapterIntegrityError(f"{ref.label} has no recorded sha256 for {missing}.")
    target = Path(cache_dir) / str(ref.tenant_id) / ref.name
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
            raise AdapterIntegrityError(
                f"Adapter {ref.label} failed its integrity check and was not loaded.",
                details={"version": ref.label, "files": problems})
        safetensors_header_check((staging / SERVED_FILES[0]).read_bytes(),
                                 name=SERVED_FILES[0])
        try:
            staging.rename(target)
        except OSError:
            # Another thread or process renamed its verified copy of the same files in first
            # (a rename onto an existing folder fails): use that one.
            if not target.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


_runtime: ModelRuntime | None = None
_runtime_lock = threading.Lock()


def _wanted_config() -> dict:
    return {"cache_size": int(settings.ADAPTER_CACHE_SIZE),
            "base_cache_size": int(getattr(settings, "BASE_MODEL_CACHE_SIZE", 2)),
            "cache_dir": local_cache_dir(),
            "max_batch": int(getattr(settings, "SERVING_MAX_BATCH", 1)),
            "batch_window": float(getattr(settings, "SERVING_BATCH_WINDOW_MS", 0)) / 1000.0}


def runtime_get() -> ModelRuntime:
    """The process's runtime, created on first use. Bases are keyed by path inside it, so a
    changed BASE_MODEL_PATH only loads another base; a change of the cache settings (tests do
    that) builds a new runtime; in production they never change."""
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
    return (runtime.source is None and runtime.cache_size == wanted["cache_size"]
            and runtime.base_cache_size == wanted["base_cache_size"]
            and runtime.cache_dir == Path(wanted["cache_dir"])
            and runtime.max_batch == wanted["max_batch"]
            and runtime.batch_window == wanted["batch_window"])


def runtime_reset() -> None:
    """Forget the process's runtime (tests that need a cold start; never needed to activate)."""
    global _runtime
    with _runtime_lock:
        _runtime = None
