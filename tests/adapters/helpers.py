"""Building real adapter result folders (what the trainer leaves behind) for the adapters tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
