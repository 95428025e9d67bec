"""Writes for adapter versions: storing a trained adapter, activating, archiving, plan limits.

Decisions (documented here because every entry point, API, admin and dashboard, goes through
these functions):

* **Auto-activation.** A tenant's first version (the tenant has no active version yet) is
  activated automatically, so a tenant's first training run changes what its users are served.
  Every later version is stored *inactive*: the tenant deploys it explicitly
  (`POST .../lora/vN/activate`), or tests it in an A/B split first, like OpenAI's explicit
  deploy of a fine-tuned model.
* **Plan limit on stored versions** (`tenant.plan.max_lora_versions`, None = unlimited). A new
  version is always stored: the training was paid for and refusing it would throw it away.
  After storing (and after every activation or A/B change) the oldest versions that are neither
  active, nor an arm of an enabled A/B split, nor the version just created are *archived* (their
  files are deleted from storage, the row stays for lineage and metrics) until the tenant is
  within its limit. When no version can go (e.g. Pro, limit 1: v1 active + new v2), the tenant
  stays over the limit until it activates or deletes one; the event is recorded in the audit log
  as `adapter.plan_limit_exceeded`, and the next activation brings it back within the limit.
  The active version and the arms of an A/B test are never archived silently.
* **The activation gate** (`activation_check`). Every version is evaluated after its job
  (adapters.services.evaluation) on the tenant's golden set (corrections no job trains on) and
  on general questions the base model answers right. Activating a version needs `force=True`
  (else 409 with the numbers that decided) when it answers fewer golden items right than the
  active version on the same items (`golden_regression`), or keeps less than
  ACTIVATION_MIN_GENERAL_KEPT of the general answers the base knew (`general_knowledge_lost`).
  Versions without a completed evaluation fall back to the held-out `eval_loss`, compared only
  between versions of the same method (`eval_regression`); losses of different methods measure
  different things and are not compared.
  A rollback (activating a version older than the active one, the seed's "Rollback to Previous
  Version" call, sent without a body) is exempt: one rolls back precisely because the newer
  version behaves worse online despite its better offline scores, and blocking the emergency
  action behind those numbers would be wrong; the audit entry records `rollback` and the
  numbers. Promoting an A/B winner skips the gate too: online evidence from real users
  outranks the offline evaluation.
"""

from __future__ import annotations

from pathlib import Path

from django.db import transaction
from django.utils import timezone

from adapters.models import AdapterVersion
from adapters.selectors import ab_test_arms
from adapters.services.inference import (
    inference_adapter_register_enqueue,
    inference_adapter_unregister_enqueue,
)
from adapters.services.integrity import (
    ADAPTER_WEIGHTS,
    MANIFEST,
    REQUIRED_ADAPTER_FILES,
    sha256_of_bytes,
    verify_result_dir,
)
from adapters.services.storage import (
    adapter_storage_prefix,
    storage_delete_quietly,
    storage_put,
)
from tenants.errors import Conflict
from tenants.models import Tenant
from tenants.services import audit_log_record

SYSTEM_ACTOR = "system"


# --- creating a version from a finished job -------------------------------------------------


def _manifest_final_metrics(manifest: dict) -> dict:
    metrics = (manifest.get("final_metrics") or manifest.get("metrics")
               or manifest.get("eval_metrics") or {})
    return metrics if isinstance(metrics, dict) else {}


def _manifest_base_model(manifest: dict, job) -> str:
    if getattr(job, "base_model", ""):
        return job.base_model
    base = manifest.get("base_model") or ""
    if isinstance(base, dict):
        return str(base.get("hf_id") or base.get("path") or "")
    return str(base)


def _version_files_store(*, prefix: str, contents: dict[str, bytes], manifest_bytes: bytes,
                         written: list[str]) -> dict[str, str]:
    """Write the adapter files and the manifest under `prefix`; returns {name: sha256}.

    Appends each written path to `written` as it goes, so the caller can remove them if the
    surrounding transaction fails.
    """
    files = {}
    for name in REQUIRED_ADAPTER_FILES:
        storage_put(f"{prefix}/{name}", contents[name])
        written.append(f"{prefix}/{name}")
        files[name] = sha256_of_bytes(contents[name])
    storage_put(f"{prefix}/{MANIFEST}", manifest_bytes)
    written.append(f"{prefix}/{MANIFEST}")
    files[MANIFEST] = sha256_of_bytes(manifest_bytes)
    return files


