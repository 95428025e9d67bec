"""The trainer's events turned into the job's progress: metric rows, status fields, notable
events, and the usage and final metrics of a finished run."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.utils import timezone

from training import pricing
from training.models import TrainingEvent, TrainingJob, TrainingMetric


def _epoch_of(epoch: float | None, total: int) -> int:
    if not epoch:
        return 0
    return min(max(1, math.ceil(float(epoch) - 1e-9)), total or math.ceil(epoch))


def event_time(event: dict) -> datetime | None:
    """The event's own timestamp (`ts`), None when it has none that parses."""
    try:
        return datetime.fromisoformat(str(event.get("ts")).replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None


def _started(job: TrainingJob, event: dict, facts: dict) -> None:
    totals = event.get("totals") or {}
    if totals.get("total_epochs"):
        job.total_epochs = math.ceil(float(totals["total_epochs"]))
    job.metrics = {**job.metrics, "total_steps": totals.get("total_steps")}
    TrainingEvent.objects.create(
        job=job, type="trainer_started", message="Trainer started",
        data={k: event.get(k) for k in ("model", "totals", "resumed_from_step", "notes")},
        created_at=event_time(event) or timezone.now())


def _step(job: TrainingJob, event: dict, facts: dict) -> None:
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
            "extra": extra, "created_at": event_time(event) or timezone.now(),
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
        **(job.resources or {}),  # keeps what the services store there (Slurm attempts)
        "gpus": gpus,
        "gpu_memory_used_gb": memory.get("gpu_memory_used_gb") or 0.0,
        "memory_used_gb": memory.get("rss_gb"),
        "training_speed": f"{round(tps or 0)} tokens/sec",
    }


def _eval(job: TrainingJob, event: dict, facts: dict) -> None:
    extra = {k: v for k, v in event.items() if k.startswith("rewards/")}
    extra["is_best"] = event.get("is_best")
    TrainingMetric.objects.update_or_create(
        job=job, kind="eval", step=int(event.get("step") or 0),
        defaults={"epoch": float(event.get("epoch") or 0),
                  "eval_loss": event.get("eval_loss"), "extra": extra,
                  "created_at": event_time(event) or timezone.now()},
    )
    job.metrics = {**job.metrics, "eval_loss": event.get("eval_loss"),
                   **{f"eval_{k}": v for k, v in extra.items() if k != "is_best"}}


def _checkpoint(job: TrainingJob, event: dict, facts: dict) -> None:
    TrainingEvent.objects.create(job=job, type="checkpoint",
                                 message=f"Checkpoint at step {event.get('step')}",
                                 data={"step": event.get("step"), "path": event.get("path")},
                                 created_at=event_time(event) or timezone.now())


def _completed(job: TrainingJob, event: dict, facts: dict) -> None:
    facts["completed"] = event


def _failed(job: TrainingJob, event: dict, facts: dict) -> None:
    facts["failed"] = event


_HANDLERS: dict[str, Callable[[TrainingJob, dict, dict], None]] = {
    "started": _started, "step": _step, "eval": _eval, "checkpoint": _checkpoint,
    "completed": _completed, "failed": _failed,
}


def training_job_events_apply(job: TrainingJob, events: list[dict]) -> dict[str, Any]:
    """Store the trainer's events: metric rows, status fields, notable events. Returns facts the
    state mapping needs (whether the trainer started, its terminal event). The caller saves
    the job's fields."""
    facts: dict[str, Any] = {"started": False, "completed": None, "failed": None}
    for event in events:
        handler = _HANDLERS.get(event.get("type"))
        if handler is not None:
            handler(job, event, facts)
    return facts


def completion_fields(job: TrainingJob, event: dict | None) -> dict[str, Any]:
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
    finished_ts = event_time(event) or timezone.now()
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
        # Cluster jobs are billed by LUMI's rule from Slurm's elapsed time, per attempt
        # (training.services.cluster).
        "gpu_hours": job.gpu_hours if job.backend == "slurm"
        else round(float(seconds) * gpus / 3600.0, 6),
        "cost": pricing.job_cost(plan=job.tenant.plan, method=job.method,
                                 samples=job.training_samples),
    }
