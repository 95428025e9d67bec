"""Quotas, prices and duration estimates of training jobs (the seed's "Pricing" section).

- Quota: `Plan.monthly_job_quota` jobs per calendar month (UTC); None means unlimited, 0 means
  the plan does not train at all. Every job created this month counts except one cancelled
  before it ever ran and one failed by the platform (lost worker, runner error, cluster fault:
  `training.failures.PLATFORM_FAULT_CATEGORIES`): the tenant got nothing from either.
- Cost: SFT $0.10 per 1000 training samples, DPO $0.15 per 1000 preference pairs (the plan's
  prices); GPU time is included.
- Duration: tokens to process (tokens per epoch x epochs) divided by the median throughput of
  this backend's earlier completed jobs; settings.TRAINING_DEFAULT_TOKENS_PER_SECOND until the
  backend has finished a job. Plus a fixed start-up allowance (model load, process start).
"""

from __future__ import annotations

import statistics
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from training.failures import PLATFORM_FAULT_CATEGORIES
from training.models import TrainingJob

STARTUP_SECONDS = 30.0
THROUGHPUT_SAMPLE = 20  # completed jobs whose median throughput is used


def month_start(now: datetime | None = None) -> datetime:
    """The first instant of the current calendar month in UTC (timezone.now() is UTC)."""
    now = now or timezone.now()
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def jobs_counted_this_month(*, tenant) -> int:
    """Jobs that count against the monthly quota (see module docstring)."""
    return (
        TrainingJob.objects.filter(tenant=tenant, created_at__gte=month_start())
        .exclude(Q(status=TrainingJob.CANCELLED) & Q(started_at__isnull=True))
        .exclude(Q(status=TrainingJob.FAILED)
                 & Q(failure_category__in=sorted(PLATFORM_FAULT_CATEGORIES)))
        .count()
    )


def quota_remaining(*, tenant) -> int | None:
    """Jobs the tenant may still start this month; None for unlimited."""
    quota = tenant.plan.monthly_job_quota
    if quota is None:
        return None
    return max(0, quota - jobs_counted_this_month(tenant=tenant))


def job_cost(*, plan, method: str, samples: int) -> Decimal:
    """Price of training on `samples` examples (SFT) or pairs (DPO) on this plan."""
    per_1000 = plan.dpo_price_per_1000 if method == "dpo" else plan.sft_price_per_1000
    cost = Decimal(samples) * Decimal(per_1000) / Decimal(1000)
    return cost.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def backend_tokens_per_second(*, backend: str) -> tuple[float, str]:
    """Median measured throughput of the backend's recent completed jobs, and where it came from."""
    speeds = list(
        TrainingJob.objects.filter(
            backend=backend, status=TrainingJob.COMPLETED, tokens_per_second__gt=0
        ).order_by("-finished_at").values_list("tokens_per_second", flat=True)[:THROUGHPUT_SAMPLE]
    )
    if speeds:
        return float(statistics.median(speeds)), f"median of {len(speeds)} completed job(s)"
    return float(settings.TRAINING_DEFAULT_TOKENS_PER_SECOND), "default"


def estimate_duration_minutes(*, token_count: int, epochs: float, backend: str) -> float:
    tps, _ = backend_tokens_per_second(backend=backend)
    seconds = STARTUP_SECONDS + token_count * float(epochs) / max(tps, 1e-6)
    return round(seconds / 60.0, 1)
