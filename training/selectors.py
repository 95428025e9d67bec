"""Reads for training jobs: lists, details as the seed reads them, curves, events, usage, and
the cluster's GPU-hour allocation."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Count, Sum
from django.db.models.functions import TruncMonth
from django.shortcuts import get_object_or_404

from tenants.errors import InvalidInput
from training import pricing
from training.models import TrainingEvent, TrainingJob, TrainingMetric, TrainingSettings


def training_job_list(*, tenant):
    return TrainingJob.objects.filter(tenant=tenant).select_related("parent_version") \
        .order_by("-created_at", "-id")


def training_job_get(*, tenant, job_id: str) -> TrainingJob:
    """The tenant's job or 404 (another tenant's id is as unknown as a made-up one)."""
    return get_object_or_404(TrainingJob.objects.select_related("parent_version"),
                             tenant=tenant, pk=job_id)


def training_job_adapter_version(job: TrainingJob) -> str | None:
    try:
        return job.adapter_version.version  # reverse one-to-one from adapters.AdapterVersion
    except (ObjectDoesNotExist, AttributeError):
        return None


def _decimal(value) -> float | None:
    return float(value) if value is not None else None


def training_job_document(job: TrainingJob, *, summary: bool = False) -> dict:
    """The job as the seed's "Check Job Status" reads it, plus what a user asks next.

    Long on purpose: it is the API's job document written out as one literal (the summary,
    then the detail), so its shape can be read in one place.
    """
    metrics = dict(job.metrics or {})
    loss = metrics.get("loss")
    body = {
        "job_id": job.id,
        "status": job.status,
        "method": job.method,
        "progress": round(float(job.progress), 4),
        "current_epoch": job.current_epoch,
        "total_epochs": job.total_epochs,
        "metrics": {
            **metrics,
            "loss": float(loss) if loss is not None else None,
            "learning_rate": metrics.get("learning_rate"),
            "grad_norm": metrics.get("grad_norm"),
            "samples_processed": metrics.get("samples_processed") or 0,
            "tokens_processed": metrics.get("tokens_processed") or 0,
        },
        "resources": {
            "gpus": (job.resources or {}).get("gpus", 0),
            "gpu_memory_used_gb": (job.resources or {}).get("gpu_memory_used_gb", 0.0),
            "training_speed": (job.resources or {}).get("training_speed", "0 tokens/sec"),
            **{k: v for k, v in (job.resources or {}).items()
               if k not in ("gpus", "gpu_memory_used_gb", "training_speed")},
        },
        "adapter_version": training_job_adapter_version(job),
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "failure_reason": job.failure_reason or None,
        "triggered_by": job.triggered_by,
    }
    if summary:
        return body
    params = {k: v for k, v in (job.params or {}).items() if k != "base_model_spec"}
    body.update({
        "params": params,
        "preset": job.preset or None,
        "base_model": (job.params.get("base_model_spec") or {}).get("name") or job.base_model,
        # Which defaults filled what the request left out: the base's recipe, or the seed's.
        "defaults": (job.params.get("base_model_spec") or {}).get("recipe") or "seed",
        "continue_from": job.parent_version.version if job.parent_version_id else None,
        "backend": job.backend,
        "attempt": job.attempt,
        "training_samples": job.training_samples,
        "eval_samples": job.eval_samples,
        "token_count": job.token_count,
        "estimated_duration_minutes": job.estimated_duration_minutes,
        "estimated_cost": _decimal(job.estimated_cost),
        "cost": _decimal(job.cost),
        "usage": {
            "training_samples": job.training_samples,
            "token_count": job.token_count,
            "tokens_processed": metrics.get("tokens_processed") or 0,
            "gpu_hours": job.gpu_hours,
            "compute_seconds": job.compute_seconds,
            "cost": _decimal(job.cost),
        },
        "tokens_per_second": job.tokens_per_second,
        "failure_category": job.failure_category or None,
        "log_tail": job.log_tail or None if job.status == TrainingJob.FAILED else None,
        "cancel_requested": job.cancel_requested,
        "heartbeat_at": job.heartbeat_at.isoformat() if job.heartbeat_at else None,
        "data_manifest": {
            "snapshot": job.snapshot_prefix or None,
            "counts": (job.snapshot_manifest or {}).get("counts"),
            "files": (job.snapshot_manifest or {}).get("files"),
        },
    })
    return body


def training_job_metrics(*, job: TrainingJob) -> dict:
    """The curves: train points (loss, lr, grad norm, DPO rewards) and eval points."""
    train, evals = [], []
    for point in TrainingMetric.objects.filter(job=job).order_by("kind", "step"):
        extra = {k: v for k, v in (point.extra or {}).items() if k != "memory"}
        if point.kind == "train":
            train.append({
                "step": point.step, "epoch": point.epoch, "loss": point.loss,
                "learning_rate": point.learning_rate, "grad_norm": point.grad_norm,
                "samples_processed": point.samples_processed,
                "tokens_processed": point.tokens_processed,
                "tokens_per_second": point.tokens_per_second, **extra,
            })
        else:
            evals.append({"step": point.step, "epoch": point.epoch,
                          "eval_loss": point.eval_loss, **extra})
    return {"job_id": job.id, "method": job.method, "train": train, "eval": evals,
            "final": {k: v for k, v in (job.metrics or {}).items()}}


def training_job_events(*, job: TrainingJob):
    return TrainingEvent.objects.filter(job=job).order_by("created_at", "id")


def training_usage(*, tenant) -> dict:
    """This month's jobs, quota and billed usage of a tenant."""
    jobs = TrainingJob.objects.filter(tenant=tenant, created_at__gte=pricing.month_start())
    totals = jobs.filter(status=TrainingJob.COMPLETED).aggregate(
        cost=Sum("cost"), samples=Sum("training_samples"), tokens=Sum("token_count"),
        gpu_hours=Sum("gpu_hours"), completed=Count("id"))
    return {
        "month_start": pricing.month_start().isoformat(),
        "monthly_job_quota": tenant.plan.monthly_job_quota,
        "jobs_counted": pricing.jobs_counted_this_month(tenant=tenant),
        "quota_remaining": pricing.quota_remaining(tenant=tenant),
        "completed_jobs": totals["completed"] or 0,
        "cost": float(totals["cost"] or Decimal(0)),
        "training_samples": totals["samples"] or 0,
        "token_count": totals["tokens"] or 0,
        "gpu_hours": totals["gpu_hours"] or 0.0,
    }


