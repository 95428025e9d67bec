"""Shapes the apps' rows (read through their selectors) into what the dashboards' charts draw.

Only presentation lives here (series by day, by step, by month). Business rules (readiness,
quotas, A/B validation, state transitions) stay in the apps' services and selectors; where a
number is a rule's outcome (ready for training, the A/B split), it is read from them.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from feedback.models import Feedback
from feedback.selectors import feedback_daily_counts
from tenants.models import Tenant
from training.models import TrainingJob
from training.selectors import (
    training_gpu_hours_by_tenant_month,
    training_job_events_latest,
    training_jobs_active_by_backend,
    training_metric_rows,
)

FEEDBACK_TYPES = [t for t, _ in Feedback.TYPE_CHOICES]
# More points than a browser can usefully draw in one curve; older ones are thinned evenly.
MAX_CURVE_POINTS = 2000


def feedback_over_time(*, tenant: Tenant, days: int = 30) -> dict:
    """Latest feedback per day and type for the last `days` days, zero-filled for the chart."""
    today = timezone.now().date()
    start = today - timedelta(days=days - 1)
    rows = feedback_daily_counts(tenant=tenant, since=start)
    counts: dict[str, dict] = defaultdict(dict)
    for row in rows:
        counts[row["type"]][row["day"]] = row["n"]
    dates = [start + timedelta(days=i) for i in range(days)]
    return {
        "dates": [d.isoformat() for d in dates],
        "series": {t: [counts[t].get(d, 0) for d in dates] for t in FEEDBACK_TYPES},
    }


def _thin(points: list) -> list:
    if len(points) <= MAX_CURVE_POINTS:
        return points
    stride = len(points) / MAX_CURVE_POINTS
    kept = [points[int(i * stride)] for i in range(MAX_CURVE_POINTS - 1)]
    return kept + [points[-1]]


def _dpo_value(extra: dict, word: str) -> float | None:
    """DPO reward statistics as the trainer logged them (`rewards/margins`, `reward_margin`…)."""
    for key, value in (extra or {}).items():
        if word in key.lower() and isinstance(value, int | float):
            return float(value)
    return None


def job_curves(*, job: TrainingJob) -> dict:
    """The loss, eval-loss and (DPO) reward-margin curves of one job, by step."""
    train, evals = [], []
    for point in training_metric_rows(job=job):
        (evals if point["kind"] == "eval" else train).append(point)
    train = _thin([p for p in train if p["loss"] is not None])
    margins = [
        (p["step"], _dpo_value(p["extra"], "margin"), _dpo_value(p["extra"], "accurac"))
        for p in evals + train
    ]
    margins = sorted((m for m in margins if m[1] is not None), key=lambda m: m[0])
    evals = [p for p in evals if p["eval_loss"] is not None]
    return {
        "train": {
            "step": [p["step"] for p in train],
            "epoch": [p["epoch"] for p in train],
            "loss": [p["loss"] for p in train],
        },
        "eval": {
            "step": [p["step"] for p in evals],
            "eval_loss": [p["eval_loss"] for p in evals],
        },
        "dpo": {
            "step": [m[0] for m in margins],
            "margin": [m[1] for m in margins],
            "accuracy": [m[2] for m in margins],
        },
    }


def job_summary(job: TrainingJob) -> dict:
    """The job's state fields, as the job page's live parts show them."""
    return {
        "job_id": job.id,
        "method": job.method,
        "status": job.status,
        "is_terminal": job.is_terminal,
        "progress": round(float(job.progress or 0.0), 4),
        "current_epoch": job.current_epoch,
        "total_epochs": job.total_epochs,
        "metrics": job.metrics or {},
        "failure_reason": job.failure_reason,
        "cancel_requested": job.cancel_requested,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def job_events(*, job: TrainingJob, limit: int = 200) -> list[dict]:
    return [
        {
            "id": e.id,
            "at": e.created_at.isoformat(),
            "type": e.type,
            "from_status": e.from_status,
            "to_status": e.to_status,
            "message": e.message,
        }
        for e in training_job_events_latest(job=job, limit=limit)
    ]


def job_live_data(*, job: TrainingJob) -> dict:
    """Everything the job page polls for: state, curves and the event log."""
    return {"job": job_summary(job), "curves": job_curves(job=job), "events": job_events(job=job)}


# --- Staff ---------------------------------------------------------------------------------


def queue_health() -> dict:
    """Depth of each RQ queue and its worker/started counts; a message instead when Redis is down.

    The staff dashboard must still render while Redis is away, so every Redis error becomes
    `{"ok": False, "error": ...}` rather than a 500.
    """
    import django_rq
    from redis.exceptions import RedisError

    queues = []
    try:
        for name in settings.RQ_QUEUES:
            queue = django_rq.get_queue(name)
            queue.connection.connection_pool.connection_kwargs.setdefault(
                "socket_connect_timeout", 1
            )
            queues.append(
                {
                    "name": name,
                    "queued": queue.count,
                    "started": queue.started_job_registry.count,
                    "failed": queue.failed_job_registry.count,
                }
            )
    except (RedisError, OSError) as exc:
        return {"ok": False, "error": f"Redis is not reachable: {exc}", "queues": []}
    return {"ok": True, "error": "", "queues": queues}


def running_jobs_by_backend() -> list[dict]:
    return training_jobs_active_by_backend()


def gpu_hours_by_tenant_month(*, months: int = 12) -> dict:
    """GPU-hours per tenant per calendar month, from `TrainingJob.gpu_hours`."""
    since = (timezone.now() - timedelta(days=31 * months)).replace(day=1)
    rows = training_gpu_hours_by_tenant_month(since=since)
    month_labels = sorted({r["month"].strftime("%Y-%m") for r in rows})
    per_tenant: dict[str, dict] = defaultdict(dict)
    for r in rows:
        per_tenant[r["tenant__slug"]][r["month"].strftime("%Y-%m")] = round(r["hours"] or 0, 4)
    return {
        "months": month_labels,
        "tenants": {
            slug: [hours.get(m, 0) for m in month_labels]
            for slug, hours in sorted(per_tenant.items())
        },
    }


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def jobs_comparison(*, jobs: list[TrainingJob]) -> dict:
    """Loss curves of several jobs for an overlay, and the parameters/data that differ.

    `params` rows list every parameter with each job's value and whether they differ; `data`
    does the same for the snapshot manifests' counts (numbers only: sizes, records, pairs).
    """
    curves = []
    flat_params, flat_data = [], []
    for job in jobs:
        c = job_curves(job=job)
        curves.append(
            {
                "job_id": job.id,
                "tenant": job.tenant.slug,
                "method": job.method,
                "status": job.status,
                "step": c["train"]["step"],
                "loss": c["train"]["loss"],
                "eval_step": c["eval"]["step"],
                "eval_loss": c["eval"]["eval_loss"],
            }
        )
        params: dict = {"method": job.method, "preset": job.preset or "-"}
        _flatten("", job.params or {}, params)
        flat_params.append(params)
        data: dict = {"training_samples": job.training_samples, "eval_samples": job.eval_samples}
        manifest: dict = {}
        _flatten("", job.snapshot_manifest or {}, manifest)
        data.update({k: v for k, v in manifest.items() if isinstance(v, int | float)
                     and not isinstance(v, bool)})
        flat_data.append(data)

    def rows(flat: list[dict]) -> list[dict]:
        keys = sorted({k for d in flat for k in d})
        out = []
        for key in keys:
            values = [d.get(key) for d in flat]
            out.append({"name": key, "values": values,
                        "differs": len({repr(v) for v in values}) > 1})
        return out

    return {"jobs": [j.id for j in jobs], "curves": curves, "params": rows(flat_params),
            "data": rows(flat_data)}
