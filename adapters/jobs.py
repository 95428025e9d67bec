"""RQ entry points of the adapters app. They take ids and call one service each."""

from __future__ import annotations


def adapter_version_evaluate_job(version_id: int, job_id: str) -> str:
    """Evaluate a new version (queue `training`), then send its job's completed webhook."""
    from adapters.models import AdapterVersion
    from adapters.services.evaluation import (
        adapter_version_evaluate,
        adapter_version_evaluation_finish,
    )

    version = AdapterVersion.objects.select_related("tenant", "job").get(pk=version_id)
    try:
        status = adapter_version_evaluate(version=version).status
    finally:
        adapter_version_evaluation_finish(version_id=version_id, job_id=job_id)
    return status


def adapter_version_evaluate_on_failure(rq_job, connection, exc_type, exc_value, tb) -> None:
    """RQ's on_failure callback (worker lost, timeout): the evaluation says so and the webhook
    still goes out."""
    from adapters.services.evaluation import adapter_version_evaluation_finish

    version_id, job_id = rq_job.args
    adapter_version_evaluation_finish(version_id=version_id, job_id=job_id,
                                      error=f"evaluation job failed: {exc_type.__name__}: "
                                            f"{exc_value}")


def online_decisions_check_job(tenant_id: int) -> dict:
    """A tenant's automatic decisions after feedback (queue `default`, debounced per tenant):
    A/B auto-promotion and auto-rollback. Returns the labels decided on (or None) and when the
    next check is scheduled (ISO time, or None)."""
    from adapters.services.decisions import online_decisions_check_run

    result = online_decisions_check_run(tenant_id=tenant_id)
    at = result.pop("next_check_at")
    return {**{key: (version.version if version is not None else None)
               for key, version in result.items()},
            "next_check_at": at.isoformat() if at is not None else None}


def inference_adapter_register_job(version_id: int) -> str | None:
    """Register a new version on the inference server (queue `default`)."""
    from adapters.models import AdapterVersion
    from adapters.services.inference import inference_adapter_register

    version = AdapterVersion.objects.select_related("tenant").filter(pk=version_id).first()
    return inference_adapter_register(version=version) if version is not None else None


def inference_adapter_unregister_job(served_name: str) -> bool:
    """Unload an archived version from the inference server (queue `default`)."""
    from adapters.services.inference import inference_adapter_unregister

    return inference_adapter_unregister(served_name=served_name)
