"""Creating a job: the checks (plan, data, allocation, quota), the estimate, the row and its
snapshot, then the queue (on commit)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.db import transaction

from tenants.errors import Conflict, LimitReached, NotPermitted
from tenants.models import Tenant
from tenants.services import audit_log_record
from training import compiler, pricing, snapshots
from training.models import TrainingEvent, TrainingJob
from training.parameters import dpo_anchored
from training.replay_traffic import TrafficReplay, traffic_replay_prompts
from training.selectors import training_settings_get
from training.services.cluster import slurm_allocation_check
from training.services.params import (
    JobRequest,
    base_model_label,
    base_model_spec,
    parent_version_resolve,
    training_params_resolve,
)
from training.services.queue import training_job_enqueue
from training.services.recipes import base_model_trainable_check, base_recipe, recipe_note
from training.services.transitions import webhooks_on_commit
from training.tokens import replay_tokens
from training.trainer import replay as trainer_replay
from training.trainer.config import TrainSpec


def tenant_backend(tenant: Tenant) -> str:
    """The compute backend a new job of the tenant runs on (its setting, else the platform's)."""
    chosen = training_settings_get(tenant=tenant).compute_backend
    return chosen if chosen in ("local", "slurm") else settings.TRAINING_BACKEND


def _plan_check(tenant: Tenant) -> None:
    plan = tenant.plan
    if not plan.allows_training:
        raise NotPermitted("plan_does_not_allow_training",
                           f"The {plan.name} plan does not include training; upgrade to train "
                           "adapters.", details={"plan": plan.slug})


def _readiness_check(method: str, params: dict, compiled: compiler.CompiledData) -> None:
    if method == "sft":
        need, have = int(params["min_feedback_count"]), compiled.sft_examples
        what = "SFT examples (corrections of known prompts, well-rated answers, dataset " \
               "conversations)"
        field = "min_feedback_count"
    elif method == "kto":
        need, have = int(params["min_feedback_count"]), compiled.kto_examples
        what = "KTO examples (thumbs up/down, ratings of 4-5 or 1-2, corrections, datasets)"
        field = "min_feedback_count"
    else:
        need, have = int(params["min_preference_pairs"]), compiled.dpo_pairs
        what = "preference pairs (corrections, thumbs up/down on the same prompt, dataset " \
               "preferences)"
        field = "min_preference_pairs"
    if have < need:
        raise Conflict(
            "not_ready",
            f"Not enough training data: {have} {what.split(' (')[0]} available, {need} required.",
            details={field: need, "available": have, "missing": need - have, "counts": what,
                     "excluded": compiled.excluded},
        )
    if method == "dpo" and not compiled.train:
        raise Conflict("not_ready", "No preference pairs to train on.",
                       details={"available": have, "missing": 1})
    if not compiled.train:
        raise Conflict("not_ready", "No training examples to train on.",
                       details={"available": have, "missing": 1})


def _quota_error(tenant: Tenant) -> LimitReached:
    quota = tenant.plan.monthly_job_quota
    return LimitReached(
        "quota_exceeded",
        f"The {tenant.plan.name} plan allows {quota} training job(s) a month; this month's are "
        "used up.",
        details={"monthly_job_quota": quota,
                 "used": pricing.jobs_counted_this_month(tenant=tenant),
                 "resets_at": _next_month(pricing.month_start()).isoformat()},
    )


def _next_month(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


def _replay_estimate(params: dict, replay: TrafficReplay | None) -> tuple[dict, int]:
    """How many replay rows an SFT job adds (the shipped general prompts it samples, the
    tenant's traffic picked for it) and their tokens per epoch, each answer counted at the
    longest the trainer generates."""
    general = trainer_replay.replay_pick(_shipped_replay_prompts(),
                                         rows=int(params.get("replay_rows") or 0),
                                         seed=int(params.get("seed", TrainSpec.seed)))
    traffic = [record["prompt"] for record in replay.records] if replay else []
    tokens = replay_tokens(general + traffic, answer_tokens=trainer_replay.MAX_NEW_TOKENS)
    return {"general": len(general), "traffic": len(traffic)}, tokens


@lru_cache(maxsize=1)
def _shipped_replay_prompts() -> tuple[str, ...]:
    return tuple(trainer_replay.replay_prompts())


def _estimate(*, tenant: Tenant, request: JobRequest, params: dict, spec: dict, parent,
              compiled: compiler.CompiledData, backend: str,
              replay: TrafficReplay | None = None) -> dict:
    """What the job will take and cost (the response body of a dry run and of a start). The
    duration counts the replay rows too (`replay_samples`); the cost counts the tenant's own
    examples only."""
    method = request.method
    anchored = method == "dpo" and dpo_anchored(params)
    replay_samples, replay_token_count = ({}, 0)
    if method == "sft":
        replay_samples, replay_token_count = _replay_estimate(params, replay)
    elif anchored:
        # A DPO job runs one batch of its anchors beside each batch of pairs: about as many
        # anchor rows an epoch as pairs, however many replay rows it has.
        replay_samples, tokens = _replay_estimate(params, None)
        general = replay_samples["general"]
        replay_token_count = round(tokens * min(1.0, len(compiled.train) / general)) \
            if general else 0
    return {
        "method": method,
        "training_samples": len(compiled.train),
        "eval_samples": len(compiled.eval),
        "token_count": compiled.token_count,
        **({"replay_samples": replay_samples} if method == "sft" or anchored else {}),
        "estimated_duration_minutes": pricing.estimate_duration_minutes(
            token_count=compiled.token_count + replay_token_count, epochs=params["epochs"],
            backend=backend),
        "estimated_cost": pricing.job_cost(plan=tenant.plan, method=method,
                                           samples=len(compiled.train)),
        "throughput_basis": pricing.backend_tokens_per_second(backend=backend)[1],
        "params": params,
        "preset": request.preset or None,
        "base_model": spec["name"],
        "defaults": spec.get("recipe") or "seed",
        "notes": [recipe_note(recipe=spec["recipe"], method=method)] if spec.get("recipe") else [],
        "continue_from": parent.version if parent else None,
        "backend": backend,
    }


def training_job_create(*, tenant: Tenant, request: JobRequest, actor: str = "system",
                        ip_address: str | None = None) -> tuple[TrainingJob | None, dict]:
    """Check and create a job; returns (job or None for a dry run, the estimate).

    Checks, each refused with a domain error before anything is queued: the plan trains at all
    (NotPermitted), the data is ready (Conflict with what is missing), the cluster allocation
    is not spent (Conflict), the monthly quota has a slot (LimitReached). The quota is counted
    under a lock on the tenant row (`_job_store`), so two concurrent requests cannot both take
    the last slot.
    """
    _plan_check(tenant)
    method = request.method
    # The request's base, else the tenant's `base_model` setting, else the platform's default.
    spec = base_model_spec(request.base_model or training_settings_get(tenant=tenant).base_model)
    base_model_trainable_check(spec=spec)
    recipe = base_recipe(base_name=spec["name"], method=method)
    if recipe:
        spec["recipe"] = recipe
    params = training_params_resolve(method=method, given=request.params, preset=request.preset,
                                     recipe=recipe)
    base_label = base_model_label(spec)
    parent = parent_version_resolve(tenant=tenant, label=request.continue_from,
                                    base_label=base_label)
    compiled = compiler.training_data_compile(tenant=tenant, method=method)
    _readiness_check(method, params, compiled)
    backend = tenant_backend(tenant)
    if backend == "slurm":
        # Refused before queueing (and for dry runs too): a spent allocation is a hard stop.
        slurm_allocation_check()
    replay = None
    if method == "sft" and params.get("replay_traffic_rows"):
        replay = traffic_replay_prompts(tenant=tenant, compiled=compiled,
                                        limit=int(params["replay_traffic_rows"]))
    estimate = _estimate(tenant=tenant, request=request, params=params, spec=spec,
                         parent=parent, compiled=compiled, backend=backend, replay=replay)
    if request.dry_run:
        remaining = pricing.quota_remaining(tenant=tenant)
        if remaining is not None and remaining <= 0:
            raise _quota_error(tenant)
        estimate["quota_remaining"] = remaining
        return None, estimate
    job, remaining = _job_store(
        tenant=tenant, request=request, params=params, spec=spec, base_label=base_label,
        parent=parent, compiled=compiled, replay=replay, estimate=estimate, actor=actor,
        ip_address=ip_address)
    estimate["quota_remaining"] = None if remaining is None else remaining - 1
    return job, estimate


def _job_store(*, tenant: Tenant, request: JobRequest, params: dict, spec: dict,
               base_label: str, parent, compiled: compiler.CompiledData,
               replay: TrafficReplay | None, estimate: dict, actor: str,
               ip_address: str | None) -> tuple[TrainingJob, int | None]:
    """The quota's last check, the row, its snapshot, its events, then the queue on commit.

    Returns the job and the quota left before it. The tenant row is locked with
    select_for_update(of=("self",)) (not its plan, which many tenants share): a concurrent
    request waits for this one to commit, then counts this job.
    """
    method = request.method
    with transaction.atomic():
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
            backend=estimate["backend"],
            total_epochs=math.ceil(float(params["epochs"])),
            training_samples=len(compiled.train),
            eval_samples=len(compiled.eval),
            token_count=compiled.token_count,
            estimated_duration_minutes=estimate["estimated_duration_minutes"],
            estimated_cost=estimate["estimated_cost"],
            metrics={"loss": None, "learning_rate": None, "grad_norm": None,
                     "samples_processed": 0, "tokens_processed": 0},
        )
        prefix, manifest = snapshots.snapshot_write(tenant=locked, job_id=job.id, compiled=compiled,
                                                    replay=replay)
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
        webhooks_on_commit(job, TrainingJob.QUEUED)
    return job, remaining