def _version_created_audit(*, tenant: Tenant, version: AdapterVersion, job) -> None:
    audit_log_record(
        action="adapter.version_created", actor=SYSTEM_ACTOR, tenant=tenant,
        target=version.version,
        details={"job_id": job.pk, "sha256": version.sha256,
                 "size_bytes": version.size_bytes,
                 "auto_activated": version.is_active},
    )
    if version.is_active:
        audit_log_record(
            action="adapter.activated", actor=SYSTEM_ACTOR, tenant=tenant,
            target=version.version,
            details={"previous": None, "reason": "first version of the tenant"},
        )


def _version_insert(*, job, manifest: dict, contents: dict[str, bytes], manifest_bytes: bytes,
                    written: list[str]) -> AdapterVersion:
    """Allocate the next number, store the files and the row. Call inside a transaction."""
    # Locking the tenant row serialises number allocation: two jobs finishing at once
    # would otherwise both read max(number) and collide on v<N+1>.
    tenant = Tenant.objects.select_for_update().get(pk=job.tenant_id)
    last = (AdapterVersion.objects.filter(tenant=tenant)
            .order_by("-number").values_list("number", flat=True).first())
    number = (last or 0) + 1
    prefix = adapter_storage_prefix(tenant=tenant, number=number)
    files = _version_files_store(prefix=prefix, contents=contents,
                                 manifest_bytes=manifest_bytes, written=written)
    has_active = AdapterVersion.objects.filter(tenant=tenant, is_active=True).exists()
    now = timezone.now()
    version = AdapterVersion.objects.create(
        tenant=tenant,
        number=number,
        job=job,
        parent=getattr(job, "parent_version", None),
        method=job.method or str(manifest.get("method") or ""),
        base_model=_manifest_base_model(manifest, job),
        training_samples=job.training_samples or 0,
        eval_metrics=_manifest_final_metrics(manifest),
        size_bytes=sum(len(contents[n]) for n in REQUIRED_ADAPTER_FILES),
        sha256=files[ADAPTER_WEIGHTS],
        files=files,
        storage_prefix=prefix,
        data_manifest=job.snapshot_manifest or {},
        manifest=manifest,
        is_active=not has_active,
        activated_at=None if has_active else now,
        created_at=now,
    )
    _version_created_audit(tenant=tenant, version=version, job=job)
    adapter_versions_enforce_plan_limit(tenant=tenant, keep={version.pk})
    inference_adapter_register_enqueue(version=version)
    return version


def adapter_version_create_from_job(*, job, result_dir: Path, **_signal_kwargs) -> AdapterVersion:
    """Store a completed job's adapter as the tenant's next version `v<N>`.

    Receiver of `training.signals.training_job_succeeded`. Idempotent per job: a runner that
    retries its completion step gets the version created the first time.
    """
    existing = AdapterVersion.objects.filter(job_id=job.pk).first()
    if existing is not None:
        return existing
    manifest, contents = verify_result_dir(Path(result_dir))
    manifest_bytes = (Path(result_dir) / MANIFEST).read_bytes()

    written: list[str] = []
    try:
        with transaction.atomic():
            return _version_insert(job=job, manifest=manifest, contents=contents,
                                   manifest_bytes=manifest_bytes, written=written)
    except Exception:
        storage_delete_quietly(written, why="cleaning up after a failed version create")
        raise


def training_job_succeeded_receiver(sender=None, *, job, result_dir, **kwargs) -> AdapterVersion:
    """Signal adapter: the runner reads the return value to log which version was created."""
    return adapter_version_create_from_job(job=job, result_dir=Path(result_dir))


# --- activation, archiving, plan limit --------------------------------------------------------


def _eval_loss(version: AdapterVersion | None) -> float | None:
    if version is None:
        return None
    value = (version.eval_metrics or {}).get("eval_loss")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _completed_evaluation(version: AdapterVersion | None):
    from adapters.models import AdapterEvaluation

    if version is None:
        return None
    return AdapterEvaluation.objects.filter(version=version,
                                            status=AdapterEvaluation.COMPLETED).first()


