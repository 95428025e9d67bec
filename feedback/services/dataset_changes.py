"""A tenant's control over its DataHub data: deleting datasets and records, changing consent.

Every change that takes rows out of training (delete, record delete, training consent revoked)
sends `feedback.signals.feedback_data_withdrawing` inside its transaction, before the rows go,
so that what was derived from them is dealt with too (training rewrites past jobs' snapshots
without them; adapters flags the versions trained on them as needing retraining). The answer
lists what was removed and what was flagged; the audit log records the request, not the text.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from feedback.models import Dataset, DatasetRecord
from feedback.signals import feedback_data_withdrawing, withdrawal_answers_merge
from tenants.errors import NotFound
from tenants.models import Tenant
from tenants.services import audit_log_record


def feedback_data_withdraw(*, tenant: Tenant, reason: str, feedback_ids=(), message_ids=(),
                           dataset_record_ids=()) -> dict:
    """Tell the later apps that these rows leave training; returns their merged answers.
    Call inside the transaction that removes (or revokes) the rows, before they go."""
    responses = feedback_data_withdrawing.send(
        sender=Dataset, tenant=tenant, reason=reason, feedback_ids=set(feedback_ids),
        message_ids=set(message_ids), dataset_record_ids=set(dataset_record_ids))
    answer = withdrawal_answers_merge(responses)
    answer.setdefault("snapshots_rewritten", [])
    answer.setdefault("adapter_versions_needing_retraining", [])
    return answer


def _locked(tenant: Tenant, dataset: Dataset) -> Dataset:
    locked = Dataset.objects.select_for_update().filter(pk=dataset.pk, tenant=tenant).first()
    if locked is None:  # deleted by a concurrent request
        raise NotFound("not_found", f"No dataset {dataset.pk}.")
    return locked


@transaction.atomic
def dataset_delete(*, tenant: Tenant, dataset: Dataset, actor: str = "system",
                   ip_address: str | None = None) -> dict:
    """Delete a dataset and all its records; past snapshots lose them, versions trained on them
    are flagged. Returns what was removed and flagged."""
    locked = _locked(tenant, dataset)
    record_ids = set(DatasetRecord.objects.filter(dataset=locked).values_list("id", flat=True))
    withdrawn = feedback_data_withdraw(tenant=tenant, reason="dataset_deleted",
                                       dataset_record_ids=record_ids)
    DatasetRecord.objects.filter(dataset=locked).delete()
    result = {"dataset_id": locked.pk, "deleted": True, "records_deleted": len(record_ids),
              **withdrawn}
    audit_log_record(action="dataset.deleted", actor=actor, tenant=tenant,
                     ip_address=ip_address, target=f"dataset:{locked.pk}",
                     details={k: v for k, v in result.items() if k != "deleted"})
    locked.delete()
    return result


@transaction.atomic
def dataset_records_delete(*, tenant: Tenant, dataset: Dataset, record_ids: list[int],
                           actor: str = "system", ip_address: str | None = None) -> dict:
    """Delete some records of a dataset (all must belong to it: an unknown id is a 404 and
    nothing is deleted); past snapshots lose them, versions trained on them are flagged."""
    locked = _locked(tenant, dataset)
    wanted = set(record_ids)
    found = set(DatasetRecord.objects.filter(dataset=locked, tenant=tenant, id__in=wanted)
                .values_list("id", flat=True))
    missing = sorted(wanted - found)
    if missing:
        raise NotFound("not_found", f"Dataset {locked.pk} has no record {missing[0]}.",
                       details={"missing_record_ids": missing[:100]})
    withdrawn = feedback_data_withdraw(tenant=tenant, reason="dataset_record_deleted",
                                       dataset_record_ids=found)
    DatasetRecord.objects.filter(id__in=found).delete()
    locked.record_count = DatasetRecord.objects.filter(dataset=locked).count()
    locked.updated_at = timezone.now()
    locked.save(update_fields=["record_count", "updated_at"])
    result = {"dataset_id": locked.pk, "records_deleted": len(found),
              "record_ids": sorted(found), "record_count": locked.record_count, **withdrawn}
    audit_log_record(action="dataset.records_deleted", actor=actor, tenant=tenant,
                     ip_address=ip_address, target=f"dataset:{locked.pk}",
                     details={"records_deleted": len(found), **withdrawn})
    return result


@transaction.atomic
def dataset_data_use_change(*, tenant: Tenant, dataset: Dataset, allow_rag: bool | None = None,
                            allow_private_training: bool | None = None, name: str | None = None,
                            actor: str = "system", ip_address: str | None = None
                            ) -> tuple[Dataset, dict]:
    """Change a dataset's consent (`data_use`) or name. Revoking `allow_private_training` takes
    its records out of every later job (the compiler reads only consenting datasets), out of past
    jobs' snapshots, and flags the versions trained on them; granting it again makes the records
    trainable from the next job on. Returns the dataset and what the revocation did."""
    locked = _locked(tenant, dataset)
    changed = {}
    withdrawn: dict = {}
    if name is not None and name != locked.name:
        if Dataset.objects.filter(tenant=tenant, name=name).exclude(pk=locked.pk).exists():
            from tenants.errors import Conflict

            raise Conflict("dataset_name_taken", f"A dataset named {name!r} already exists.")
        changed["name"] = name
        locked.name = name
    if allow_rag is not None and allow_rag != locked.allow_rag:
        changed["allow_rag"] = allow_rag
        locked.allow_rag = allow_rag
    if allow_private_training is not None and \
            allow_private_training != locked.allow_private_training:
        changed["allow_private_training"] = allow_private_training
        if not allow_private_training:
            record_ids = set(DatasetRecord.objects.filter(dataset=locked)
                             .values_list("id", flat=True))
            withdrawn = feedback_data_withdraw(tenant=tenant, reason="consent_revoked",
                                               dataset_record_ids=record_ids)
        locked.allow_private_training = allow_private_training
    if changed:
        locked.updated_at = timezone.now()
        locked.save(update_fields=["name", "allow_rag", "allow_private_training", "updated_at"])
        audit_log_record(action="dataset.data_use_changed", actor=actor, tenant=tenant,
                         ip_address=ip_address, target=f"dataset:{locked.pk}",
                         details={"changed": changed, **withdrawn})
    return locked, withdrawn
