"""Rows the dashboard pages draw: finished jobs with their loss curves, adapter versions.

These are the rows the training runner and the adapters app write; the tests that need a job
to really run use the training service and a real RQ worker instead (test_browser.py).
"""

from __future__ import annotations

import math

from django.utils import timezone


def finished_job(tenant, *, method: str = "sft", steps: int = 12, eval_every: int = 4,
                 status: str = "completed", params: dict | None = None,
                 failure_reason: str = "", gpu_hours: float = 0.0, manifest: dict | None = None):
    """A job with `steps` training-loss points and an eval point every `eval_every` steps."""
    from training.models import TrainingEvent, TrainingJob, TrainingMetric

    now = timezone.now()
    job = TrainingJob.objects.create(
        tenant=tenant, method=method, status=status, base_model="tiny-base",
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
        TrainingMetric.objects.create(job=job, kind="train", step=step, epoch=3 * step / steps,
                                      loss=2.5 * math.exp(-step / 5) + 0.1, extra=extra)
        if step % eval_every == 0:
            TrainingMetric.objects.create(job=job, kind="eval", step=step,
                                          epoch=3 * step / steps,
                                          eval_loss=2.6 * math.exp(-step / 6) + 0.2,
                                          extra=extra)
    TrainingEvent.objects.create(job=job, type="transition", from_status="running",
                                 to_status=status, message=f"Job {status}")
    return job


def adapter_version(tenant, number: int, *, job=None, parent=None, active: bool = False,
                    eval_loss: float | None = 0.5):
    from adapters.models import AdapterVersion

    return AdapterVersion.objects.create(
        tenant=tenant, number=number, job=job, parent=parent, method="sft",
        base_model="tiny-base", training_samples=60,
        eval_metrics={"eval_loss": eval_loss} if eval_loss is not None else {},
        sha256=f"{number:064x}", files={},
        storage_prefix=f"tenants/{tenant.slug}/adapters/v{number}",
        is_active=active, activated_at=timezone.now() if active else None,
    )