def _golden_shares(evaluation, current: AdapterVersion) -> tuple[float | None, float | None]:
    """(new, active) golden shares on the same items: from this evaluation when it asked the
    current version too, else from the current version's own evaluation of identical items."""
    golden = (evaluation.scores or {}).get("golden") or {}
    new = (golden.get("new") or {}).get("share")
    if evaluation.compared_with == current.version:
        return new, (golden.get("active") or {}).get("share")
    other = _completed_evaluation(current)
    other_golden = ((other.scores or {}).get("golden") or {}) if other else {}
    if other_golden.get("ids") and other_golden.get("ids") == golden.get("ids"):
        return new, (other_golden.get("new") or {}).get("share")
    return new, None


def activation_check(version: AdapterVersion, current: AdapterVersion | None) -> dict:
    """The numbers the activation gate decides on, and what they block (see the module
    docstring): {"basis", "blocked": [codes], ...figures}."""
    from django.conf import settings

    decision: dict = {"basis": None, "blocked": []}
    evaluation = _completed_evaluation(version)
    if evaluation is not None:
        decision["basis"] = "evaluation"
        threshold = float(getattr(settings, "ACTIVATION_MIN_GENERAL_KEPT", 0.8))
        general = (evaluation.scores or {}).get("general") or {}
        kept = (general.get("new") or {}).get("kept_share")
        decision.update({"general_kept_share": kept, "general_known_by_base":
                         general.get("base_right"), "min_general_kept": threshold})
        if kept is not None and kept < threshold:
            decision["blocked"].append("general_knowledge_lost")
        if current is not None:
            new, active = _golden_shares(evaluation, current)
            decision.update({"golden_right_share": new, "active_golden_right_share": active})
            if new is not None and active is not None and new < active:
                decision["blocked"].append("golden_regression")
        return decision
    if current is None or current.method != version.method:
        return decision
    new_loss, current_loss = _eval_loss(version), _eval_loss(current)
    if new_loss is not None and current_loss is not None:
        decision.update({"basis": "eval_loss", "eval_loss": new_loss,
                         "active_eval_loss": current_loss})
        if new_loss > current_loss:
            decision["blocked"].append("eval_regression")
    return decision


def _refusal(version: AdapterVersion, current: AdapterVersion | None, decision: dict) -> Conflict:
    code = decision["blocked"][0]
    details = {"version": version.version,
               "active_version": current.version if current else None,
               **{k: v for k, v in decision.items() if k not in ("basis", "blocked")},
               "blocked": decision["blocked"]}
    if code == "eval_regression":
        message = (f"{version.version} has a worse held-out eval loss "
                   f"({decision['eval_loss']:.4f}) than the active {current.version} "
                   f"({decision['active_eval_loss']:.4f}).")
        details = {"version": version.version, "eval_loss": decision["eval_loss"],
                   "active_version": current.version,
                   "active_eval_loss": decision["active_eval_loss"]}
    elif code == "golden_regression":
        message = (f"{version.version} answers fewer of the tenant's golden (never trained) "
                   f"questions right ({decision['golden_right_share']:.0%}) than the active "
                   f"{current.version} ({decision['active_golden_right_share']:.0%}).")
    else:
        message = (f"{version.version} still answers only {decision['general_kept_share']:.0%} "
                   f"of the general questions the base model answered right (the minimum is "
                   f"{decision['min_general_kept']:.0%}).")
    return Conflict(code, message + ' Send {"force": true} to activate it anyway.',
                    details=details)


