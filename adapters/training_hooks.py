"""What the training app asks of adapters, answered here so that training never imports adapters.

Connected as receivers of `training.signals` in adapters/receivers.py: the adapter version a new
job continues from, and the versions an end user's erasure marks for retraining.
"""

from __future__ import annotations

from adapters.models import AdapterVersion
from tenants.errors import Conflict, InvalidInput


def adapter_version_for_training(*, tenant, label: str, base_label: str) -> AdapterVersion:
    """The stored version a job continues from ("v3" or "3"), on the job's own base model.

    Refused: a version the tenant does not have (400), an archived one whose files are gone
    (409), one trained on another base model (400).
    """
    text = str(label).strip().lower()
    number = text[1:] if text.startswith("v") else text
    version = None
    if number.isdigit():
        version = AdapterVersion.objects.filter(tenant=tenant, number=int(number)).first()
    if version is None:
        raise InvalidInput("unknown_version", f"Adapter version {label!r} does not exist.",
                           details={"continue_from": ["No such version for this tenant."]})
    if getattr(version, "status", "ready") != "ready":
        raise Conflict("version_archived",
                       f"Adapter version {version.version} is archived; its files are gone.",
                       details={"continue_from": ["Choose a stored (ready) version."]})
    if version.base_model and version.base_model != base_label:
        raise InvalidInput("base_model_mismatch",
                           f"{version.version} was trained on another base model.",
                           details={"continue_from": [
                               f"{version.version} uses {version.base_model}."]})
    return version


def adapter_versions_mark_erased_data(*, tenant, feedback_ids: set, message_ids: set,
                                      dataset_record_ids: set = frozenset()) -> list[str]:
    """Mark every version whose data manifest used an erased (or withdrawn) feedback, message or
    dataset record row with `needs_retraining`; returns the labels of the versions concerned
    (marked now or before). Runs inside the erasure's transaction; the rows are locked while
    they are marked."""
    marked = []
    for version in AdapterVersion.objects.filter(tenant=tenant).select_for_update():
        manifest = version.data_manifest or {}
        used_feedback = set(manifest.get("feedback_ids") or [])
        used_messages = set(manifest.get("message_ids") or [])
        used_records = set(manifest.get("dataset_record_ids") or [])
        if used_feedback & feedback_ids or used_messages & message_ids \
                or used_records & set(dataset_record_ids):
            if not version.needs_retraining:
                version.needs_retraining = True
                version.save(update_fields=["needs_retraining"])
            marked.append(version.version)
    return marked
