"""Reads for feedback: the stats document, what training may use, datasets and conversations.

The training compiler reads through `feedback_usable_for_training`, `feedback_prompt_turns` and
`dataset_records_for_training` only; they encode every exclusion (reports, unlinked feedback, PII
holds, superseded answers, datasets without training consent), so the compiler need not.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from feedback.models import (
    Conversation,
    Dataset,
    DatasetRecord,
    Feedback,
    FeedbackCounterShard,
    FeedbackSettings,
    Message,
)
from feedback.pii import PII_KINDS
from feedback.services import counters_sum, feedback_counters_rebuild, feedback_counters_stale
from tenants.errors import NotFound
from tenants.models import Tenant

# The seed's readiness rule: corrections >= 50 or (thumbs_up + thumbs_down) >= 100.
SFT_MIN_CORRECTIONS = 50
DPO_MIN_THUMBS = 100
FEEDBACK_TYPES = [t for t, _ in Feedback.TYPE_CHOICES]
TRAINABLE_TYPES = [Feedback.THUMBS_UP, Feedback.THUMBS_DOWN, Feedback.CORRECTION,
                   Feedback.RATING]
EXCLUSION_REASONS = [
    Feedback.EXCLUDED_REPORT, Feedback.EXCLUDED_UNLINKED, Feedback.EXCLUDED_NOT_ASSISTANT,
    Feedback.EXCLUDED_PII_HOLD, Feedback.EXCLUDED_MESSAGE_REPORTED,
    Feedback.EXCLUDED_SUPERSEDED,
]


def feedback_stats(*, tenant: Tenant) -> dict:
    """The stats document of `GET /v1/tenants/{t}/feedback/stats` (also used by the dashboard).

    One indexed read of the tenant's few counter shards (the maintained
    `FeedbackCounterShard` rows, summed), whatever the number of feedback rows. Counts per
    type count each user's latest feedback per message (history excluded);
    `received` counts every row ever stored. `readiness.methods` (training's answer) says per
    method (sft, dpo, kto) how many examples training can really compile and whether a job with
    the default threshold would start. `ready_for_training` follows the seed's rule on
    those counts; `usable_for_training` is what training can actually use after exclusions.
    Longer than most functions because it is one literal: the document's shape reads in one place.
    """
    shards = list(FeedbackCounterShard.objects.filter(tenant=tenant)
                  .annotate(stale=feedback_counters_stale(tenant.pk)))
    if not shards or shards[0].stale is not None:
        # Rows were written around the services (a bulk load): recount once, then it's fresh.
        feedback_counters_rebuild(tenant=tenant)
        shards = list(FeedbackCounterShard.objects.filter(tenant=tenant))
    c = counters_sum(shards)
    updated_at = max(shard.updated_at for shard in shards)
    # What each training method can really use (its compiled examples): training answers.
    from feedback.signals import feedback_readiness_requested

    methods: dict = {}
    for _, answer in feedback_readiness_requested.send(sender=Tenant, tenant=tenant,
                                                       stamp=updated_at.isoformat(),
                                                       rows=c.get("received", 0)):
        methods.update(answer or {})
    by_type = {t: c.get(f"type.{t}", 0) for t in FEEDBACK_TYPES}
    thumbs = by_type[Feedback.THUMBS_UP] + by_type[Feedback.THUMBS_DOWN]
    corrections = by_type[Feedback.CORRECTION]
    usable_by_type = {t: c.get(f"usable.{t}", 0) for t in TRAINABLE_TYPES}
    usable_thumbs = usable_by_type[Feedback.THUMBS_UP] + usable_by_type[Feedback.THUMBS_DOWN]
    sft_ready = corrections >= SFT_MIN_CORRECTIONS
    dpo_ready = thumbs >= DPO_MIN_THUMBS
    pii_feedback = {k: c.get(f"pii_feedback.{k}", 0) for k in PII_KINDS}
    pii_messages = {k: c.get(f"pii_messages.{k}", 0) for k in PII_KINDS}
    rating_count = c.get("rating_count", 0)
    return {
        "total": sum(by_type.values()),
        "received": c.get("received", 0),
        "by_type": by_type,
        "thumbs_up": by_type[Feedback.THUMBS_UP],
        "thumbs_down": by_type[Feedback.THUMBS_DOWN],
        "corrections": corrections,
        "ratings": by_type[Feedback.RATING],
        "reports": by_type[Feedback.REPORT],
        "average_rating": round(c.get("rating_sum", 0) / rating_count, 2) if rating_count
        else None,
        "ready_for_training": sft_ready or dpo_ready,
        "readiness": {
            "sft": {"ready": sft_ready, "corrections": corrections,
                    "required": SFT_MIN_CORRECTIONS,
                    "corrections_needed": max(0, SFT_MIN_CORRECTIONS - corrections),
                    "usable_corrections": usable_by_type[Feedback.CORRECTION]},
            "dpo": {"ready": dpo_ready, "thumbs": thumbs, "required": DPO_MIN_THUMBS,
                    "thumbs_needed": max(0, DPO_MIN_THUMBS - thumbs),
                    "usable_thumbs": usable_thumbs},
            "methods": methods,
        },
        "missing": {
            "sft": {"corrections_needed": max(0, SFT_MIN_CORRECTIONS - corrections)},
            "dpo": {"thumbs_needed": max(0, DPO_MIN_THUMBS - thumbs)},
        },
        "usable_for_training": c.get("usable", 0),
        "usable_by_type": usable_by_type,
        "excluded": {reason: c.get(f"excluded.{reason}", 0) for reason in EXCLUSION_REASONS},
        "unlinked": c.get("unlinked", 0),
        "pii_holds": c.get("pii_hold", 0),
        "pii_redactions": {
            "feedback": pii_feedback,
            "messages": pii_messages,
            "total": sum(pii_feedback.values()) + sum(pii_messages.values()),
        },
        "updated_at": updated_at.isoformat(),
    }


def feedback_usable_for_training(*, tenant: Tenant) -> QuerySet[Feedback]:
    """Feedback rows the compiler may turn into examples, oldest first.

    Included: each user's latest thumbs_up / thumbs_down / correction / rating on a logged
    assistant message. Excluded: reports (and all feedback on a reported message), feedback on
    messages never logged (no prompt known), corrections that were mostly PII (held), and
    anything superseded by the same user's newer feedback. `correction` is PII-redacted.
    Use `feedback_prompt_turns(message=row.message)` for the prompt an example answers.
    Corrections under review: a rejected one never trains; with the tenant's
    `review_corrections` on, only approved ones do.
    """
    rows = (Feedback.objects
            .filter(tenant=tenant, is_latest=True, excluded_reason="",
                    type__in=TRAINABLE_TYPES, message__isnull=False, message__role="assistant")
            .exclude(type=Feedback.CORRECTION, review_status=Feedback.REVIEW_REJECTED))
    if feedback_settings_get(tenant=tenant).review_corrections:
        rows = rows.exclude(Q(type=Feedback.CORRECTION)
                            & ~Q(review_status=Feedback.REVIEW_APPROVED))
    return (rows.select_related("message", "conversation", "message__served_by_version")
            .order_by("created_at", "id"))


def feedback_settings_get(*, tenant: Tenant) -> FeedbackSettings:
    """The tenant's feedback settings; the defaults (unsaved) when it never changed them."""
    return (FeedbackSettings.objects.filter(tenant=tenant).first()
            or FeedbackSettings(tenant=tenant))


def feedback_settings_section(tenant: Tenant) -> dict:
    """The feedback keys of the tenant settings document (registered with tenants)."""
    row = feedback_settings_get(tenant=tenant)
    return {"review_corrections": row.review_corrections,
            "max_examples_per_user": row.max_examples_per_user}


def correction_review_queue(*, tenant: Tenant, status: str = "pending") -> QuerySet[Feedback]:
    """Corrections waiting for review (`pending`: each user's latest, not yet reviewed), or the
    `approved` / `rejected` ones, oldest first, with the message they correct."""
    rows = Feedback.objects.filter(tenant=tenant, type=Feedback.CORRECTION)
    if status == "pending":
        rows = rows.filter(is_latest=True, review_status="")
    else:
        rows = rows.filter(review_status=status)
    return rows.select_related("message").order_by("created_at", "id")


def feedback_prompt_turns(*, message: Message) -> list[dict]:
    """The turns before `message` in its conversation (its prompt), as [{role, content}]."""
    return [{"role": m.role, "content": m.content}
            for m in Message.objects.filter(conversation_id=message.conversation_id,
                                            position__lt=message.position)
            .order_by("position")]


def feedback_list(*, tenant: Tenant, type: str | None = None,
                  conversation_id: str | None = None, message_id: str | None = None,
                  include_history: bool = False) -> QuerySet[Feedback]:
    rows = Feedback.objects.filter(tenant=tenant)
    if not include_history:
        rows = rows.filter(is_latest=True)
    if type:
        rows = rows.filter(type=type)
    if conversation_id:
        rows = rows.filter(conversation_external_id=conversation_id)
    if message_id:
        rows = rows.filter(message_external_id=message_id)
    return rows.order_by("-created_at", "-id")


def conversation_get(*, tenant: Tenant, conversation_id: str) -> Conversation:
    conversation = Conversation.objects.filter(tenant=tenant, external_id=conversation_id).first()
    if conversation is None:
        raise NotFound("not_found", f"No conversation {conversation_id!r}.")
    return conversation


def conversation_list(*, tenant: Tenant) -> QuerySet[Conversation]:
    return Conversation.objects.filter(tenant=tenant).order_by("-updated_at", "-id")


def dataset_list(*, tenant: Tenant) -> QuerySet[Dataset]:
    return Dataset.objects.filter(tenant=tenant).order_by("-created_at", "-id")


def dataset_get(*, tenant: Tenant, dataset_id: int) -> Dataset:
    dataset = Dataset.objects.filter(tenant=tenant, pk=dataset_id).first()
    if dataset is None:
        raise NotFound("not_found", f"No dataset {dataset_id}.")
    return dataset


def dataset_records(*, dataset: Dataset):
    """A dataset's stored records in upload order, read in chunks (exports stream them)."""
    return DatasetRecord.objects.filter(dataset=dataset).order_by("id").iterator(chunk_size=500)


def dataset_records_for_training(*, tenant: Tenant, type: str | None = None
                                 ) -> QuerySet[DatasetRecord]:
    """The only way training reads DataHub records: validated, PII-redacted, de-duplicated
    records of datasets that allow private training. `type`: "conversations" (SFT records
    `{"messages": [...]}`) or "preferences" (DPO records `{"prompt", "chosen", "rejected"}`)."""
    records = DatasetRecord.objects.filter(tenant=tenant, dataset__tenant=tenant,
                                           dataset__allow_private_training=True,
                                           dataset__evaluation_only=False)
    if type:
        records = records.filter(dataset__type=type)
    return records.order_by("dataset_id", "id")


def dataset_records_for_evaluation(*, tenant: Tenant) -> QuerySet[DatasetRecord]:
    """Records of the tenant's evaluation-only datasets (`data_use.evaluation_only`): scored with
    the golden set of every new version, never trained on."""
    return (DatasetRecord.objects.filter(tenant=tenant, dataset__tenant=tenant,
                                         dataset__evaluation_only=True)
            .select_related("dataset").order_by("dataset_id", "id"))


def feedback_daily_counts(*, tenant: Tenant, since) -> list[dict]:
    """Latest feedback per day and type from the date `since` on: rows of day, type and n."""
    from django.db.models import Count
    from django.db.models.functions import TruncDate

    return list(
        Feedback.objects.filter(tenant=tenant, is_latest=True, created_at__date__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values("day", "type")
        .annotate(n=Count("id"))
    )
