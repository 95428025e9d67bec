"""Training parameters: the request a job is made from, its hyperparameters, its base model and
the adapter version it continues from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from tenants.errors import InvalidInput
from tenants.models import Tenant
from training.services.recipes import recipe_defaults
from training.signals import training_parent_version_resolve


@dataclass
class JobRequest:
    """A validated training request (the API serializer's output, or auto-training's)."""

    method: str
    params: dict[str, Any]
    preset: str = ""
    base_model: str | None = None
    continue_from: str | None = None
    dry_run: bool = False
    triggered_by: str = "api"


def training_params_resolve(*, method: str, given: dict[str, Any], preset: str = "",
                            recipe: str | None = None) -> dict:
    """Final hyperparameters: method defaults < the base's recipe (training.services.recipes) <
    preset < what the request states explicitly."""
    from training.parameters import training_params_defaults
    from training.trainer.config import PRESETS

    params: dict[str, Any] = training_params_defaults(method=method)
    params.update(recipe_defaults(recipe=recipe, method=method))
    if preset:
        params.update(PRESETS[preset])
    params.update({k: v for k, v in given.items() if v is not None})
    return params


def base_model_spec(name: str | None) -> dict[str, Any]:
    """Which base model a job trains on: a name from settings.BASE_MODELS (name -> local folder),
    or none for settings.DEFAULT_BASE_MODEL. Only models the operator configured can be named:
    a tenant never passes a path to the worker. The default follows BASE_MODEL_PATH, or
    BASE_MODEL_HF_ID (+ BASE_MODEL_REVISION) when that is set; its old label (the hub id or the
    folder's name) and "default" still name it."""
    configured: dict[str, str] = dict(getattr(settings, "BASE_MODELS", {}) or {})
    default_name = getattr(settings, "DEFAULT_BASE_MODEL", None) or "default"
    default = ({"hf_id": settings.BASE_MODEL_HF_ID, "revision": settings.BASE_MODEL_REVISION}
               if settings.BASE_MODEL_HF_ID else {"path": str(settings.BASE_MODEL_PATH)})
    default_aliases = {"default", default_name,
                       settings.BASE_MODEL_HF_ID or Path(settings.BASE_MODEL_PATH).name}
    if not name or name in default_aliases:
        return {"name": default_name, **default}
    if name not in configured:
        choices = sorted({*configured, default_name})
        raise InvalidInput(
            "unknown_base_model", f"Base model {name!r} is not offered on this platform.",
            details={"base_model": [f"Choose one of: {', '.join(choices)}."]},
        )
    return {"name": name, "path": str(configured[name])}


def base_model_label(spec: dict) -> str:
    return spec.get("hf_id") or spec.get("path") or spec["name"]


def parent_version_resolve(*, tenant: Tenant, label: str | None, base_label: str):
    """The adapter version a job continues from, or None when it starts fresh.

    Adapters answers (training.signals.training_parent_version_resolve) and refuses with a
    domain error; a label nobody answers for is an unknown version.
    """
    if not label:
        return None
    for _, version in training_parent_version_resolve.send(
            sender=Tenant, tenant=tenant, label=label, base_label=base_label):
        if version is not None:
            return version
    raise InvalidInput("unknown_version", f"Adapter version {label!r} does not exist.",
                       details={"continue_from": ["No such version for this tenant."]})