# --- the cluster's GPU-hour allocation (project-wide, all tenants) ----------------------------

def _slurm_allocation_jobs():
    """Cluster jobs of the current allocation period (SLURM_ALLOCATION_PERIOD_START, if set)."""
    qs = TrainingJob.objects.filter(backend="slurm")
    start = getattr(settings, "SLURM_ALLOCATION_PERIOD_START", "") or ""
    if start:
        qs = qs.filter(created_at__date__gte=date.fromisoformat(start))
    return qs


def slurm_allocation_used_gpu_hours() -> float:
    """GPU-hours the project's cluster jobs used in the allocation period (all tenants)."""
    return float(_slurm_allocation_jobs().aggregate(total=Sum("gpu_hours"))["total"] or 0.0)


def slurm_gpu_hours_by_month(*, tenant=None) -> list[dict]:
    """GPU-hours of cluster jobs per tenant per month (by the job's creation month)."""
    qs = TrainingJob.objects.filter(backend="slurm")
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    rows = (
        qs.annotate(month=TruncMonth("created_at"))
        .values("tenant__slug", "month")
        .annotate(gpu_hours=Sum("gpu_hours"), jobs=Count("id"))
        .order_by("month", "tenant__slug")
    )
    return [
        {
            "tenant": row["tenant__slug"],
            "month": row["month"].strftime("%Y-%m"),
            "gpu_hours": round(float(row["gpu_hours"] or 0.0), 4),
            "jobs": row["jobs"],
        }
        for row in rows
    ]


# --- the dashboards' reads (overview, staff) ----------------------------------------------------

ACTIVE_STATUSES = (TrainingJob.QUEUED, TrainingJob.PREPARING, TrainingJob.RUNNING)


def training_job_get_any(*, job_id: str) -> TrainingJob:
    """Any tenant's job or 404: for operators only (the staff dashboard's curves)."""
    return get_object_or_404(TrainingJob, pk=job_id)


def training_jobs_recent(*, limit: int, status: str | None = None):
    """The newest jobs of every tenant (optionally of one status), with their tenant."""
    jobs = TrainingJob.objects.select_related("tenant").order_by("-created_at")
    if status is not None:
        jobs = jobs.filter(status=status)
    return jobs[:limit]


