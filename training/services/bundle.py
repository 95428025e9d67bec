"""The job bundle: the trainer's input folder (the snapshot's data files, job.json, the parent
adapter), written by the runner before it submits."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage

from training import snapshots
from training.models import TrainingJob
from training.parameters import dpo_anchored
from training.trainer.config import TrainSpec


def bundle_dir_for(job: TrainingJob) -> Path:
    return Path(settings.TRAINING_WORK_DIR) / job.id


def training_job_bundle_write(*, job: TrainingJob) -> Path:
    """The trainer's input folder: the snapshot's data files, job.json, the parent adapter."""
    bundle = bundle_dir_for(job)
    bundle.mkdir(parents=True, exist_ok=True)
    snapshots.snapshot_download(prefix=job.snapshot_prefix, manifest=job.snapshot_manifest,
                               dest=bundle)
    init_adapter = None
    if job.parent_version_id:
        init_adapter = _download_adapter(job.parent_version, bundle / "init_adapter")
    config = _job_config(job, init_adapter)
    (bundle / "job.json").write_text(json.dumps(config, indent=2) + "\n")
    return bundle


def _job_config(job: TrainingJob, init_adapter: Path | None) -> dict:
    """job.json (the trainer's config, seam 2) from the job's resolved parameters."""
    params = job.params
    spec = params.get("base_model_spec") or {"path": str(settings.BASE_MODEL_PATH)}
    base_model = ({"path": spec["path"]} if spec.get("path")
                  else {"hf_id": spec["hf_id"], "revision": spec.get("revision")})
    steps_per_epoch = max(1, math.ceil(job.training_samples / int(params["batch_size"])))
    has_eval = job.eval_samples > 0
    train = {
        "epochs": params["epochs"],
        "learning_rate": params["learning_rate"],
        "batch_size": params["batch_size"],
        "warmup_ratio": params["warmup_ratio"],
        "weight_decay": params["weight_decay"],
        "max_length": params.get("max_length", TrainSpec.max_length),
        "seed": params.get("seed", TrainSpec.seed),
        # Evaluate and checkpoint once an epoch: the loss curve gets an eval point per epoch
        # and a resumed run loses at most one epoch.
        "eval_every": steps_per_epoch,
        "save_every": steps_per_epoch,
        "early_stopping_patience": params.get("early_stopping_patience"),
    }
    if job.method in ("dpo", "kto"):
        train["beta"] = params["beta"]
    if job.method == "dpo" and params.get("sft_weight"):
        train["sft_weight"] = params["sft_weight"]
    if job.method == "sft" and params.get("replay_rows"):
        train["replay_rows"] = params["replay_rows"]
    if job.method == "sft" and params.get("kl_to_base"):
        train["kl_to_base"] = params["kl_to_base"]
    if job.method == "dpo" and dpo_anchored(params):
        # A DPO job's replay rows are only the KL term's anchors: both or neither.
        train.update(replay_rows=params["replay_rows"], kl_to_base=params["kl_to_base"])
    if job.method == "sft" and params.get("replay_weight", 1.0) != 1.0:
        train["replay_weight"] = params["replay_weight"]
    if params.get("scope_gate"):
        train["scope_gate"] = params["scope_gate"]
    if settings.TRAINING_PRECISION != "auto":
        train["precision"] = settings.TRAINING_PRECISION
    return {
        "job_id": job.id,
        "method": job.method,
        "base_model": base_model,
        "init_adapter": str(init_adapter) if init_adapter else None,
        "data": {"train": "train.jsonl", "eval": "eval.jsonl" if has_eval else None,
                 **({"replay_prompts": "replay.jsonl"}
                    if "replay.jsonl" in (job.snapshot_manifest or {}).get("files", {}) else {})},
        "lora": {"r": params["lora_r"], "alpha": params["lora_alpha"],
                 "dropout": params["lora_dropout"], "target_modules": params["target_modules"]},
        "train": train,
        "output_dir": "output",
        "preset": job.preset or None,
        "deepspeed": None,
        "resume": job.attempt > 1,
    }


def _download_adapter(version, dest: Path) -> Path:
    """The parent version's adapter files, each checked against its stored sha256, and its
    scope (train.scope_gate) when it has one."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, digest in (version.files or {}).items():
        if not name.endswith((".safetensors", ".json")) or name == "manifest.json":
            continue
        with default_storage.open(f"{version.storage_prefix}/{name}", "rb") as handle:
            data = handle.read()
        expected = digest.get("sha256") if isinstance(digest, dict) else digest
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise ValueError(f"{version.version}/{name} does not match its sha256")
        (dest / name).write_bytes(data)
    scope = (version.manifest or {}).get("scope")
    if scope:
        # The trainer merges the parent's scope into the new version's (train.scope_gate).
        from training.trainer.scope import PARENT_SCOPE_FILE

        (dest / PARENT_SCOPE_FILE).write_text(json.dumps(scope))
    return dest


def training_job_bundle_config_resume(job: TrainingJob) -> None:
    """Flip job.json's `resume` on for a resubmission (the local bundle; Slurm rewrites its own)."""
    path = Path(job.work_dir) / "job.json"
    if path.is_file():
        config = json.loads(path.read_text())
        config["resume"] = True
        path.write_text(json.dumps(config, indent=2) + "\n")
