"""Erasure of one end user's data (a data subject's request), and the withdrawal of rows from
training that dataset deletes and revoked consent share with it.

`training_data_erase_user` deletes, for one `user_id`:
* feedback (by `Feedback.user_id` or `metadata.user_id`) and feedback on the user's messages;
* the user's messages (`Message.user_id`), and every conversation left without messages or whose
  `metadata.user_id` is the user (the whole conversation log goes);
* dataset records uploaded with that `user_id`;
* the examples made from all of those in past jobs' data snapshots (`training.snapshot_scrub`
  rewrites the files in storage and the local bundle copies);
and marks every adapter version whose data manifest used any of those rows with
`needs_retraining=True`. The answer lists what was removed and which versions need retraining.

What learned from the rows is marked by whoever listens to `training_user_data_erasing` (the
adapters app): training does not import adapters. `training_data_withdraw` is the step shared
with the feedback app's withdrawals (`feedback.signals.feedback_data_withdrawing`, connected in
TrainingConfig.ready()).
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q

from feedback.models import Conversation, Dataset, DatasetRecord, Feedback, Message
from tenants.services import audit_log_record
from training.signals import training_user_data_erasing
from training.snapshot_scrub import training_snapshots_scrub


def training_data_withdraw(*, tenant, feedback_ids: set, message_ids: set,
                           dataset_record_ids: set, reason: str = "erasure") -> dict:
    """Take these rows out of past snapshots and mark the versions trained on them. Runs inside
    the caller's transaction, before the rows are deleted (their texts are read here)."""
    snapshots = training_snapshots_scrub(tenant=tenant, feedback_ids=feedback_ids,
                                         message_ids=message_ids,
                                         dataset_record_ids=dataset_record_ids, reason=reason)
    responses = training_user_data_erasing.send(sender=Feedback, tenant=tenant,
                                                feedback_ids=feedback_ids,
                                                message_ids=message_ids,
                                                dataset_record_ids=dataset_record_ids)
    marked = []
    for _, labels in responses:
        marked += [label for label in (labels or []) if label not in marked]
    return {"snapshots_rewritten": snapshots, "adapter_versions_needing_retraining": marked}


def feedback_data_withdrawing_received(sender, tenant, reason, feedback_ids=frozenset(),
                                       message_ids=frozenset(), dataset_record_ids=frozenset(),
                                       **kwargs) -> dict:
    """Receiver of `feedback.signals.feedback_data_withdrawing` (dataset delete, revoked
    consent): the same withdrawal as an erasure's."""
    return training_data_withdraw(tenant=tenant, feedback_ids=set(feedback_ids),
                                  message_ids=set(message_ids),
                                  dataset_record_ids=set(dataset_record_ids), reason=reason)


@transaction.atomic
def training_data_erase_user(*, tenant, user_id: str, actor: str = "system",
                             ip_address: str | None = None) -> dict:
    conversations = set(Conversation.objects.filter(tenant=tenant, metadata__user_id=user_id)
                        .values_list("id", flat=True))
    message_ids = set(Message.objects.filter(tenant=tenant).filter(
        Q(user_id=user_id) | Q(conversation_id__in=conversations)).values_list("id", flat=True))
    feedback_ids = set(Feedback.objects.filter(tenant=tenant).filter(
        Q(user_id=user_id) | Q(metadata__user_id=user_id) | Q(message_id__in=message_ids))
        .values_list("id", flat=True))
    records = DatasetRecord.objects.filter(tenant=tenant, user_id=user_id)
    record_ids = set(records.values_list("id", flat=True))
    dataset_ids = set(records.values_list("dataset_id", flat=True))
    # Conversations of the erased messages: deleted below when nothing else is left in them.
    touched = set(Message.objects.filter(id__in=message_ids)
                  .values_list("conversation_id", flat=True)) | conversations

    withdrawn = training_data_withdraw(tenant=tenant, feedback_ids=feedback_ids,
                                       message_ids=message_ids, dataset_record_ids=record_ids)

    deleted_feedback = Feedback.objects.filter(id__in=feedback_ids).delete()[0]
    deleted_messages = Message.objects.filter(id__in=message_ids).delete()[0]
    deleted_records = DatasetRecord.objects.filter(id__in=record_ids).delete()[0]
    emptied = (Conversation.objects.filter(tenant=tenant, id__in=touched)
               .filter(Q(id__in=conversations) | Q(messages__isnull=True)))
    deleted_conversations = Conversation.objects.filter(
        id__in=set(emptied.values_list("id", flat=True))).delete()[0]
    # Locked as an upload locks them (an upload adds what it stored to the count): the count
    # then runs after any upload in flight has committed.
    for dataset in Dataset.objects.select_for_update().filter(tenant=tenant, id__in=dataset_ids):
        dataset.record_count = DatasetRecord.objects.filter(dataset=dataset).count()
        dataset.save(update_fields=["record_count"])
    if deleted_feedback:
        from feedback.services import feedback_counters_rebuild

        feedback_counters_rebuild(tenant=tenant)  # the stats must not count erased rows
    result = {
        "user_id": user_id,
        "feedback_deleted": deleted_feedback,
        "messages_deleted": deleted_messages,
        "conversations_deleted": deleted_conversations,
        "dataset_records_deleted": deleted_records,
        **withdrawn,
    }
    # The audit entry names the request, not the erased content.
    audit_log_record(action="training.user_data_erased", actor=actor, tenant=tenant,
                     ip_address=ip_address, target=f"user:{user_id}",
                     details={k: v for k, v in result.items() if k != "user_id"})
    return result
