"""Erasure of one end user's data from all future training (a data subject's request).

`training_data_erase_user` deletes the user's feedback (by `Feedback.user_id` or
`metadata.user_id`) and messages (`Message.user_id`), so no later snapshot can contain them, and
marks every adapter version whose data manifest used any of those rows with
`needs_retraining=True` so an operator can retrain without them. Snapshots already written stay
as the record of what those versions learned; they are never used for new jobs.

What learned from the rows is marked by whoever listens to `training_user_data_erasing` (the
adapters app): training does not import adapters.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q

from feedback.models import Feedback, Message
from tenants.services import audit_log_record
from training.signals import training_user_data_erasing


@transaction.atomic
def training_data_erase_user(*, tenant, user_id: str, actor: str = "system",
                             ip_address: str | None = None) -> dict:
    feedback = Feedback.objects.filter(tenant=tenant).filter(
        Q(user_id=user_id) | Q(metadata__user_id=user_id))
    messages = Message.objects.filter(tenant=tenant, user_id=user_id)
    feedback_ids = set(feedback.values_list("id", flat=True))
    message_ids = set(messages.values_list("id", flat=True))
    # Feedback on the user's messages is theirs too: it would quote what they said.
    feedback_ids |= set(Feedback.objects.filter(tenant=tenant, message_id__in=message_ids)
                        .values_list("id", flat=True))

    responses = training_user_data_erasing.send(sender=Feedback, tenant=tenant,
                                                feedback_ids=feedback_ids,
                                                message_ids=message_ids)
    marked = [label for _, labels in responses for label in (labels or [])]

    deleted_feedback = Feedback.objects.filter(id__in=feedback_ids).delete()[0]
    deleted_messages = Message.objects.filter(id__in=message_ids).delete()[0]
    result = {
        "user_id": user_id,
        "feedback_deleted": deleted_feedback,
        "messages_deleted": deleted_messages,
        "adapter_versions_needing_retraining": marked,
    }
    # The audit entry names the request, not the erased content.
    audit_log_record(action="training.user_data_erased", actor=actor, tenant=tenant,
                     ip_address=ip_address, target=f"user:{user_id}",
                     details={k: v for k, v in result.items() if k != "user_id"})
    return result
