"""The cluster's side of training that is not the backend's: GPU-hour billing per Slurm attempt,
the project's allocation limit, and the poller that advances every cluster job.

The Slurm backend only reports (the Slurm id, its state, the elapsed time, the resources asked
for); what is billed and stored is decided here. GPU-hours follow LUMI's billing rule per
attempt from Slurm's elapsed time and are kept in `job.resources["slurm"]["attempts"]` and
summed into `job.gpu_hours`.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime

from django.conf import settings

from tenants.errors import Conflict
from training import selectors
from training.models import TrainingJob

logger = logging.getLogger(__name__)


def gpu_hours_for(partition: str, nodes: int, gpus_per_node: int, cpus: int, mem_gb: float,
                  elapsed_seconds: float, *, whole_node_partitions=None) -> float:
    """LUMI's billing rule (1 GPU-hour = one MI250X module = 2 GCDs for an hour).

    `cpus` and `mem_gb` are per node. Whole-node partitions (standard-g) bill 4 GPU-hours per
    node-hour; the others (small-g, dev-g, and any other cluster's partitions) bill by what
    the allocation holds: 0.5 * max(ceil(cores/8), ceil(mem/64 GB), GCDs) per node-hour.
    """
    hours = max(0.0, float(elapsed_seconds)) / 3600.0
    if whole_node_partitions is None:
        whole_node_partitions = getattr(settings, "SLURM_WHOLE_NODE_PARTITIONS", ["standard-g"])
    if partition in whole_node_partitions:
        return 4.0 * nodes * hours
    slots = max(math.ceil(cpus / 8), math.ceil(mem_gb / 64), gpus_per_node)
    return 0.5 * slots * nodes * hours


def _slurm_record(job: TrainingJob) -> dict:
    resources = job.resources if isinstance(job.resources, dict) else {}
    job.resources = resources
    record = resources.setdefault("slurm", {})
    record.setdefault("attempts", [])
    return record


def _gpu_hours_sum(job: TrainingJob) -> None:
    record = _slurm_record(job)
    job.gpu_hours = round(sum(a.get("gpu_hours", 0.0) for a in record["attempts"]), 6)


def slurm_attempt_open(*, job: TrainingJob, slurm_id: str, request: dict,
                       remote_dir: str = "") -> None:
    """Record a submitted attempt (nothing used yet) on the instance: `resources` and
    `gpu_hours` change, the caller saves them with the external id."""
    attempt = int(job.attempt or 1)
    record = _slurm_record(job)
    if remote_dir:
        record["remote_dir"] = remote_dir
    record["attempts"] = [a for a in record["attempts"] if a.get("attempt") != attempt]
    record["attempts"].append({
        "attempt": attempt,
        "slurm_id": slurm_id,
        "resume": attempt > 1,
        "submitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "request": request,
        "state": "PENDING",
        "elapsed_seconds": 0,
        "gpu_hours": 0.0,
    })
    _gpu_hours_sum(job)


def training_job_submission_record(*, job: TrainingJob, backend, external_id: str) -> list[str]:
    """What a (re)submission opens for billing; returns the fields it changed on `job`.

    Only cluster jobs are billed per attempt: the request comes from the backend's own
    configuration, so an attempt is billed for what was asked of Slurm.
    """
    config = getattr(backend, "config", None)
    if getattr(backend, "name", "") != "slurm" or config is None:
        return []
    slurm_attempt_open(job=job, slurm_id=external_id, request=config.request(),
                       remote_dir=config.job_dir(job.id))
    return ["resources", "gpu_hours"]


def slurm_usage_record(*, job: TrainingJob, usage: dict) -> bool:
    """Bill what a poll measured (`PollResult.usage`) to its attempt, on the instance; returns
    whether anything changed (the caller saves `resources` and `gpu_hours`)."""
    if not usage or not usage.get("state"):
        return False
    slurm_id = usage["slurm_id"]
    record = _slurm_record(job)
    if not any(a.get("slurm_id") == slurm_id for a in record["attempts"]):
        # The record of this attempt was lost (resources rewritten elsewhere): bill it
        # with today's request rather than not at all.
        attempt_no = int(usage.get("attempt") or job.attempt or 1)
        record["attempts"].append({"attempt": attempt_no, "slurm_id": slurm_id,
                                   "resume": attempt_no > 1, "request": usage["request"],
                                   "state": "", "elapsed_seconds": -1, "gpu_hours": 0.0})
    attempt = next(a for a in record["attempts"] if a.get("slurm_id") == slurm_id)
    state, elapsed = usage["state"], usage["elapsed_seconds"]
    if (attempt.get("state"), attempt.get("elapsed_seconds")) == (state, elapsed):
        return False
    request = attempt.get("request") or usage["request"]
    hours = gpu_hours_for(
        request["partition"], request["nodes"], request["gpus_per_node"],
        request["cpus_per_node"], request["mem_gb_per_node"], elapsed,
        whole_node_partitions=usage.get("whole_node_partitions"),
    )
    attempt.update(state=state.split(" ")[0], elapsed_seconds=elapsed, gpu_hours=round(hours, 6))
    _gpu_hours_sum(job)
    return True


def slurm_allocation_check(*, estimated_gpu_hours: float = 0.0) -> None:
    """Refuse a new cluster job when the project's GPU-hour allocation is spent.

    Call before queueing a job with backend "slurm". Raises Conflict
    `cluster_allocation_exhausted` with the numbers in `details`; no limit when
    SLURM_ALLOCATION_GPU_HOURS is 0.
    """
    limit = float(getattr(settings, "SLURM_ALLOCATION_GPU_HOURS", 0.0) or 0.0)
    if limit <= 0:
        return
    used = selectors.slurm_allocation_used_gpu_hours()
    if used >= limit or used + max(0.0, estimated_gpu_hours) > limit:
        account = getattr(settings, "SLURM_ACCOUNT", "") or "the cluster project"
        raise Conflict(
            "cluster_allocation_exhausted",
            f"The GPU-hour allocation of {account} is used up ({used:.2f} of {limit:.2f} "
            "GPU-hours): no new cluster training jobs until it is extended.",
            details={
                "account": account,
                "allocation_gpu_hours": limit,
                "used_gpu_hours": round(used, 4),
                "estimated_gpu_hours": round(estimated_gpu_hours, 4),
            },
        )


def slurm_jobs_poll() -> dict:
    """One poll round over every submitted, unfinished cluster job (RQ-schedulable).

    Each job gets one `training_job_advance` step (the runner stores events, maps states,
    resubmits on retry, fetches on completion, bills the attempt). A failure on one job is
    logged and does not stop the others.
    """
    from training.services.runner import training_job_advance

    ids = list(
        TrainingJob.objects.filter(backend="slurm")
        .exclude(status__in=TrainingJob.TERMINAL)
        .exclude(external_id="")
        .order_by("created_at")
        .values_list("id", flat=True)
    )
    errors = 0
    for job_id in ids:
        try:
            training_job_advance(job_id=job_id)
        except Exception:  # noqa: BLE001 - one broken job must not starve the others
            errors += 1
            logger.exception("polling cluster job %s failed", job_id)
    return {"polled": len(ids), "errors": errors}