def adapter_version_activate(
    *, version: AdapterVersion, force: bool = False, actor: str = SYSTEM_ACTOR,
    ip_address: str | None = None, reason: str = "",
) -> AdapterVersion:
    """Make `version` the one served to the tenant (rollback = activating an older one).

    Serving reads the active version from the database on every request, so the change takes
    effect on the next request, without a restart.
    """
    with transaction.atomic():
        # The tenant row lock serialises activations: two concurrent activations would otherwise
        # both deactivate "the others" and trip the one-active constraint.
        tenant = Tenant.objects.select_for_update().get(pk=version.tenant_id)
        version = AdapterVersion.objects.get(pk=version.pk)
        if version.is_archived:
            raise Conflict("version_archived",
                           f"{version.version} is archived (its files were deleted); "
                           "it cannot be activated.")
        current = AdapterVersion.objects.filter(tenant=tenant, is_active=True).first()
        if current is not None and current.pk == version.pk:
            return version
        rollback = current is not None and version.number < current.number
        decision = activation_check(version, current)
        if decision["blocked"] and not force and not rollback:
            raise _refusal(version, current, decision)
        AdapterVersion.objects.filter(tenant=tenant, is_active=True).update(is_active=False)
        version.is_active = True
        version.activated_at = timezone.now()
        version.save(update_fields=["is_active", "activated_at"])
        details = {"previous": current.version if current else None, "forced": bool(force),
                   "rollback": rollback}
        if reason:
            details["reason"] = reason
        if decision["basis"]:
            details["gate"] = decision
        if "eval_regression" in decision["blocked"]:
            details["eval_regression"] = {"eval_loss": decision["eval_loss"],
                                          "previous": decision["active_eval_loss"]}
        audit_log_record(action="adapter.activated", actor=actor, ip_address=ip_address,
                         tenant=tenant, target=version.version, details=details)
        adapter_versions_enforce_plan_limit(tenant=tenant, keep={version.pk})
    return version


def _archive(version: AdapterVersion) -> None:
    # A storage hiccup leaves a file behind; the row is archived anyway.
    storage_delete_quietly([f"{version.storage_prefix}/{name}" for name in version.files or {}],
                           why="archiving")
    version.status = AdapterVersion.ARCHIVED
    version.archived_at = timezone.now()
    version.save(update_fields=["status", "archived_at"])
    inference_adapter_unregister_enqueue(version=version)


def adapter_version_archive(
    *, version: AdapterVersion, actor: str = SYSTEM_ACTOR, ip_address: str | None = None,
) -> AdapterVersion:
    """Delete a version's files, keeping the row (lineage, per-version metrics).

    Refused (409) for the active version and for an arm of an enabled A/B test.
    """
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=version.tenant_id)
        version = AdapterVersion.objects.get(pk=version.pk)
        if version.is_archived:
            return version
        if version.is_active:
            raise Conflict("version_active",
                           f"{version.version} is the active version; activate another one "
                           "before deleting it.")
        if version.version in ab_test_arms(tenant):
            raise Conflict("version_in_ab_test",
                           f"{version.version} serves traffic in the A/B test; remove it from "
                           "lora_ab_test first.")
        _archive(version)
        audit_log_record(action="adapter.archived", actor=actor, ip_address=ip_address,
                         tenant=tenant, target=version.version, details={"reason": "deleted"})
    return version


def adapter_versions_enforce_plan_limit(*, tenant: Tenant, keep: set[int] = frozenset()) -> dict:
    """Archive the oldest removable versions until the tenant is within its plan's limit.

    Never archives the active version, an arm of an enabled A/B test, or a version in `keep`.
    Returns {"archived": [labels], "exceeded": bool}. Call inside the tenant-row lock.
    """
    limit = tenant.plan.max_lora_versions
    result = {"archived": [], "exceeded": False}
    if limit is None:
        return result
    ready = list(AdapterVersion.objects.filter(tenant=tenant, status=AdapterVersion.READY)
                 .order_by("number"))
    excess = len(ready) - limit
    if excess <= 0:
        return result
    protected = set(ab_test_arms(tenant))
    for version in ready:
        if excess <= 0:
            break
        if version.is_active or version.pk in keep or version.version in protected:
            continue
        _archive(version)
        audit_log_record(action="adapter.archived", actor=SYSTEM_ACTOR, tenant=tenant,
                         target=version.version,
                         details={"reason": "plan_limit", "limit": limit,
                                  "plan": tenant.plan.slug})
        result["archived"].append(version.version)
        excess -= 1
    if excess > 0:
        result["exceeded"] = True
        audit_log_record(
            action="adapter.plan_limit_exceeded", actor=SYSTEM_ACTOR, tenant=tenant,
            details={"limit": limit, "plan": tenant.plan.slug, "stored": limit + excess,
                     "message": "No stored version could be archived (active or in an A/B "
                                "test); activate or delete one to get back within the plan."},
        )
    return result