def training_jobs_by_ids(*, job_ids: list[str]) -> list[TrainingJob]:
    """The jobs named, in the order named; unknown ids are left out."""
    found = {j.id: j for j in TrainingJob.objects.select_related("tenant").filter(pk__in=job_ids)}
    return [found[j] for j in job_ids if j in found]


def training_jobs_with_loss(*, limit: int) -> list[TrainingJob]:
    """The newest jobs that logged a training loss (curves worth overlaying)."""
    return list(TrainingJob.objects.select_related("tenant")
                .filter(metric_points__kind="train").distinct().order_by("-created_at")[:limit])


def tenants_with_job_counts():
    """Every tenant with its plan, job count, active job count and GPU-hours (staff overview)."""
    from django.db.models import Q

    from tenants.models import Tenant

    return Tenant.objects.select_related("plan").annotate(
        job_count=Count("training_jobs", distinct=True),
        running=Count("training_jobs", filter=Q(training_jobs__status__in=ACTIVE_STATUSES),
                      distinct=True),
        gpu_hours=Sum("training_jobs__gpu_hours"),
    )


def training_metric_rows(*, job: TrainingJob) -> list[dict]:
    """The job's metric points by kind and step (kind, step, epoch, loss, eval_loss, extra)."""
    return list(TrainingMetric.objects.filter(job=job).order_by("kind", "step").values(
        "kind", "step", "epoch", "loss", "eval_loss", "extra"))


def training_job_events_latest(*, job: TrainingJob, limit: int) -> list[TrainingEvent]:
    """The job's last `limit` events, oldest first."""
    events = list(TrainingEvent.objects.filter(job=job).order_by("-created_at", "-id")[:limit])
    return list(reversed(events))


def training_jobs_active_by_backend() -> list[dict]:
    """Queued, preparing and running jobs per compute backend."""
    from django.db.models import Q

    rows = (
        TrainingJob.objects.filter(status__in=ACTIVE_STATUSES)
        .values("backend")
        .annotate(
            queued=Count("id", filter=Q(status=TrainingJob.QUEUED)),
            preparing=Count("id", filter=Q(status=TrainingJob.PREPARING)),
            running=Count("id", filter=Q(status=TrainingJob.RUNNING)),
        )
        .order_by("backend")
    )
    return list(rows)


def training_gpu_hours_by_tenant_month(*, since) -> list[dict]:
    """GPU-hours per calendar month and tenant slug since `since` (rows: month, slug, hours)."""
    from django.db.models.functions import TruncMonth as _TruncMonth

    return list(
        TrainingJob.objects.filter(created_at__gte=since)
        .annotate(month=_TruncMonth("created_at"))
        .values("month", "tenant__slug")
        .annotate(hours=Sum("gpu_hours"))
        .order_by("month", "tenant__slug")
    )


# --- the tenant's training settings ---------------------------------------------------------


def training_settings_get(*, tenant) -> TrainingSettings:
    """The tenant's training settings; an unsaved row with the defaults when it has none (a read
    never writes: the row is made by `training_settings_update` on the first change)."""
    found = TrainingSettings.objects.filter(tenant=tenant).first()
    return found if found is not None else TrainingSettings(tenant=tenant)


def training_defaults_get(*, tenant) -> dict[str, dict]:
    """Per method, what a job of this tenant gets for the parameters its request leaves out: the
    seed's defaults, then its base model's recipe (training.services.recipes), as
    `training_job_create` resolves them. What a form should start from: starting from the seed's
    values instead would state them, and stated values win over the recipe."""
    from training.parameters import METHODS
    from training.services.params import base_model_spec, training_params_resolve
    from training.services.recipes import base_recipe

    try:
        name = base_model_spec(training_settings_get(tenant=tenant).base_model or None)["name"]
    except InvalidInput:  # a base the operator no longer offers: a job would be refused anyway
        name = None
    return {method: training_params_resolve(
                method=method, given={},
                recipe=base_recipe(base_name=name, method=method) if name else None)
            for method in METHODS}


def training_settings_section(tenant) -> dict:
    """The training keys of the tenant settings document (registered with tenants at start-up)."""
    row = training_settings_get(tenant=tenant)
    return {"auto_training": row.auto_training,
            "compute_backend": row.compute_backend or None,
            "base_model": row.base_model or None}


def tenant_ids_with_auto_training() -> list[int]:
    """The tenants that turned automatic training on (the periodic check's list)."""
    return list(TrainingSettings.objects.filter(auto_training_enabled=True)
                .order_by("tenant_id").values_list("tenant_id", flat=True))
