"""The one place tests build rows and artifacts directly (instead of through the API).

Rows: training jobs (plain, or finished with their loss curve), adapter versions, feedback.
Files: adapter result folders as the trainer leaves them (a real untrained PEFT LoRA and its
manifest), minimal safetensors files and stored adapter files.

Tests that exercise a write path use the API or the services instead; these builders are for
the state a test starts from. Every builder takes field overrides as keyword arguments.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

from django.utils import timezone

# --- rows ------------------------------------------------------------------------------------


def job(tenant, *, method: str = "sft", base_model: str = "tiny-base", **fields):
    """A TrainingJob row; the model's defaults (status queued, backend local...) for the rest."""
    from training.models import TrainingJob

    return TrainingJob.objects.create(tenant=tenant, method=method, base_model=base_model,
                                      **fields)


def finished_job(tenant, *, method: str = "sft", steps: int = 12, eval_every: int = 4,
                 status: str = "completed", params: dict | None = None,
                 failure_reason: str = "", gpu_hours: float = 0.0, manifest: dict | None = None):
    """A finished job with `steps` training-loss points and an eval point every `eval_every`
    steps, and its final transition event (the rows the training runner writes)."""
    from training.models import TrainingEvent, TrainingMetric

    now = timezone.now()
    row = job(
        tenant, method=method, status=status,
        params=params or {"lora_r": 16, "lora_alpha": 32, "epochs": 3, "learning_rate": 2e-4},
        progress=1.0 if status == "completed" else 0.4, current_epoch=3, total_epochs=3,
        metrics={"loss": 0.5}, training_samples=60, eval_samples=6,
        failure_reason=failure_reason, failure_category="crash" if failure_reason else "",
        gpu_hours=gpu_hours, snapshot_manifest=manifest or {"train": {"records": 60},
                                                            "eval": {"records": 6}},
        started_at=now, finished_at=now,
    )
    for step in range(1, steps + 1):
        extra = {}
        if method == "dpo":
            extra = {"rewards/margins": 0.2 * step, "rewards/accuracies": min(1.0, 0.1 * step)}
        TrainingMetric.objects.create(job=row, kind="train", step=step, epoch=3 * step / steps,
                                      loss=2.5 * math.exp(-step / 5) + 0.1, extra=extra)
        if step % eval_every == 0:
            TrainingMetric.objects.create(job=row, kind="eval", step=step,
                                          epoch=3 * step / steps,
                                          eval_loss=2.6 * math.exp(-step / 6) + 0.2,
                                          extra=extra)
    TrainingEvent.objects.create(job=row, type="transition", from_status="running",
                                 to_status=status, message=f"Job {status}")
    return row


def adapter_version(tenant, number: int, *, job=None, parent=None, active: bool = False,
                    eval_loss: float | None = 0.5, **fields):
    """An AdapterVersion row (no files unless `files`/`storage_prefix` say where they are)."""
    from adapters.models import AdapterVersion

    values = {
        "method": "sft", "base_model": "tiny-base", "training_samples": 60,
        "eval_metrics": {"eval_loss": eval_loss} if eval_loss is not None else {},
        "sha256": f"{number:064x}", "files": {},
        "storage_prefix": f"tenants/{tenant.slug}/adapters/v{number}",
        "is_active": active, "activated_at": timezone.now() if active else None,
        **fields,
    }
    return AdapterVersion.objects.create(tenant=tenant, number=number, job=job, parent=parent,
                                         **values)


def feedback(tenant, *, conversation_external_id: str = "c", message_external_id: str = "m",
             type: str = "correction", **fields):
    """A Feedback row as stored (e.g. one whose message never arrived: excluded_reason)."""
    from feedback.models import Feedback

    return Feedback.objects.create(tenant=tenant,
                                   conversation_external_id=conversation_external_id,
                                   message_external_id=message_external_id, type=type, **fields)


# --- files -----------------------------------------------------------------------------------

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def safetensors_bytes(values: int = 1) -> bytes:
    """A minimal valid safetensors file: one float32 tensor `w` of `values` zeros."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [values],
                               "data_offsets": [0, 4 * values]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + b"\0" * (4 * values)


def store_adapter_files(prefix: str, marker: str) -> dict[str, str]:
    """Write an adapter's three files under `prefix` in the default storage; {name: sha256}."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    contents = {
        "adapter_model.safetensors": safetensors_bytes(),
        "adapter_config.json": json.dumps({"r": 4, "peft_type": "LORA"}).encode(),
        "manifest.json": json.dumps({"format": "synapsex-adapter-manifest/1",
                                     "note": f"adapter of {marker}"}).encode(),
    }
    for name, data in contents.items():
        default_storage.save(f"{prefix}/{name}", ContentFile(data))
    return {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}


def write_manifest(result_dir: Path, *, base_model: str, eval_loss: float | None = 0.5,
                   extra: dict | None = None) -> dict:
    """The manifest the trainer writes: sha256 and size per adapter file, metrics, lineage."""
    adapter = Path(result_dir) / "adapter"
    files = {name: {"sha256": sha256_file(adapter / name), "size": (adapter / name).stat().st_size}
             for name in ADAPTER_FILES}
    final = {"train_loss": 0.1}
    if eval_loss is not None:
        final["eval_loss"] = eval_loss
    manifest = {
        "format": "synapsex-adapter-manifest/1",
        "adapter": {"files": files},
        "metrics": final,
        "base_model": {"path": base_model},
        "hyperparameters": {"lora": {"r": 8, "alpha": 16}, "train": {"epochs": 1}},
        "data": {"snapshot_sha256": "ab" * 32},
        **(extra or {}),
    }
    (Path(result_dir) / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def make_untrained_result_dir(base_path: str | Path, out: Path, *, seed: int = 0,
                              eval_loss: float | None = 0.5) -> Path:
    """A real (randomly initialised, so answers stay the base's) PEFT LoRA saved as safetensors.

    LoRA's B matrix starts at zero, so it is perturbed with the seed: two such adapters have
    different sha256 and load like any trained one.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_path))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj",
                                                                                     "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.add_(torch.randn_like(param) * 1e-4)
    out = Path(out)
    (out / "adapter").mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out / "adapter"), safe_serialization=True)
    write_manifest(out, base_model=str(base_path), eval_loss=eval_loss)
    return out


def stored_file_tamper(path: str, *, offset: int = 100) -> None:
    """Flip one bit of a stored file (default storage), as corruption or an attacker would."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    with default_storage.open(path, "rb") as handle:
        data = bytearray(handle.read())
    data[offset] ^= 0x01
    default_storage.delete(path)
    default_storage.save(path, ContentFile(bytes(data)))
