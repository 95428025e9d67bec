"""Writes for adapter versions: storing a trained adapter, activating, archiving, A/B splits.

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
* **Eval-regression guard.** Activating a *newer* version whose held-out `eval_loss` is worse
  (higher) than the active version's needs `force=True`; otherwise 409 `eval_regression`.
  A rollback (activating a version older than the active one, the seed's "Rollback to Previous
  Version" call, sent without a body) is exempt: one rolls back precisely because the newer
  version behaves worse online despite its better offline loss, and blocking the emergency
  action behind that number would be wrong; the audit entry records `rollback` and the
  regression. Promoting an A/B winner skips the guard too: online evidence from real users
  outranks the offline eval.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import struct
from pathlib import Path
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from rest_framework import serializers

from adapters.models import AdapterVersion
from tenants.api.errors import ApiError
from tenants.models import Tenant
from tenants.services import audit_log_record, tenant_settings_update

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
MANIFEST = "manifest.json"
REQUIRED_ADAPTER_FILES = (ADAPTER_WEIGHTS, ADAPTER_CONFIG)
# Formats that can execute code when loaded (pickle and friends): never accepted, never served.
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy"}
ALLOWED_SUFFIXES = {".safetensors", ".json"}
AB_WEIGHT_TOLERANCE = 1e-6
SYSTEM_ACTOR = "system"


class AdapterIntegrityError(ApiError):
    """An adapter file does not match its recorded sha256 (or is not a safe format)."""

    def __init__(self, message: str, *, details=None, status_code: int = 500):
        super().__init__("adapter_integrity_error", message, details=details,
                         status_code=status_code)


# --- helpers --------------------------------------------------------------------------------


def sha256_of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safetensors_header_check(data: bytes, *, name: str) -> None:
    """Refuse anything that is not a safetensors file (8-byte length + JSON header)."""
    if len(data) < 8:
        raise AdapterIntegrityError(f"{name} is not a safetensors file (too short).")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len <= 0 or 8 + header_len > len(data):
        raise AdapterIntegrityError(f"{name} is not a safetensors file (bad header length).")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except ValueError as exc:
        raise AdapterIntegrityError(f"{name} is not a safetensors file (header is not JSON).") \
            from exc
    if not isinstance(header, dict):
        raise AdapterIntegrityError(f"{name} is not a safetensors file (header is not a map).")


def manifest_file_entries(manifest: dict) -> dict[str, dict]:
    """`{file name: {"sha256", "size"?}}` from the trainer's manifest, tolerant of its shape.

    Accepts `adapter.files` (the trainer's `synapsex-adapter-manifest/1`), `files` or
    `adapter_files`, as a map name -> sha256, a map name -> {sha256, size},
    or a list of {path|name, sha256, size}; names may carry an `adapter/` prefix.
    """
    adapter_section = manifest.get("adapter")
    raw = (adapter_section.get("files") if isinstance(adapter_section, dict) else None) \
        or manifest.get("files") or manifest.get("adapter_files") or {}
    entries: dict[str, dict] = {}
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict) and (item.get("path") or item.get("name")):
                entries[Path(item.get("path") or item["name"]).name] = dict(item)
    elif isinstance(raw, dict):
        for name, value in raw.items():
            entry = {"sha256": value} if isinstance(value, str) else dict(value or {})
            entries[Path(name).name] = entry
    return entries


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


def adapter_storage_prefix(*, tenant: Tenant, number: int) -> str:
    """Seam 4: built from ids the platform issued (slug, number), never from tenant input."""
    return f"tenants/{tenant.slug}/adapters/v{number}"


def _storage_put(name: str, data: bytes) -> None:
    # Overwrite explicitly: storages rename on collision, and the path is part of the contract.
    if default_storage.exists(name):
        default_storage.delete(name)
    saved = default_storage.save(name, ContentFile(data))
    if saved != name:  # pragma: no cover - a storage that renames anyway
        default_storage.delete(saved)
        raise RuntimeError(f"storage saved {name!r} as {saved!r}")


def verify_result_dir(result_dir: Path) -> tuple[dict, dict[str, bytes]]:
    """Read and check a trainer result folder. Returns (manifest, {file name: bytes}).

    Every `.safetensors`/`.json` file in `adapter/` must be listed in the manifest and match its
    sha256 (and size when given); pickle-capable files refuse the whole result.
    """
    result_dir = Path(result_dir)
    manifest_path = result_dir / MANIFEST
    adapter_dir = result_dir / "adapter"
    if not manifest_path.is_file():
        raise AdapterIntegrityError(f"The training result has no {MANIFEST}.",
                                    details={"result_dir": str(result_dir)})
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise AdapterIntegrityError(f"{MANIFEST} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise AdapterIntegrityError(f"{MANIFEST} must be a JSON object.")
    if not adapter_dir.is_dir():
        raise AdapterIntegrityError("The training result has no adapter/ folder.")

    expected = manifest_file_entries(manifest)
    contents: dict[str, bytes] = {}
    problems: dict[str, str] = {}
    for path in sorted(adapter_dir.iterdir()):
        if not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            problems[path.name] = "pickle-capable formats are refused; only safetensors is served"
            continue
        if suffix not in ALLOWED_SUFFIXES:
            continue  # e.g. PEFT's README.md: not part of the adapter, not stored
        entry = expected.get(path.name)
        if not entry or not entry.get("sha256"):
            problems[path.name] = "not listed in manifest.json with a sha256"
            continue
        data = path.read_bytes()
        actual = sha256_of_bytes(data)
        if actual != str(entry["sha256"]).lower():
            problems[path.name] = f"sha256 mismatch: manifest {entry['sha256']}, file {actual}"
            continue
        if entry.get("size") is not None and int(entry["size"]) != len(data):
            problems[path.name] = f"size mismatch: manifest {entry['size']}, file {len(data)}"
            continue
        contents[path.name] = data
    for name in REQUIRED_ADAPTER_FILES:
        if name not in contents and name not in problems:
            problems[name] = "missing from adapter/"
    if problems:
        raise AdapterIntegrityError(
            "The trained adapter does not match its manifest; it was not stored.",
            details={"files": problems},
        )
    safetensors_header_check(contents[ADAPTER_WEIGHTS], name=ADAPTER_WEIGHTS)
    return manifest, contents


# --- creating a version from a finished job -------------------------------------------------


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
            # Locking the tenant row serialises number allocation: two jobs finishing at once
            # would otherwise both read max(number) and collide on v<N+1>.
            tenant = Tenant.objects.select_for_update().get(pk=job.tenant_id)
            last = (AdapterVersion.objects.filter(tenant=tenant)
                    .order_by("-number").values_list("number", flat=True).first())
            number = (last or 0) + 1
            prefix = adapter_storage_prefix(tenant=tenant, number=number)
            files = {}
            for name in REQUIRED_ADAPTER_FILES:
                _storage_put(f"{prefix}/{name}", contents[name])
                written.append(f"{prefix}/{name}")
                files[name] = sha256_of_bytes(contents[name])
            _storage_put(f"{prefix}/{MANIFEST}", manifest_bytes)
            written.append(f"{prefix}/{MANIFEST}")
            files[MANIFEST] = sha256_of_bytes(manifest_bytes)

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
            adapter_versions_enforce_plan_limit(tenant=tenant, keep={version.pk})
    except Exception:
        for name in written:
            try:
                default_storage.delete(name)
            except Exception:  # pragma: no cover - best effort cleanup
                logger.warning("could not remove %s after a failed version create", name)
        raise
    return version


def training_job_succeeded_receiver(sender=None, *, job, result_dir, **kwargs) -> AdapterVersion:
    """Signal adapter: the runner reads the return value to log which version was created."""
    return adapter_version_create_from_job(job=job, result_dir=Path(result_dir))


# --- A/B split ------------------------------------------------------------------------------


def ab_test_settings(tenant: Tenant) -> dict:
    ab = (tenant.settings or {}).get("lora_ab_test") or {}
    return {"enabled": bool(ab.get("enabled")), "versions": dict(ab.get("versions") or {})}


def ab_test_arms(tenant: Tenant) -> dict[str, float]:
    """The enabled split's `{"v2": 0.3, ...}`, or {} when no A/B test runs."""
    ab = ab_test_settings(tenant)
    return ab["versions"] if ab["enabled"] else {}


def parse_version_label(label: Any) -> int | None:
    """`"v3"` -> 3; anything else -> None."""
    if not isinstance(label, str):
        return None
    text = label.strip()
    # ASCII digits only ("v²" passes isdigit() but not int()), and few enough of them that
    # int() cannot refuse the string (Python's 4300-digit limit) or the DB overflow.
    digits = text[1:]
    if len(text) < 2 or text[0] not in "vV" or not (digits.isascii() and digits.isdigit()) \
            or len(digits) > 9:
        return None
    number = int(digits)
    return number if number > 0 else None


def lora_ab_test_validate(tenant: Tenant, value: dict) -> dict:
    """Settings validator for `lora_ab_test` (registered with the tenants app at start-up).

    The split names versions of this tenant that are not archived; weights are positive and sum
    to 1; an enabled test needs at least two versions. Returns the normalised value.
    """
    if not isinstance(value, dict):
        raise serializers.ValidationError("Must be an object {enabled, versions}.")
    enabled = bool(value.get("enabled"))
    versions = value.get("versions") or {}
    if not isinstance(versions, dict):
        raise serializers.ValidationError({"versions": ["Must be a map version -> weight."]})
    errors: dict[str, list[str]] = {}
    normalised: dict[str, float] = {}
    numbers: dict[str, int] = {}
    for label, weight in versions.items():
        number = parse_version_label(label)
        if number is None:
            errors.setdefault(str(label), []).append(
                "Not a version label; use the form 'v3'.")
            continue
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            errors.setdefault(str(label), []).append("Weight must be a number.")
            continue
        if not weight > 0:
            errors.setdefault(str(label), []).append(
                f"Weight must be positive (got {weight}).")
        key = f"v{number}"
        if key in normalised:
            errors.setdefault(str(label), []).append(f"{key} is named twice.")
        normalised[key] = float(weight)
        numbers[key] = number
    if numbers:
        found = {
            v.number: v for v in AdapterVersion.objects.filter(
                tenant=tenant, number__in=list(numbers.values()))
        }
        for key, number in numbers.items():
            version = found.get(number)
            if version is None:
                errors.setdefault(key, []).append(
                    f"Version {key} does not exist for this tenant.")
            elif version.is_archived:
                errors.setdefault(key, []).append(
                    f"Version {key} is archived and cannot serve traffic.")
    if enabled and len(normalised) < 2:
        errors.setdefault("versions", []).append(
            "An enabled A/B test needs at least 2 versions.")
    if normalised and not errors:
        total = sum(normalised.values())
        if abs(total - 1.0) > AB_WEIGHT_TOLERANCE:
            errors.setdefault("versions", []).append(
                f"Weights must sum to 1 (they sum to {total:g}).")
    if errors:
        raise serializers.ValidationError(errors)
    ordered = dict(sorted(normalised.items(), key=lambda kv: parse_version_label(kv[0]) or 0))
    return {"enabled": enabled, "versions": ordered}


def ab_route(conversation_id: str, weights: dict[str, float]) -> str:
    """The arm a conversation is served by: sticky, stateless, uniform.

    sha256(conversation id) -> a number uniform in [0, 1) -> the arm whose cumulative weight
    (arms in version order) first exceeds it. The same id always lands on the same arm while the
    split is unchanged; serving additionally keeps a conversation on the version that already
    answered it (see `serving_version_select`), so a re-weighted split never switches it mid-way.
    """
    if not weights:
        raise ValueError("no arms")
    digest = hashlib.sha256(conversation_id.encode("utf-8")).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    arms = sorted(weights.items(), key=lambda kv: parse_version_label(kv[0]) or 0)
    total = sum(w for _, w in arms)
    cumulative = 0.0
    for label, weight in arms:
        cumulative += weight / total
        if point < cumulative:
            return label
    return arms[-1][0]  # float rounding at the top end


def _ab_disable(*, tenant: Tenant) -> dict:
    return tenant_settings_update(
        tenant=tenant, changes={"lora_ab_test": {"enabled": False, "versions": {}}})


# --- activation, archiving, plan limit --------------------------------------------------------


def _eval_loss(version: AdapterVersion | None) -> float | None:
    if version is None:
        return None
    value = (version.eval_metrics or {}).get("eval_loss")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


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
            raise ApiError("version_archived",
                           f"{version.version} is archived (its files were deleted); "
                           "it cannot be activated.", status_code=409)
        current = AdapterVersion.objects.filter(tenant=tenant, is_active=True).first()
        if current is not None and current.pk == version.pk:
            return version
        new_loss, current_loss = _eval_loss(version), _eval_loss(current)
        rollback = current is not None and version.number < current.number
        regression = (new_loss is not None and current_loss is not None
                      and new_loss > current_loss)
        if regression and not force and not rollback:
            raise ApiError(
                "eval_regression",
                f"{version.version} has a worse held-out eval loss ({new_loss:.4f}) than the "
                f"active {current.version} ({current_loss:.4f}). Send {{\"force\": true}} to "
                "activate it anyway.",
                details={"version": version.version, "eval_loss": new_loss,
                         "active_version": current.version, "active_eval_loss": current_loss},
                status_code=409,
            )
        AdapterVersion.objects.filter(tenant=tenant, is_active=True).update(is_active=False)
        version.is_active = True
        version.activated_at = timezone.now()
        version.save(update_fields=["is_active", "activated_at"])
        details = {"previous": current.version if current else None, "forced": bool(force),
                   "rollback": rollback}
        if reason:
            details["reason"] = reason
        if regression:
            details["eval_regression"] = {"eval_loss": new_loss, "previous": current_loss}
        audit_log_record(action="adapter.activated", actor=actor, ip_address=ip_address,
                         tenant=tenant, target=version.version, details=details)
        adapter_versions_enforce_plan_limit(tenant=tenant, keep={version.pk})
    return version


def _archive(version: AdapterVersion) -> None:
    for name in list(version.files or {}):
        path = f"{version.storage_prefix}/{name}"
        try:
            if default_storage.exists(path):
                default_storage.delete(path)
        except Exception:  # pragma: no cover - storage hiccup: the row is archived anyway
            logger.warning("could not delete %s while archiving", path)
    version.status = AdapterVersion.ARCHIVED
    version.archived_at = timezone.now()
    version.save(update_fields=["status", "archived_at"])


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
            raise ApiError("version_active",
                           f"{version.version} is the active version; activate another one "
                           "before deleting it.", status_code=409)
        if version.version in ab_test_arms(tenant):
            raise ApiError("version_in_ab_test",
                           f"{version.version} serves traffic in the A/B test; remove it from "
                           "lora_ab_test first.", status_code=409)
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


def adapter_ab_test_promote(
    *, tenant: Tenant, actor: str = SYSTEM_ACTOR, ip_address: str | None = None,
    reason: str = "api",
) -> dict:
    """Activate the significant winner of the tenant's A/B test and turn the split off.

    Refused (409 `ab_test_not_running` / `ab_test_not_significant`) without a running test and
    a significant winner.
    """
    from adapters.metrics import ab_test_comparison

    arms = ab_test_arms(tenant)
    if not arms:
        raise ApiError("ab_test_not_running", "No A/B test is enabled for this tenant.",
                       status_code=409)
    comparison = ab_test_comparison(tenant=tenant)
    winner_label = comparison.get("winner")
    if not comparison.get("significant") or not winner_label:
        raise ApiError("ab_test_not_significant",
                       "The A/B test has no statistically significant winner yet.",
                       details={"comparison": comparison}, status_code=409)
    winner = AdapterVersion.objects.get(tenant=tenant, number=parse_version_label(winner_label))
    with transaction.atomic():
        Tenant.objects.select_for_update().get(pk=tenant.pk)
        adapter_version_activate(version=winner, force=True, actor=actor, ip_address=ip_address,
                                 reason=f"A/B winner promoted ({reason})")
        settings_doc = _ab_disable(tenant=tenant)
        tenant.settings = settings_doc
        audit_log_record(
            action="adapter.ab_test_promoted", actor=actor, ip_address=ip_address,
            tenant=tenant, target=winner.version,
            details={"arms": arms, "reason": reason, "p_value": comparison.get("p_value"),
                     "comparison": comparison.get("comparisons")},
        )
        adapter_versions_enforce_plan_limit(tenant=tenant, keep={winner.pk})
    winner.refresh_from_db()
    return {"promoted": winner, "comparison": comparison, "settings": settings_doc}


def adapter_ab_test_auto_promote(*, tenant_id: int) -> AdapterVersion | None:
    """Promote the A/B winner when the tenant turned `auto_promote_ab_winner` on.

    Called after each feedback row is saved (on commit). Returns the promoted version or None.
    """
    tenant = Tenant.objects.select_related("plan").get(pk=tenant_id)
    if not (tenant.settings or {}).get("auto_promote_ab_winner") or not ab_test_arms(tenant):
        return None
    try:
        result = adapter_ab_test_promote(tenant=tenant, reason="auto_promote_ab_winner")
    except ApiError:
        return None
    return result["promoted"]


def audit_ab_settings_change(*, tenant: Tenant, before: dict, after: dict) -> None:
    """Record an A/B split change (from the settings PATCH or a promotion) in the audit log."""
    audit_log_record(action="adapter.ab_test_changed", actor=SYSTEM_ACTOR, tenant=tenant,
                     target="lora_ab_test", details={"before": before, "after": after})


def stored_files_read(*, storage_prefix: str,
                      expected: dict[str, str]) -> tuple[dict[str, bytes], dict[str, str]]:
    """Read each named file under `storage_prefix` and check it against its recorded sha256.

    Returns the verified contents and, for each file that failed, why (missing or mismatch);
    serving and export both refuse a version with any problem.
    """
    out: dict[str, bytes] = {}
    problems: dict[str, str] = {}
    for name, recorded in sorted(expected.items()):
        try:
            with default_storage.open(f"{storage_prefix}/{name}", "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            problems[name] = "missing from storage"
            continue
        actual = sha256_of_bytes(data)
        if actual != recorded:
            problems[name] = f"sha256 mismatch: recorded {recorded}, stored file {actual}"
            continue
        out[name] = data
    return out, problems


def adapter_files_read_verified(version: AdapterVersion) -> dict[str, bytes]:
    """The version's files from storage, each checked against its recorded sha256."""
    if version.is_archived:
        raise ApiError("version_archived",
                       f"{version.version} is archived; its files were deleted.",
                       status_code=410)
    out, problems = stored_files_read(storage_prefix=version.storage_prefix,
                                      expected=version.files or {})
    if problems:
        raise AdapterIntegrityError(
            f"The stored files of {version.version} do not match their recorded sha256; "
            "refusing to serve them.", details={"version": version.version, "files": problems})
    return out


def adapter_export_zip(version: AdapterVersion) -> bytes:
    """A zip with the adapter as vLLM / LoRAX / PEFT load it, sha256-verified first."""
    import zipfile

    files = adapter_files_read_verified(version)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(f"{version.version}/{name}", data)
    return buffer.getvalue()
