"""Writes for training jobs: create (checks, quota, snapshot, enqueue), the runner, cancel,
the reconciler, automatic training.

The job's life (ARCHITECTURE "Job states"): a `TrainingJob` row is created `queued` and only then,
on commit, its id goes to the RQ `training` queue. One runner (`training_job_run`, in the worker)
moves it `preparing` (bundle: snapshot + job.json) and hands it to the compute backend; each poll
step (`training_job_advance`) turns the trainer's new events into metric rows and status fields
and maps the backend's state to `running` / `completed` / `failed` / `cancelled`. Transitions go
through `training_job_transition`, which only moves forward and logs a TrainingEvent each time.

What the runner never sees (a worker killed with SIGKILL, a Redis that lost its queue) the
reconciler catches: `training_jobs_reconcile()`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from tenants.api.errors import ApiError
from tenants.models import Tenant
from tenants.services import audit_log_record
from training import compiler, pricing
from training.backends import backend_for
from training.backends import base as backend_states
from training.models import TrainingEvent, TrainingJob, TrainingMetric
from training.signals import training_job_succeeded

logger = logging.getLogger(__name__)

QUEUE_NAME = "training"
_ORDER = {TrainingJob.QUEUED: 0, TrainingJob.PREPARING: 1, TrainingJob.RUNNING: 2}
WEBHOOK_STATUSES = {"queued", "running", "completed", "failed", "cancelled"}
# Failure categories shown to users; the trainer's own categories plus the platform's.
LOST_WORKER = "lost_worker"
RUNNER_ERROR = "runner_error"
# The first words of a failed job's one-line reason, by category.
FAILURE_LABELS = {
    "bad_data": "bad data", "bad_config": "bad configuration", "out_of_memory": "out of memory",
    "nan_loss": "NaN loss", "crash": "trainer crash", LOST_WORKER: "lost worker",
    RUNNER_ERROR: "runner error",
}


class InvalidTransition(ValueError):
    """A status change that would move a job backwards or out of a terminal state."""


# --- parameters ------------------------------------------------------------------------------

@dataclass
class JobRequest:
    """A validated training request (the API serializer's output, or auto-training's)."""

    method: str
    params: dict[str, Any]
    preset: str = ""
    base_model: str | None = None
    continue_from: str | None = None
    dry_run: bool = False
    triggered_by: str = "api"


def training_params_resolve(*, method: str, given: dict[str, Any], preset: str = "") -> dict:
    """Final hyperparameters: method defaults < preset < what the request states explicitly."""
    from training.trainer.config import DPO_DEFAULTS, LORA_DEFAULTS, PRESETS, SFT_DEFAULTS

    params: dict[str, Any] = {
        "lora_r": LORA_DEFAULTS["r"],
        "lora_alpha": LORA_DEFAULTS["alpha"],
        "lora_dropout": LORA_DEFAULTS["dropout"],
        "target_modules": LORA_DEFAULTS["target_modules"],
        "max_length": 1024,
        **(DPO_DEFAULTS if method == "dpo" else SFT_DEFAULTS),
    }
    if method == "sft":
        params["min_feedback_count"] = 50
    else:
        params["min_preference_pairs"] = 100
    if preset:
        params.update(PRESETS[preset])
    params.update({k: v for k, v in given.items() if v is not None})
    return params


def _base_model_spec(name: str | None) -> dict[str, Any]:
    """Which base model a job trains on. Only models the operator configured can be named:
    a tenant never passes a path to the worker."""
    configured: dict[str, dict] = dict(getattr(settings, "TRAINING_BASE_MODELS", {}) or {})
    default_name = settings.BASE_MODEL_HF_ID or Path(settings.BASE_MODEL_PATH).name
    default = ({"hf_id": settings.BASE_MODEL_HF_ID, "revision": settings.BASE_MODEL_REVISION}
               if settings.BASE_MODEL_HF_ID else {"path": str(settings.BASE_MODEL_PATH)})
    configured.setdefault(default_name, default)
    if not name or name in ("default", default_name):
        return {"name": default_name, **default}
    if name not in configured:
        raise ApiError(
            "unknown_base_model", f"Base model {name!r} is not offered on this platform.",
            details={"base_model": [f"Choose one of: {', '.join(sorted(configured))}."]},
            status_code=400,
        )
    return {"name": name, **configured[name]}


def _base_model_label(spec: dict) -> str:
    return spec.get("hf_id") or spec.get("path") or spec["name"]


def _parent_version(*, tenant: Tenant, label: str | None, base_label: str):
    if not label:
        return None
    AdapterVersion = apps.get_model("adapters", "AdapterVersion")
    text = str(label).strip().lower()
    number = text[1:] if text.startswith("v") else text
    version = None
    if number.isdigit():
        version = AdapterVersion.objects.filter(tenant=tenant, number=int(number)).first()
    if version is None:
        raise ApiError("unknown_version", f"Adapter version {label!r} does not exist.",
                       details={"continue_from": ["No such version for this tenant."]},
                       status_code=400)
    if getattr(version, "status", "ready") != "ready":
        raise ApiError("version_archived",
                       f"Adapter version {version.version} is archived; its files are gone.",
                       details={"continue_from": ["Choose a stored (ready) version."]},
                       status_code=409)
    if version.base_model and version.base_model != base_label:
        raise ApiError("base_model_mismatch",
                       f"{version.version} was trained on another base model.",
                       details={"continue_from": [f"{version.version} uses {version.base_model}."]},
                       status_code=400)
    return version


# --- create ------------------------------------------------------------------------------------

def _tenant_backend(tenant: Tenant) -> str:
    chosen = (tenant.settings or {}).get("compute_backend")
    return chosen if chosen in ("local", "slurm") else settings.TRAINING_BACKEND


def _readiness_error(method: str, params: dict, compiled: compiler.CompiledData) -> None:
    if method == "sft":
        need, have = int(params["min_feedback_count"]), compiled.sft_examples
        what = "SFT examples (corrections of known prompts, well-rated answers, dataset " \
               "conversations)"
        field = "min_feedback_count"
    else:
        need, have = int(params["min_preference_pairs"]), compiled.dpo_pairs
        what = "preference pairs (corrections, thumbs up/down on the same prompt, dataset " \
               "preferences)"
        field = "min_preference_pairs"
    if have < need:
        raise ApiError(
            "not_ready",
            f"Not enough training data: {have} {what.split(' (')[0]} available, {need} required.",
            details={field: need, "available": have, "missing": need - have, "counts": what,
                     "excluded": compiled.excluded},
            status_code=409,
        )
    if method == "dpo" and not compiled.train:
        raise ApiError("not_ready", "No preference pairs to train on.",
                       details={"available": have, "missing": 1}, status_code=409)
    if not compiled.train:
        raise ApiError("not_ready", "No training examples to train on.",
                       details={"available": have, "missing": 1}, status_code=409)


def _quota_error(tenant: Tenant) -> ApiError:
    quota = tenant.plan.monthly_job_quota
    return ApiError(
        "quota_exceeded",
        f"The {tenant.plan.name} plan allows {quota} training job(s) a month; this month's are "
        "used up.",
        details={"monthly_job_quota": quota,
                 "used": pricing.jobs_counted_this_month(tenant=tenant),
                 "resets_at": _next_month(pricing.month_start()).isoformat()},
        status_code=429,
    )


def _next_month(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


def training_job_create(*, tenant: Tenant, request: JobRequest, actor: str = "system",
                        ip_address: str | None = None) -> tuple[TrainingJob | None, dict]:
    """Check and create a job; returns (job or None for a dry run, the estimate).

    Checks, each refused with the envelope before anything is queued: the plan trains at all
    (403), the data is ready (409 with what is missing), the monthly quota has a slot (429).
    The quota is counted under a lock on the tenant row, so two concurrent requests cannot both
    take the last slot (the second waits for the first to commit, then counts it).
    """
    plan = tenant.plan
    if not plan.allows_training:
        raise ApiError("plan_does_not_allow_training",
                       f"The {plan.name} plan does not include training; upgrade to train "
                       "adapters.", details={"plan": plan.slug}, status_code=403)
    method = request.method
    params = training_params_resolve(method=method, given=request.params, preset=request.preset)
    spec = _base_model_spec(request.base_model)
    base_label = _base_model_label(spec)
    parent = _parent_version(tenant=tenant, label=request.continue_from, base_label=base_label)
    compiled = compiler.training_data_compile(tenant=tenant, method=method)
    _readiness_error(method, params, compiled)
    backend = _tenant_backend(tenant)
    if backend == "slurm":
        from training.backends.slurm import slurm_allocation_check

        # Refused before queueing (and for dry runs too): a spent allocation is a hard stop.
        slurm_allocation_check()

    estimate = {
        "method": method,
        "training_samples": len(compiled.train),
        "eval_samples": len(compiled.eval),
        "token_count": compiled.token_count,
        "estimated_duration_minutes": pricing.estimate_duration_minutes(
            token_count=compiled.token_count, epochs=params["epochs"], backend=backend),
        "estimated_cost": pricing.job_cost(plan=plan, method=method,
                                           samples=len(compiled.train)),
        "throughput_basis": pricing.backend_tokens_per_second(backend=backend)[1],
        "params": params,
        "preset": request.preset or None,
        "base_model": spec["name"],
        "continue_from": parent.version if parent else None,
        "backend": backend,
    }
    if request.dry_run:
        remaining = pricing.quota_remaining(tenant=tenant)
        if remaining is not None and remaining <= 0:
            raise _quota_error(tenant)
        estimate["quota_remaining"] = remaining
        return None, estimate

    with transaction.atomic():
        # of=("self",): lock the tenant row only, not its plan (shared by many tenants).
        locked = Tenant.objects.select_for_update(of=("self",)).select_related("plan") \
            .get(pk=tenant.pk)
        remaining = pricing.quota_remaining(tenant=locked)
        if remaining is not None and remaining <= 0:
            raise _quota_error(locked)
        job = TrainingJob.objects.create(
            tenant=locked,
            method=method,
            preset=request.preset or "",
            params={**params, "base_model_spec": spec},
            base_model=base_label,
            parent_version=parent,
            triggered_by=request.triggered_by,
            backend=backend,
            total_epochs=math.ceil(float(params["epochs"])),
            training_samples=len(compiled.train),
            eval_samples=len(compiled.eval),
            token_count=compiled.token_count,
            estimated_duration_minutes=estimate["estimated_duration_minutes"],
            estimated_cost=estimate["estimated_cost"],
            metrics={"loss": None, "learning_rate": None, "grad_norm": None,
                     "samples_processed": 0, "tokens_processed": 0},
        )
        prefix, manifest = compiler.snapshot_write(tenant=locked, job_id=job.id, compiled=compiled)
        job.snapshot_prefix = prefix
        job.snapshot_manifest = manifest
        job.save(update_fields=["snapshot_prefix", "snapshot_manifest"])
        TrainingEvent.objects.create(
            job=job, type="created", to_status=TrainingJob.QUEUED,
            message=f"{method.upper()} job queued by {request.triggered_by}",
            data={"triggered_by": request.triggered_by, "actor": actor,
                  "training_samples": job.training_samples, "eval_samples": job.eval_samples,
                  "quota_remaining_after": None if remaining is None else remaining - 1},
        )
        audit_log_record(action="training.job_created", actor=actor, tenant=locked,
                         ip_address=ip_address, target=job.id,
                         details={"method": method, "triggered_by": request.triggered_by})
        transaction.on_commit(lambda: training_job_enqueue(job_id=job.id))
        _webhooks_on_commit(job, TrainingJob.QUEUED)
    estimate["quota_remaining"] = None if remaining is None else remaining - 1
    return job, estimate


def training_job_enqueue(*, job_id: str) -> str | None:
    """Put the job's id on the RQ `training` queue, now (callers run it on commit, so the queue's
    own on-commit deferral is switched off). If Redis is unreachable the job stays queued
    without an RQ job and the reconciler enqueues it later; the request that created it does not
    fail."""
    import django_rq
    from rq import Callback

    job = TrainingJob.objects.get(pk=job_id)
    if job.status != TrainingJob.QUEUED:
        return None
    rq_id = f"{job.id}-{int(time.time() * 1000)}"
    try:
        django_rq.get_queue(QUEUE_NAME, commit_mode="auto").enqueue(
            "training.jobs.training_job_execute", job.id, job_id=rq_id,
            on_failure=Callback("training.jobs.training_job_on_failure"),
            result_ttl=86400, failure_ttl=7 * 86400,
        )
    except Exception:  # noqa: BLE001 - Redis down: the reconciler re-enqueues
        logger.exception("Could not enqueue training job %s; the reconciler will retry", job.id)
        return None
    TrainingJob.objects.filter(pk=job.id).update(rq_job_id=rq_id)
    return rq_id


# --- transitions -------------------------------------------------------------------------------

def _allowed(current: str, to: str) -> bool:
    if current in TrainingJob.TERMINAL:
        return False
    if to in (TrainingJob.FAILED, TrainingJob.CANCELLED):
        return True
    if to == TrainingJob.COMPLETED:
        return current == TrainingJob.RUNNING
    return to in _ORDER and _ORDER[to] == _ORDER[current] + 1


def training_job_transition(*, job: TrainingJob, to_status: str, message: str = "",
                            data: dict | None = None, updates: dict | None = None) -> TrainingJob:
    """Move a job to `to_status` (forward only) and log it; returns the fresh row.

    The row is locked (select_for_update) and re-read, so two writers (the runner and a cancel
    request, say) are serialised and the second sees the first's status: a job that was
    cancelled cannot then be moved to running. Raises InvalidTransition otherwise.
    `updates` are other fields to set in the same write (failure reason, log tail...).
    """
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if not _allowed(locked.status, to_status):
            raise InvalidTransition(f"{locked.id}: {locked.status} -> {to_status} is not allowed")
        now = timezone.now()
        before = locked.status
        locked.status = to_status
        fields = {"status"}
        if to_status == TrainingJob.RUNNING and locked.started_at is None:
            locked.started_at = now
            fields.add("started_at")
        if to_status in TrainingJob.TERMINAL:
            locked.finished_at = now
            fields.add("finished_at")
        for name, value in (updates or {}).items():
            setattr(locked, name, value)
            fields.add(name)
        locked.save(update_fields=sorted(fields))
        TrainingEvent.objects.create(job=locked, type="status", from_status=before,
                                     to_status=to_status, message=message, data=data or {},
                                     created_at=now)
        if to_status in WEBHOOK_STATUSES:
            _webhooks_on_commit(locked, to_status)
    return locked


def _webhooks_on_commit(job: TrainingJob, status: str) -> None:
    from training import webhooks

    job_id = job.id
    transaction.on_commit(lambda: webhooks.webhook_deliveries_create(job_id=job_id,
                                                                       status=status))


def training_job_fail(*, job: TrainingJob, reason: str, category: str, log_tail: str = "",
                      data: dict | None = None) -> TrainingJob:
    """Mark a job failed with a one-line reason (no-op if it already ended)."""
    reason = " ".join(str(reason).split())[:500] or "unknown failure"
    try:
        return training_job_transition(
            job=job, to_status=TrainingJob.FAILED, message=reason,
            data={"category": category, **(data or {})},
            updates={"failure_reason": reason, "failure_category": category,
                     "log_tail": log_tail[-8000:]},
        )
    except InvalidTransition:
        return TrainingJob.objects.get(pk=job.pk)


def training_job_event(*, job: TrainingJob, type: str, message: str = "",
                       data: dict | None = None) -> TrainingEvent:
    return TrainingEvent.objects.create(job=job, type=type, message=message, data=data or {})


# --- the runner --------------------------------------------------------------------------------

def bundle_dir_for(job: TrainingJob) -> Path:
    return Path(settings.TRAINING_WORK_DIR) / job.id


def training_job_bundle_write(*, job: TrainingJob) -> Path:
    """The trainer's input folder: the snapshot's data files, job.json, the parent adapter."""
    bundle = bundle_dir_for(job)
    bundle.mkdir(parents=True, exist_ok=True)
    compiler.snapshot_download(prefix=job.snapshot_prefix, manifest=job.snapshot_manifest,
                               dest=bundle)
    init_adapter = None
    if job.parent_version_id:
        init_adapter = _download_adapter(job.parent_version, bundle / "init_adapter")
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
        "max_length": params.get("max_length", 1024),
        "seed": params.get("seed", 42),
        # Evaluate and checkpoint once an epoch: the loss curve gets an eval point per epoch
        # and a resumed run loses at most one epoch.
        "eval_every": steps_per_epoch,
        "save_every": steps_per_epoch,
        "early_stopping_patience": params.get("early_stopping_patience"),
    }
    if job.method == "dpo":
        train["beta"] = params["beta"]
    config = {
        "job_id": job.id,
        "method": job.method,
        "base_model": base_model,
        "init_adapter": str(init_adapter) if init_adapter else None,
        "data": {"train": "train.jsonl", "eval": "eval.jsonl" if has_eval else None},
        "lora": {"r": params["lora_r"], "alpha": params["lora_alpha"],
                 "dropout": params["lora_dropout"], "target_modules": params["target_modules"]},
        "train": train,
        "output_dir": "output",
        "preset": job.preset or None,
        "deepspeed": None,
        "resume": job.attempt > 1,
    }
    (bundle / "job.json").write_text(json.dumps(config, indent=2) + "\n")
    return bundle


def _download_adapter(version, dest: Path) -> Path:
    import hashlib

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
    return dest


def training_job_run(*, job_id: str) -> TrainingJob:
    """The RQ entry point's body: prepare, submit, and (for the local backend) watch the job
    until it ends. Re-entrant: a job already past `queued` is not started twice."""
    job = TrainingJob.objects.get(pk=job_id)
    if job.status != TrainingJob.QUEUED:
        logger.info("Job %s is %s; nothing to start", job.id, job.status)
        return job
    try:
        job = training_job_transition(job=job, to_status=TrainingJob.PREPARING,
                                      message="Loading data and model",
                                      updates={"heartbeat_at": timezone.now()})
    except InvalidTransition:
        return TrainingJob.objects.get(pk=job_id)
    backend = backend_for(job)
    try:
        bundle = training_job_bundle_write(job=job)
        TrainingJob.objects.filter(pk=job.pk).update(work_dir=str(bundle))
        job.work_dir = str(bundle)
    except Exception as exc:  # noqa: BLE001 - the job says why, the worker carries on
        logger.exception("Preparing job %s failed", job.id)
        return training_job_fail(job=job, reason=f"bad data: could not prepare the job: {exc}",
                                 category="bad_data")
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.is_terminal or job.cancel_requested:
            return job
        try:
            external_id = backend.submit(job, bundle)
        except Exception as exc:  # noqa: BLE001
            logger.exception("Submitting job %s failed", job.id)
            error = exc
        else:
            error = None
            job.external_id = external_id
            job.heartbeat_at = timezone.now()
            job.save(update_fields=["external_id", "heartbeat_at"])
            TrainingEvent.objects.create(job=job, type="submitted",
                                         message=f"Submitted to {backend.name} as {external_id}",
                                         data={"backend": backend.name,
                                               "external_id": external_id,
                                               "attempt": job.attempt})
    if error is not None:
        return training_job_fail(job=job, reason=f"trainer crash: could not start: {error}",
                                 category="crash")
    if not getattr(backend, "runs_in_worker", False):
        return job  # polled by `poll_cluster_jobs` (training.backends.slurm.slurm_jobs_poll)
    interval = float(getattr(settings, "TRAINING_POLL_SECONDS", 1.0))
    while True:
        job = training_job_advance(job_id=job.id)
        if job.is_terminal:
            if job.status != TrainingJob.COMPLETED:
                backend.cancel(job)  # make sure nothing is left running (idempotent)
            return job
        if job.cancel_requested:
            backend.cancel(job)
        time.sleep(interval)


def _epoch_of(epoch: float | None, total: int) -> int:
    if not epoch:
        return 0
    return min(max(1, math.ceil(float(epoch) - 1e-9)), total or math.ceil(epoch))


def _ts(event: dict) -> datetime | None:
    try:
        return datetime.fromisoformat(str(event.get("ts")).replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None


def _apply_events(job: TrainingJob, events: list[dict]) -> dict[str, Any]:
    """Store the trainer's events: metric rows, status fields, notable events. Returns facts the
    state mapping needs (whether the trainer started, its terminal event)."""
    facts: dict[str, Any] = {"started": False, "completed": None, "failed": None}
    for event in events:
        kind = event.get("type")
        if kind == "started":
            totals = event.get("totals") or {}
            if totals.get("total_epochs"):
                job.total_epochs = math.ceil(float(totals["total_epochs"]))
            job.metrics = {**job.metrics, "total_steps": totals.get("total_steps")}
            TrainingEvent.objects.create(
                job=job, type="trainer_started", message="Trainer started",
                data={k: event.get(k) for k in ("model", "totals", "resumed_from_step", "notes")},
                created_at=_ts(event) or timezone.now())
        elif kind == "step":
            facts["started"] = True
            memory = event.get("memory") or {}
            extra = {k: v for k, v in event.items() if k.startswith("rewards/")
                     or k == "mean_token_accuracy"}
            extra["memory"] = memory
            TrainingMetric.objects.update_or_create(
                job=job, kind="train", step=int(event.get("step") or 0),
                defaults={
                    "epoch": float(event.get("epoch") or 0), "loss": event.get("loss"),
                    "learning_rate": event.get("learning_rate"),
                    "grad_norm": event.get("grad_norm"),
                    "samples_processed": event.get("samples_processed"),
                    "tokens_processed": event.get("tokens_processed"),
                    "tokens_per_second": event.get("tokens_per_second"),
                    "extra": extra, "created_at": _ts(event) or timezone.now(),
                },
            )
            if event.get("progress") is not None:
                job.progress = max(job.progress, min(1.0, float(event["progress"])))
            job.current_epoch = _epoch_of(event.get("epoch"), job.total_epochs)
            job.metrics = {
                **job.metrics,
                "loss": event.get("loss") if event.get("loss") is not None
                else job.metrics.get("loss"),
                "learning_rate": event.get("learning_rate"),
                "grad_norm": event.get("grad_norm"),
                "samples_processed": event.get("samples_processed") or 0,
                "tokens_processed": event.get("tokens_processed") or 0,
                **{k: v for k, v in extra.items() if k != "memory"},
            }
            tps = event.get("tokens_per_second")
            gpus = memory.get("gpus", 0) or 0
            job.resources = {
                **(job.resources or {}),  # keeps what a backend stores there (Slurm attempts)
                "gpus": gpus,
                "gpu_memory_used_gb": memory.get("gpu_memory_used_gb") or 0.0,
                "memory_used_gb": memory.get("rss_gb"),
                "training_speed": f"{round(tps or 0)} tokens/sec",
            }
        elif kind == "eval":
            extra = {k: v for k, v in event.items() if k.startswith("rewards/")}
            extra["is_best"] = event.get("is_best")
            TrainingMetric.objects.update_or_create(
                job=job, kind="eval", step=int(event.get("step") or 0),
                defaults={"epoch": float(event.get("epoch") or 0),
                          "eval_loss": event.get("eval_loss"), "extra": extra,
                          "created_at": _ts(event) or timezone.now()},
            )
            job.metrics = {**job.metrics, "eval_loss": event.get("eval_loss"),
                           **{f"eval_{k}": v for k, v in extra.items() if k != "is_best"}}
        elif kind == "checkpoint":
            TrainingEvent.objects.create(job=job, type="checkpoint",
                                         message=f"Checkpoint at step {event.get('step')}",
                                         data={"step": event.get("step"),
                                               "path": event.get("path")},
                                         created_at=_ts(event) or timezone.now())
        elif kind == "completed":
            facts["completed"] = event
        elif kind == "failed":
            facts["failed"] = event
    return facts


def _completion_fields(job: TrainingJob, event: dict | None) -> dict[str, Any]:
    """Usage and final metrics of a finished run, for the job row and billing."""
    event = event or {}
    final = event.get("metrics") or {}
    metrics = dict(job.metrics)
    for key, value in final.items():
        if value is not None:
            metrics[key] = value
    loss = final.get("last_train_loss") or final.get("train_loss") or metrics.get("loss")
    if loss is None:
        last = job.metric_points.filter(kind="train", loss__isnull=False).order_by("-step").first()
        loss = last.loss if last else None
    metrics["loss"] = float(loss) if loss is not None else None
    if event.get("samples_processed") is not None:
        metrics["samples_processed"] = event["samples_processed"]
    if event.get("tokens_processed") is not None:
        metrics["tokens_processed"] = event["tokens_processed"]
    started = job.events.filter(type="trainer_started").order_by("created_at").first()
    finished_ts = _ts(event) or timezone.now()
    seconds = event.get("duration_seconds")
    train_seconds = (finished_ts - started.created_at).total_seconds() if started else None
    if seconds is None:
        seconds = train_seconds or 0.0
    tokens = metrics.get("tokens_processed") or 0
    tps = tokens / train_seconds if train_seconds and train_seconds > 0 and tokens else None
    gpus = (job.resources or {}).get("gpus") or 0
    return {
        "metrics": metrics,
        "progress": 1.0,
        "current_epoch": job.total_epochs,
        "tokens_per_second": tps,
        "compute_seconds": float(seconds),
        # The Slurm backend bills by LUMI's rule from Slurm's elapsed time, per attempt.
        "gpu_hours": job.gpu_hours if job.backend == "slurm"
        else round(float(seconds) * gpus / 3600.0, 6),
        "cost": pricing.job_cost(plan=job.tenant.plan, method=job.method,
                                 samples=job.training_samples),
    }


def _complete(job: TrainingJob, backend, event: dict | None) -> TrainingJob:
    """Fetch, verify, hand to the adapters app (signal), mark completed."""
    from training.trainer.manifest import AdapterVerificationError, verify_adapter_dir

    try:
        result_dir = Path(backend.fetch(job))
        verify_adapter_dir(result_dir / "adapter", result_dir / "manifest.json")
    except (AdapterVerificationError, OSError, ValueError) as exc:
        return training_job_fail(job=job, reason=f"trainer crash: result failed verification: "
                                 f"{exc}", category="crash")
    if job.status == TrainingJob.PREPARING:
        job = training_job_transition(job=job, to_status=TrainingJob.RUNNING,
                                      message="Training in progress")
    try:
        with transaction.atomic():
            locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
            if locked.is_terminal:
                return locked
            updates = _completion_fields(locked, event)
            for name, value in updates.items():
                setattr(locked, name, value)
            responses = training_job_succeeded.send(sender=TrainingJob, job=locked,
                                                    result_dir=result_dir)
            versions = [getattr(r, "version", None) for _, r in responses if r is not None]
            label = next((v for v in versions if v), None)
            return training_job_transition(
                job=locked, to_status=TrainingJob.COMPLETED,
                message=f"Completed; adapter version {label}" if label else "Completed",
                data={"adapter_version": label, "cost": str(updates["cost"]),
                      "training_samples": locked.training_samples,
                      "tokens_processed": updates["metrics"].get("tokens_processed")},
                updates=updates,
            )
    except InvalidTransition:
        return TrainingJob.objects.get(pk=job.pk)
    except Exception as exc:  # noqa: BLE001 - a receiver that fails fails the job, visibly
        logger.exception("Storing the adapter of job %s failed", job.id)
        return training_job_fail(job=job, reason=f"adapter could not be stored: {exc}",
                                 category="crash")


def training_job_advance(*, job_id: str) -> TrainingJob:
    """One poll step of a submitted job (the local runner's loop and the Slurm poller call it).

    backend.poll -> new events stored (metric rows, status fields, events) and the offset
    advanced in one transaction -> the backend's state mapped to the job's status:
    queued: nothing; running: -> running; completed: fetch + verify + signal -> completed;
    failed / cancelled: -> failed (with reason and log tail) / cancelled; retry: resubmit with
    resume (attempt + 1, at most TRAINING_MAX_RESUBMITS times), status stays running;
    unknown: nothing terminal, poll again later.
    """
    job = TrainingJob.objects.select_related("tenant__plan").get(pk=job_id)
    if job.is_terminal or not job.external_id:
        return job
    backend = backend_for(job)
    result = backend.poll(job)
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job_id)
        if locked.events_offset != job.events_offset:
            # Another poller consumed these events meanwhile; its step already stored them.
            return locked
        facts = _apply_events(locked, result.events)
        locked.events_offset = result.new_offset
        locked.heartbeat_at = timezone.now()
        locked.save(update_fields=["metrics", "resources", "progress", "current_epoch",
                                   "total_epochs", "events_offset", "heartbeat_at"])
    job = locked
    state = result.state
    if job.is_terminal:
        return job
    # Running means the first optimizer step was logged: data and model are loaded, and from
    # then on `metrics.loss` is a number (the seed formats it with :.4f).
    if job.status == TrainingJob.PREPARING and (facts["started"]
                                                or state == backend_states.RETRY):
        job = _to_running(job)
    if state == backend_states.COMPLETED:
        return _complete(job, backend, facts["completed"] or _last_completed(job))
    if state == backend_states.FAILED:
        failed = facts["failed"] or {}
        reason = result.reason or failed.get("reason") or "trainer crash"
        category = failed.get("category") or _category_of(reason)
        label = FAILURE_LABELS.get(category)
        if label and not reason.lower().startswith(label.lower()):
            reason = f"{label}: {reason}"
        return training_job_fail(job=job, reason=reason, category=category,
                                 log_tail=result.log_tail)
    if state == backend_states.CANCELLED:
        try:
            return training_job_transition(job=job, to_status=TrainingJob.CANCELLED,
                                           message="Cancelled by user" if job.cancel_requested
                                           else f"Cancelled: {result.reason or 'by the backend'}",
                                           updates={"log_tail": result.log_tail[-8000:]})
        except InvalidTransition:
            return TrainingJob.objects.get(pk=job.pk)
    if state == backend_states.RETRY:
        return _resubmit(job, backend, result.reason)
    return job


def _to_running(job: TrainingJob) -> TrainingJob:
    try:
        return training_job_transition(job=job, to_status=TrainingJob.RUNNING,
                                       message="Training in progress")
    except InvalidTransition:
        return TrainingJob.objects.get(pk=job.pk)


def _last_completed(job: TrainingJob) -> dict | None:
    from training.backends.local import read_events

    path = Path(job.work_dir) / "output" / "events.jsonl"
    events, _ = read_events(path, 0)
    return next((e for e in reversed(events) if e.get("type") == "completed"), None)


def _category_of(reason: str) -> str:
    text = reason.lower()
    for needle, category in (("out of memory", "out_of_memory"), ("nan", "nan_loss"),
                             ("bad data", "bad_data"), ("lost worker", LOST_WORKER)):
        if needle in text:
            return category
    return "crash"


def _resubmit(job: TrainingJob, backend, reason: str) -> TrainingJob:
    limit = int(getattr(settings, "TRAINING_MAX_RESUBMITS", 3))
    if job.attempt > limit:
        return training_job_fail(job=job, reason=f"lost to the cluster {job.attempt} times "
                                 f"({reason or 'preempted'}); giving up", category="crash")
    if job.status == TrainingJob.PREPARING:
        job = _to_running(job)
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if locked.is_terminal:
            return locked
        locked.attempt += 1
        locked.save(update_fields=["attempt"])
        try:
            training_job_bundle_config_resume(locked)
            external_id = backend.submit(locked, Path(locked.work_dir))
        except Exception as exc:  # noqa: BLE001
            error = exc
        else:
            error = None
            locked.external_id = external_id
            locked.heartbeat_at = timezone.now()
            locked.save(update_fields=["external_id", "heartbeat_at"])
            TrainingEvent.objects.create(
                job=locked, type="resubmitted",
                message=f"Resubmitted with resume (attempt {locked.attempt}): {reason}",
                data={"attempt": locked.attempt, "external_id": external_id, "reason": reason})
    if error is not None:
        return training_job_fail(job=locked, reason=f"could not resubmit: {error}",
                                 category="crash")
    return locked


def training_job_bundle_config_resume(job: TrainingJob) -> None:
    """Flip job.json's `resume` on for a resubmission (the local bundle; Slurm rewrites its own)."""
    path = Path(job.work_dir) / "job.json"
    if path.is_file():
        config = json.loads(path.read_text())
        config["resume"] = True
        path.write_text(json.dumps(config, indent=2) + "\n")


# --- cancel ------------------------------------------------------------------------------------

def training_job_cancel(*, job: TrainingJob, actor: str = "system",
                        ip_address: str | None = None) -> TrainingJob:
    """Cancel a queued or running job ("Cancelled by user"); 409 for a job that already ended.

    A queued job is cancelled without ever running (its RQ job is cancelled too, and the runner
    skips a job that is not queued). A preparing or running one gets SIGTERM (the trainer stops
    at once), then SIGKILL after a grace period; the runner sees the flag too.
    """
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if locked.is_terminal:
            raise ApiError("job_not_cancellable", f"The job already ended ({locked.status}).",
                           details={"status": locked.status}, status_code=409)
        locked.cancel_requested = True
        locked.save(update_fields=["cancel_requested"])
        audit_log_record(action="training.job_cancelled", actor=actor, tenant=locked.tenant,
                         ip_address=ip_address, target=locked.id,
                         details={"status_before": locked.status})
    if locked.external_id:
        try:
            backend_for(locked).cancel(locked)
        except Exception:  # noqa: BLE001 - the runner retries the cancel on its next poll
            logger.exception("Backend cancel of %s failed; the runner will retry", locked.id)
    elif locked.rq_job_id:
        _rq_cancel(locked.rq_job_id)
    try:
        return training_job_transition(job=locked, to_status=TrainingJob.CANCELLED,
                                       message="Cancelled by user",
                                       data={"actor": actor})
    except InvalidTransition:
        return TrainingJob.objects.get(pk=job.pk)


def _rq_cancel(rq_job_id: str) -> None:
    import django_rq
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        connection = django_rq.get_connection(QUEUE_NAME)
        Job.fetch(rq_job_id, connection=connection).cancel()
    except NoSuchJobError:
        pass
    except Exception:  # noqa: BLE001 - the runner skips a job that is no longer queued anyway
        logger.warning("Could not cancel RQ job %s", rq_job_id, exc_info=True)


def training_job_retry(*, job: TrainingJob, actor: str = "system") -> tuple[TrainingJob | None,
                                                                             dict]:
    """Start a new job with the same method and parameters (admin's "retry"): quotas apply."""
    params = {k: v for k, v in job.params.items() if k != "base_model_spec"}
    request = JobRequest(method=job.method, params=params, preset=job.preset,
                         base_model=(job.params.get("base_model_spec") or {}).get("name"),
                         continue_from=job.parent_version.version if job.parent_version_id
                         else None, triggered_by="retry")
    return training_job_create(tenant=job.tenant, request=request, actor=actor)


# --- reconciler and poller ---------------------------------------------------------------------

def training_jobs_reconcile(*, stale_after_seconds: float | None = None,
                            queued_grace_seconds: float = 60.0) -> dict[str, list[str]]:
    """Catch what the runner never sees. Safe to run any time, from anywhere, repeatedly.

    - A local job `preparing`/`running` whose heartbeat is older than the stale limit lost its
      worker (SIGKILL, machine restart): the orphaned trainer is stopped and the job fails with
      "lost worker". Jobs of polled backends (Slurm) are advanced instead: their heartbeat is
      the poller's.
    - A `queued` job whose RQ job is gone (Redis lost it, the enqueue failed) is enqueued again.
    """
    stale_after = stale_after_seconds if stale_after_seconds is not None \
        else settings.TRAINING_STALE_AFTER_SECONDS
    now = timezone.now()
    summary: dict[str, list[str]] = {"failed": [], "requeued": [], "advanced": []}
    for job in TrainingJob.objects.filter(status__in=[TrainingJob.PREPARING,
                                                      TrainingJob.RUNNING]):
        beat = job.heartbeat_at or job.created_at
        if (now - beat).total_seconds() < stale_after:
            continue
        backend = backend_for(job)
        if not getattr(backend, "runs_in_worker", False) and job.external_id:
            try:
                training_job_advance(job_id=job.id)
                summary["advanced"].append(job.id)
            except Exception:  # noqa: BLE001
                logger.exception("Advancing %s failed", job.id)
            continue
        try:
            backend.cancel(job)
        except Exception:  # noqa: BLE001
            logger.exception("Stopping the orphaned trainer of %s failed", job.id)
        seconds = int((now - beat).total_seconds())
        from training.backends.local import LOG_NAME, log_tail

        tail = log_tail(Path(job.work_dir) / LOG_NAME) if job.work_dir else ""
        training_job_fail(job=job, reason=f"lost worker: no heartbeat for {seconds} s",
                          category=LOST_WORKER, log_tail=tail, data={"reconciler": True})
        summary["failed"].append(job.id)
    for job in TrainingJob.objects.filter(status=TrainingJob.QUEUED,
                                          created_at__lt=now - timedelta(
                                              seconds=queued_grace_seconds)):
        if job.rq_job_id and _rq_job_alive(job.rq_job_id):
            continue
        rq_id = training_job_enqueue(job_id=job.id)
        if rq_id:
            training_job_event(job=job, type="requeued",
                               message="Its queue entry was lost; queued again",
                               data={"previous_rq_job_id": job.rq_job_id, "rq_job_id": rq_id})
            summary["requeued"].append(job.id)
    return summary


def _rq_job_alive(rq_job_id: str) -> bool:
    """Whether the RQ job still exists and can still run (queued, scheduled, started...)."""
    import django_rq
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        rq_job = Job.fetch(rq_job_id, connection=django_rq.get_connection(QUEUE_NAME))
    except NoSuchJobError:
        return False
    status = rq_job.get_status(refresh=True)
    return status in ("queued", "started", "deferred", "scheduled")


# --- automatic training ------------------------------------------------------------------------

def training_auto_check(*, tenant_id: int) -> TrainingJob | None:
    """Queue a job by itself when the tenant's `auto_training` asks for it (the seed's
    "Feedback-Driven Learning"): enabled, enough new usable feedback since the tenant's last
    job (`min_new_feedback`), ready for training, and a quota slot free. Returns the job or None.
    The event log of the job says `triggered_by=auto`. Runs after each feedback write (on commit)
    and from `reconcile_training_jobs --loop`.
    """
    from feedback.models import Feedback

    tenant = Tenant.objects.select_related("plan").get(pk=tenant_id)
    auto = (tenant.settings or {}).get("auto_training") or {}
    if not auto.get("enabled") or not tenant.plan.allows_training:
        return None
    method = auto.get("method") if auto.get("method") in ("sft", "dpo") else "sft"
    min_new = int(auto.get("min_new_feedback") or 50)
    last = TrainingJob.objects.filter(tenant=tenant).order_by("-created_at").first()
    if last is not None and not last.is_terminal:
        return None  # one at a time
    new = Feedback.objects.filter(tenant=tenant, is_latest=True, excluded_reason="")
    if last is not None:
        new = new.filter(created_at__gt=last.created_at)
    if new.count() < min_new:
        return None
    remaining = pricing.quota_remaining(tenant=tenant)
    if remaining is not None and remaining <= 0:
        return None
    # Readiness is the seed's (feedback stats: corrections >= 50 or thumbs >= 100); the new
    # feedback threshold above replaces the per-request minimum.
    from feedback.selectors import feedback_stats

    if not feedback_stats(tenant=tenant).get("ready_for_training"):
        return None
    params = {k: v for k, v in (auto.get("params") or {}).items()}
    params.setdefault("min_feedback_count" if method == "sft" else "min_preference_pairs", 1)
    try:
        job, _ = training_job_create(
            tenant=tenant,
            request=JobRequest(method=method, params=params, preset=auto.get("preset") or "",
                               triggered_by="auto"),
            actor="system:auto_training",
        )
    except ApiError as exc:
        logger.info("Auto-training of %s not started: %s", tenant.slug, exc.message)
        return None
    except IntegrityError:  # pragma: no cover - concurrent duplicate
        return None
    return job


def training_auto_check_all() -> list[str]:
    """The periodic side of automatic training (`reconcile_training_jobs --loop`): checks every
    tenant that turned it on, so feedback loaded around the services (bulk imports) counts too."""
    started = []
    for tenant in Tenant.objects.filter(settings__auto_training__enabled=True):
        try:
            job = training_auto_check(tenant_id=tenant.pk)
        except Exception:  # noqa: BLE001 - one tenant must not stop the others
            logger.exception("Auto-training check failed for tenant %s", tenant.slug)
            continue
        if job is not None:
            started.append(job.id)
    return started


def feedback_saved_auto_train(sender, instance, created=False, raw=False, **kwargs):
    """post_save receiver on feedback.Feedback (connected in TrainingConfig.ready)."""
    if raw or not created:
        return
    tenant_id = instance.tenant_id
    try:
        auto = (Tenant.objects.values_list("settings", flat=True).get(pk=tenant_id) or {}) \
            .get("auto_training") or {}
    except Tenant.DoesNotExist:  # pragma: no cover
        return
    if not auto.get("enabled"):
        return

    def check():
        try:
            training_auto_check(tenant_id=tenant_id)
        except Exception:  # noqa: BLE001 - the feedback is stored; the next one checks again
            logger.exception("Auto-training check failed for tenant %s", tenant_id)

    transaction.on_commit(check)
