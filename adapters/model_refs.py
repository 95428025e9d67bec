"""What the serving runtime loads, named: base models (BaseRef) and adapter versions (AdapterRef),
resolved from the BASE_MODELS setting; a finished reply (Completion); the hardware's device and
dtype; where verified adapter copies are kept. No model is loaded here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

SERVED_FILES = ("adapter_model.safetensors", "adapter_config.json")


class ModelUnavailableError(RuntimeError):
    """The base model cannot be loaded (missing folder, bad hub id)."""


@dataclass(frozen=True)
class BaseRef:
    """One base model: a local folder or a hub id (+ revision); the key of the base LRU."""

    source: str
    revision: str | None = None

    @property
    def key(self) -> str:
        return f"{self.source}@{self.revision}" if self.revision else self.source


@dataclass(frozen=True)
class AdapterRef:
    """What the runtime needs to fetch, verify and name one adapter version, and its base."""

    name: str
    label: str
    tenant_id: int
    storage_prefix: str
    files: dict  # file name -> sha256
    base: BaseRef | None = None
    tenant_slug: str = ""

    @classmethod
    def of(cls, version, *, tenant_slug: str | None = None) -> AdapterRef:
        return cls(
            name=f"t{version.tenant_id}_v{version.number}_{version.sha256[:12]}",
            label=version.version,
            tenant_id=version.tenant_id,
            storage_prefix=version.storage_prefix,
            files={n: s for n, s in (version.files or {}).items() if n in SERVED_FILES},
            base=version_base_ref(version),
            tenant_slug=tenant_slug if tenant_slug is not None else version.tenant.slug,
        )

    @property
    def served_name(self) -> str:
        """The name a multi-LoRA server serves it under: `<tenant>-v<N>` (adapters.
        inference_server)."""
        return f"{self.tenant_slug}-{self.label}" if self.tenant_slug else self.name


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    adapter_name: str | None
    seconds: float


def base_models_configured() -> dict[str, str]:
    """Configured base models, name -> folder; the default entry follows BASE_MODEL_PATH (read
    now, so a changed setting is served by the next request)."""
    models = dict(getattr(settings, "BASE_MODELS", {}) or {})
    default_name = getattr(settings, "DEFAULT_BASE_MODEL", None) or "default"
    models[default_name] = str(settings.BASE_MODEL_PATH)
    return models


def base_model_source() -> tuple[str, str | None]:
    """(path or hub id, revision) of the default serving base model."""
    hf_id = getattr(settings, "BASE_MODEL_HF_ID", "") or ""
    if hf_id:
        return hf_id, getattr(settings, "BASE_MODEL_REVISION", None) or None
    return str(settings.BASE_MODEL_PATH), None


def default_base_ref() -> BaseRef:
    source, revision = base_model_source()
    return BaseRef(source, revision)


def base_ref_resolve(label: str | None, *, revision: str | None = None) -> BaseRef:
    """The base a recorded label names: a configured name, the default's hub id, else the label
    itself as a folder or hub id (versions record the folder or hub id their job trained on).
    Empty: the default base."""
    label = (label or "").strip()
    if not label or label in ("base", "default"):
        return default_base_ref()
    configured = base_models_configured()
    if label in configured:
        if label == getattr(settings, "DEFAULT_BASE_MODEL", None):
            return default_base_ref()
        return BaseRef(configured[label])
    hf_id = getattr(settings, "BASE_MODEL_HF_ID", "") or ""
    if hf_id and label == hf_id:
        return BaseRef(hf_id, revision or getattr(settings, "BASE_MODEL_REVISION", None) or None)
    return BaseRef(label, revision or None)


def version_base_ref(version) -> BaseRef:
    """The base an adapter version was trained on (its row, with the manifest's revision)."""
    manifest_base = (version.manifest or {}).get("base_model") or {}
    revision = manifest_base.get("revision") if isinstance(manifest_base, dict) else None
    return base_ref_resolve(version.base_model, revision=revision)


def serving_device_and_dtype() -> tuple[str, Any]:
    """("cuda", bf16) on a bf16-capable CUDA GPU, ("cuda", fp16) on an older one, else
    ("cpu", fp32): bf16 on a CPU is slower than fp32 and rounds the weights for nothing."""
    import torch

    if torch.cuda.is_available():
        return "cuda", (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return "cpu", torch.float32


def local_cache_dir() -> Path:
    configured = getattr(settings, "ADAPTER_LOCAL_CACHE_DIR", None)
    return Path(configured) if configured else Path(settings.VAR_DIR) / "adapter-cache"


@dataclass
class LoadedBase:
    """One resident base model, with its PEFT adapters once one is loaded."""

    ref: BaseRef
    model: Any  # the transformers model, or a PeftModel around it once an adapter is loaded
    tokenizer: Any
    end_strings: list[str] = field(default_factory=list)


def finish_reason(new_tokens, eos_ids: list[int], max_new_tokens: int) -> str:
    """"stop" when the model ended its turn (or generated nothing more), else "length"."""
    ids = [int(t) for t in new_tokens]
    if ids and ids[-1] in eos_ids:
        return "stop"
    return "length" if len(ids) >= max_new_tokens else "stop"
