"""Writes for a tenant's training settings (automatic training, compute backend, base model):
the one service that validates, stores and audits them. The API's PATCH and the dashboard reach
it through `tenants.services.tenant_settings_change` (the section registered in
TrainingConfig.ready); read them with `training.selectors.training_settings_get`."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction

from tenants.models import Tenant
from tenants.services import audit_log_record
from tenants.settings_sections import SettingInvalid, settings_section_validate
from training.models import TrainingSettings

TRAINING_SETTING_KEYS = ("auto_training", "compute_backend", "base_model")
AUTO_TRAINING_METHODS = ("sft", "dpo")
COMPUTE_BACKENDS = ("local", "slurm")
MIN_NEW_FEEDBACK_RANGE = (1, 1_000_000)


def base_model_choices() -> list[str]:
    """The base model names a tenant may pick (the operator's BASE_MODELS)."""
    return sorted(getattr(settings, "BASE_MODELS", {}) or {})


def base_model_setting_validate(tenant: Tenant, value: Any) -> str | None:
    """Settings validator for `base_model`: a configured name, or null/"" for the platform's
    default. Registered with the tenants app, so the API's refusal names the choices."""
    if value in (None, ""):
        return None
    choices = base_model_choices()
    if not isinstance(value, str) or value not in choices:
        raise SettingInvalid(
            [f"Unknown base model {value!r}. Choose one of: {', '.join(choices)}."])
    return value


def _auto_training_check(tenant: Tenant, value: Any) -> Any:
    """Today's serializer rules for the `auto_training` section, for callers other than it."""
    if not isinstance(value, dict):
        raise SettingInvalid(["Invalid data. Expected a dictionary, but got str."
                              if isinstance(value, str) else "Invalid data."])
    problems = []
    unknown = sorted(set(value) - {"enabled", "method", "min_new_feedback"})
    problems += [f"{key}: Unknown field." for key in unknown]
    if "enabled" in value and not isinstance(value["enabled"], bool):
        problems.append("enabled: Must be a valid boolean.")
    if "method" in value and value["method"] not in AUTO_TRAINING_METHODS:
        problems.append(f"method: \"{value['method']}\" is not a valid choice.")
    if "min_new_feedback" in value:
        low, high = MIN_NEW_FEEDBACK_RANGE
        number = value["min_new_feedback"]
        if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
            problems.append(f"min_new_feedback: Must be an integer from {low} to {high}.")
    if problems:
        raise SettingInvalid(problems)
    return value


def _compute_backend_check(tenant: Tenant, value: Any) -> Any:
    if value not in (None, "", *COMPUTE_BACKENDS):
        raise SettingInvalid(f"\"{value}\" is not a valid choice.")
    return value


TRAINING_SETTING_CHECKS = {"auto_training": _auto_training_check,
                           "compute_backend": _compute_backend_check,
                           "base_model": base_model_setting_validate}


def training_settings_update(
    *, tenant: Tenant, changes: dict[str, Any], actor: str = "system",
    ip_address: str | None = None, audit: bool = True,
) -> TrainingSettings:
    """Validate and store a change of the tenant's training settings; returns the row.

    `changes` holds some of `auto_training` (merged: the keys given replace those stored),
    `compute_backend` ("local", "slurm", or null for the platform's) and `base_model` (a name
    from BASE_MODELS, or null for the default). A refusal is InvalidInput `validation_error`
    with per-key reasons and stores nothing. With `audit` (the default) the change is recorded
    as `settings.updated`; `tenant_settings_change` passes False and records the whole change.
    """
    validated = settings_section_validate(tenant=tenant, changes=changes,
                                          checks=TRAINING_SETTING_CHECKS)
    with transaction.atomic():
        row, _ = TrainingSettings.objects.select_for_update().get_or_create(tenant=tenant)
        auto = validated.get("auto_training") or {}
        if "enabled" in auto:
            row.auto_training_enabled = bool(auto["enabled"])
        if "method" in auto:
            row.auto_training_method = auto["method"]
        if "min_new_feedback" in auto:
            row.auto_training_min_new_feedback = int(auto["min_new_feedback"])
        if "compute_backend" in validated:
            row.compute_backend = validated["compute_backend"] or ""
        if "base_model" in validated:
            row.base_model = validated["base_model"] or ""
        row.save()
        if audit:
            audit_log_record(action="settings.updated", actor=actor, ip_address=ip_address,
                             tenant=tenant, details={"changed": sorted(validated),
                                                     "section": "training"})
    return row
