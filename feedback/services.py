"""Writes for feedback: logging conversations, submitting feedback, the DataHub.

Three rules hold for every write here:
1. Text that can reach training (message content, corrections, dataset records) is PII-redacted
   before it is stored (`feedback.pii`); only counts of what was redacted are kept.
2. Every feedback write takes the tenant's `FeedbackCounters` row lock first and applies its
   counter delta in the same transaction, so the stats endpoint reads one row and is exact.
3. A feedback row's `excluded_reason` says why it never reaches training ("" = usable); it is
   recomputed whenever something it depends on changes (linking, a report, a newer answer).
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import BooleanField, Count, ExpressionWrapper, Max, Q, Sum
from django.utils import timezone

from feedback.models import (
    Conversation,
    Dataset,
    DatasetRecord,
    Feedback,
    FeedbackCounters,
    Message,
)
from feedback.pii import pii_counts_add, pii_is_hold, pii_redact, pii_redact_value
from feedback.validation import MAX_CONTENT_CHARS, VALIDATORS, record_content_hash
from tenants.api.errors import ApiError
from tenants.models import Tenant

# Feedback of the same family from the same user on the same message replaces the earlier one
# (a changed vote, an edited correction, a new rating); families are independent, so the usual
# "thumbs down, then type the fix" flow keeps both signals.
FEEDBACK_FAMILIES = {
    Feedback.THUMBS_UP: "vote",
    Feedback.THUMBS_DOWN: "vote",
    Feedback.CORRECTION: "correction",
    Feedback.RATING: "rating",
    Feedback.REPORT: "report",
}
UPLOAD_BATCH_SIZE = 500
MAX_LISTED_PROBLEMS = 1000


def new_public_id(prefix: str) -> str:
    """`conv_<hex>` / `msg_<hex>` ids for conversations and messages the client did not name."""
    return f"{prefix}_{secrets.token_hex(12)}"


# --- counters -----------------------------------------------------------------------------


def feedback_contribution(row: Feedback) -> Counter:
    """What one feedback row adds to its tenant's counters. The maintained counters are always
    the sum of this over all rows (see `feedback_counters_rebuild`)."""
    counts: Counter = Counter(received=1)
    for kind, n in (row.pii_redactions or {}).items():
        counts[f"pii_feedback.{kind}"] += n
    if not row.is_latest:
        counts[f"excluded.{Feedback.EXCLUDED_SUPERSEDED}"] += 1
        return counts
    counts["latest"] += 1
    counts[f"type.{row.type}"] += 1
    if row.message_id is None:
        counts["unlinked"] += 1
    if row.type == Feedback.RATING and row.rating:
        counts["rating_sum"] += row.rating
        counts["rating_count"] += 1
    if row.pii_hold:
        counts["pii_hold"] += 1
    if row.excluded_reason:
        counts[f"excluded.{row.excluded_reason}"] += 1
    else:
        counts["usable"] += 1
        counts[f"usable.{row.type}"] += 1
    return counts


def _counters_lock(tenant: Tenant) -> FeedbackCounters:
    """The tenant's counters row, locked until the end of the transaction (serialises writers).

    If feedback rows were written around these services (a bulk load, a data migration), the
    counters are recounted first, so a delta is never applied to stale numbers.
    """
    FeedbackCounters.objects.get_or_create(tenant=tenant)
    counters = FeedbackCounters.objects.select_for_update().get(tenant=tenant)
    if feedback_counters_stale(counters):
        _counters_recount(counters)
    return counters


def feedback_counters_stale(counters: FeedbackCounters) -> bool:
    """True when a feedback row newer than the last one counted exists (one index probe)."""
    return Feedback.objects.filter(tenant_id=counters.tenant_id,
                                   pk__gt=counters.last_feedback_id).exists()


def _counters_apply(counters: FeedbackCounters, delta: Counter,
                    newest_feedback_id: int | None = None) -> None:
    if newest_feedback_id is not None:
        counters.last_feedback_id = max(counters.last_feedback_id, newest_feedback_id)
    elif not any(delta.values()):
        return
    counts = Counter(counters.counts or {})
    counts.update(delta)
    counters.counts = {key: n for key, n in sorted(counts.items()) if n}
    counters.updated_at = timezone.now()
    counters.save(update_fields=["counts", "last_feedback_id", "updated_at"])


@transaction.atomic
def feedback_counters_rebuild(*, tenant: Tenant) -> dict:
    """Recount the tenant's counters from the rows (repair tool; tests compare it with the
    maintained numbers). Needed after deleting feedback or messages outside these services."""
    counters = _counters_lock(tenant)
    _counters_recount(counters)
    return counters.counts


def _counters_recount(counters: FeedbackCounters) -> None:
    """Grouped aggregate queries (not a Python pass over every row), so a million rows recount
    in about a second on PostgreSQL."""
    rows = Feedback.objects.filter(tenant_id=counters.tenant_id)
    total: Counter = Counter()
    newest = rows.aggregate(newest=Max("id"))["newest"] or 0
    groups = (rows.annotate(unlinked=ExpressionWrapper(Q(message__isnull=True),
                                                       output_field=BooleanField()))
              .values("is_latest", "type", "excluded_reason", "pii_hold", "unlinked")
              .annotate(n=Count("id"), rating_sum=Sum("rating"), rating_n=Count("rating"))
              .order_by())
    for group in groups:
        shape = Feedback(is_latest=group["is_latest"], type=group["type"],
                         excluded_reason=group["excluded_reason"], pii_hold=group["pii_hold"],
                         message_id=None if group["unlinked"] else 0)
        for key, n in feedback_contribution(shape).items():
            total[key] += n * group["n"]
        if group["is_latest"] and group["type"] == Feedback.RATING:
            total["rating_sum"] += group["rating_sum"] or 0
            total["rating_count"] += group["rating_n"]
    for redactions in rows.exclude(pii_redactions={}).values_list(
            "pii_redactions", flat=True).iterator():
        for kind, n in redactions.items():
            total[f"pii_feedback.{kind}"] += n
    for redactions in Message.objects.filter(tenant_id=counters.tenant_id).exclude(
            pii_redactions={}).values_list("pii_redactions", flat=True).iterator():
        for kind, n in redactions.items():
            total[f"pii_messages.{kind}"] += n
    counters.counts = {key: n for key, n in sorted(total.items()) if n}
    counters.last_feedback_id = newest
    counters.updated_at = timezone.now()
    counters.save(update_fields=["counts", "last_feedback_id", "updated_at"])


def _excluded_reason(row: Feedback, *, reported: set[str]) -> str:
    """Why this row must not reach training, in priority order; "" when it is usable."""
    if not row.is_latest:
        return Feedback.EXCLUDED_SUPERSEDED
    if row.type == Feedback.REPORT:
        return Feedback.EXCLUDED_REPORT
    if row.message_id is None:
        return Feedback.EXCLUDED_UNLINKED
    if row.message.role != "assistant":
        return Feedback.EXCLUDED_NOT_ASSISTANT
    if row.pii_hold:
        return Feedback.EXCLUDED_PII_HOLD
    if row.message_external_id in reported:
        return Feedback.EXCLUDED_MESSAGE_REPORTED
    return ""


def _reported_message_ids(tenant: Tenant, message_ids: Iterable[str]) -> set[str]:
    return set(Feedback.objects.filter(
        tenant=tenant, type=Feedback.REPORT, is_latest=True,
        message_external_id__in=list(message_ids),
    ).values_list("message_external_id", flat=True))


def _feedback_refresh(tenant: Tenant, message_ids: list[str], delta: Counter) -> None:
    """Recompute `excluded_reason` of the latest feedback on these messages."""
    if not message_ids:
        return
    reported = _reported_message_ids(tenant, message_ids)
    rows = Feedback.objects.select_related("message").filter(
        tenant=tenant, is_latest=True, message_external_id__in=message_ids)
    for row in rows:
        reason = _excluded_reason(row, reported=reported)
        if reason != row.excluded_reason:
            delta.subtract(feedback_contribution(row))
            row.excluded_reason = reason
            delta.update(feedback_contribution(row))
            row.save(update_fields=["excluded_reason"])


# --- conversations --------------------------------------------------------------------------


@dataclass
class ConversationLogResult:
    conversation: Conversation
    messages: list[Message]
    created_ids: set[str] = field(default_factory=set)
    conversation_created: bool = False
    linked_feedback: int = 0
    pii_redactions: dict[str, int] = field(default_factory=dict)


def conversation_log_turns(*, tenant: Tenant, conversation_id: str | None,
                           messages: list[dict], served_by_version=None,
                           source: str = Conversation.SOURCE_CHAT,
                           ) -> tuple[Conversation, list[Message]]:
    """Log turns the platform served (the chat endpoint calls this after generating a reply).

    `messages`: dicts with `role`, `content`, optional `message_id` and optional
    `served_by_version` (else `served_by_version` applies to new assistant turns; None = base
    model). Content is PII-redacted before storage. Returns the conversation and, for each given
    message in order, its stored row: re-sending the history (same ids, or the same turns in the
    same order without ids) does not duplicate it, so the chat endpoint may pass the whole
    request history plus the reply and take the last row as the reply's message.
    """
    result = conversation_log(tenant=tenant, conversation_id=conversation_id, messages=messages,
                              served_by_version=served_by_version, source=source)
    return result.conversation, result.messages


@transaction.atomic
def conversation_log(*, tenant: Tenant, conversation_id: str | None, messages: list[dict],
                     served_by_version=None, source: str = Conversation.SOURCE_LOGGED,
                     metadata: dict | None = None) -> ConversationLogResult:
    """Create a conversation or append its new messages, then link waiting feedback.

    Messages whose `message_id` is already stored in this conversation are kept as they are
    (re-logging a whole conversation is safe). A `message_id` that belongs to another of the
    tenant's conversations is refused (409): message ids are unique per tenant. A leading run of
    id-less messages identical (role and redacted content) to the stored start of the
    conversation is taken as that history, not appended again.
    """
    counters = _counters_lock(tenant)
    conversation_id = conversation_id or new_public_id("conv")
    conversation, created = Conversation.objects.get_or_create(
        tenant=tenant, external_id=conversation_id,
        defaults={"source": source, "metadata": metadata or {}},
    )
    existing = list(conversation.messages.order_by("position")) if not created else []
    by_id = {m.external_id: m for m in existing}
    _conversation_check_foreign_ids(tenant, conversation, messages, by_id)

    rows: list[Message] = []
    new_rows: list[Message] = []
    delta: Counter = Counter()
    pii_total: dict[str, int] = {}
    position = existing[-1].position + 1 if existing else 0
    history_matches = True
    for index, given in enumerate(messages):
        redacted, pii = pii_redact(given["content"])
        message_id = given.get("message_id")
        if message_id and message_id in by_id:
            rows.append(by_id[message_id])
            continue
        if (not message_id and history_matches and index < len(existing)
                and existing[index].role == given["role"]
                and existing[index].content == redacted):
            rows.append(existing[index])
            continue
        history_matches = False
        # Integrations must log a system turn first; the chat endpoint is never refused for it
        # (a client may change its system prompt between turns), its turns are stored as sent.
        if (given["role"] == "system" and source == Conversation.SOURCE_LOGGED
                and (position > 0 or new_rows)):
            raise ApiError("validation_error", "A system message is only allowed first.",
                           details={f"messages[{index}].role": ["A system message is only "
                                                                "allowed as the first turn."]})
        version = given.get("served_by_version", served_by_version
                            if given["role"] == "assistant" else None)
        row = Message(
            tenant=tenant, conversation=conversation,
            external_id=message_id or new_public_id("msg"),
            role=given["role"], content=redacted, position=position,
            served_by_version=version, pii_redactions=pii,
            user_id=str(given.get("user_id") or "")[:200],
        )
        position += 1
        new_rows.append(row)
        rows.append(row)
        by_id[row.external_id] = row
        pii_total = pii_counts_add(pii_total, pii)
        for kind, n in pii.items():
            delta[f"pii_messages.{kind}"] += n
    Message.objects.bulk_create(new_rows)
    if new_rows and not created:
        conversation.updated_at = timezone.now()
        conversation.save(update_fields=["updated_at"])
    linked = _feedback_link(tenant, conversation, new_rows, delta)
    _counters_apply(counters, delta)
    # bulk_create sets primary keys on PostgreSQL and SQLite; re-read to be backend-independent.
    if new_rows and new_rows[0].pk is None:
        stored = {m.external_id: m for m in conversation.messages.all()}
        rows = [stored[m.external_id] for m in rows]
    return ConversationLogResult(
        conversation=conversation, messages=rows,
        created_ids={m.external_id for m in new_rows}, conversation_created=created,
        linked_feedback=linked, pii_redactions=pii_total,
    )


def _conversation_check_foreign_ids(tenant, conversation, messages, own_ids) -> None:
    given_ids = [m.get("message_id") for m in messages if m.get("message_id")]
    duplicates = {i for i in given_ids if given_ids.count(i) > 1}
    if duplicates:
        raise ApiError("validation_error", "A message_id appears twice in this request.",
                       details={"message_id": sorted(duplicates)})
    foreign = (Message.objects.filter(tenant=tenant, external_id__in=given_ids)
               .exclude(conversation=conversation)
               .values_list("external_id", "conversation__external_id"))
    clashes = {msg: conv for msg, conv in foreign}
    if clashes:
        raise ApiError(
            "message_id_conflict",
            "These message ids already belong to another conversation of this tenant; message "
            "ids are unique per tenant.",
            details={"conflicts": clashes}, status_code=409,
        )


def _feedback_link(tenant, conversation, new_rows: list[Message], delta: Counter) -> int:
    """Attach feedback that arrived before its message was logged."""
    Feedback.objects.filter(
        tenant=tenant, conversation__isnull=True,
        conversation_external_id=conversation.external_id,
    ).update(conversation=conversation)
    if not new_rows:
        return 0
    by_id = {m.external_id: m for m in new_rows}
    waiting = Feedback.objects.filter(
        tenant=tenant, message__isnull=True, message_external_id__in=list(by_id),
        conversation_external_id=conversation.external_id,
    )
    linked = 0
    for row in waiting:
        delta.subtract(feedback_contribution(row))
        row.message = by_id[row.message_external_id]
        row.conversation = conversation
        delta.update(feedback_contribution(row))
        row.save(update_fields=["message", "conversation"])
        linked += 1
    if linked:
        _feedback_refresh(tenant, list(by_id), delta)
    return linked


# --- feedback -------------------------------------------------------------------------------


@dataclass
class FeedbackSubmitResult:
    feedback: Feedback
    superseded_ids: list[int]


@transaction.atomic
def feedback_submit(*, tenant: Tenant, conversation_id: str, message_id: str, type: str,
                    correction: str = "", rating: int | None = None,
                    metadata: dict | None = None) -> FeedbackSubmitResult:
    """Store one piece of feedback (inputs already validated by the serializer).

    Feedback on a message the platform does not know yet is stored unlinked (never dropped) and
    is linked when the conversation is logged; until then it cannot train (no prompt is known).
    A message id known under another conversation is a client error (409). Thumbs, ratings and
    corrections must refer to an assistant message; a report may refer to any message.
    """
    counters = _counters_lock(tenant)
    metadata = metadata or {}
    message = (Message.objects.select_related("conversation")
               .filter(tenant=tenant, external_id=message_id).first())
    if message is not None:
        if message.conversation.external_id != conversation_id:
            raise ApiError(
                "conversation_mismatch",
                f"Message {message_id!r} belongs to conversation "
                f"{message.conversation.external_id!r}, not {conversation_id!r}.",
                details={"message_id": message_id,
                         "conversation_id": message.conversation.external_id},
                status_code=409,
            )
        if message.role != "assistant" and type != Feedback.REPORT:
            raise ApiError(
                "not_an_assistant_message",
                f"Message {message_id!r} is a {message.role} turn; {type} feedback rates an "
                "assistant answer (a report may concern any message).",
                details={"message_id": [f"role is {message.role!r}, expected 'assistant'"]},
            )
        conversation = message.conversation
    else:
        conversation = Conversation.objects.filter(tenant=tenant,
                                                   external_id=conversation_id).first()

    redacted, pii = pii_redact(correction) if correction else ("", {})
    user_id = str(metadata.get("user_id") or "")[:200]
    delta: Counter = Counter()
    superseded: list[int] = []
    if user_id:
        family = [t for t, f in FEEDBACK_FAMILIES.items() if f == FEEDBACK_FAMILIES[type]]
        earlier = Feedback.objects.filter(
            tenant=tenant, message_external_id=message_id, user_id=user_id,
            conversation_external_id=conversation_id, type__in=family, is_latest=True)
        for row in earlier:
            delta.subtract(feedback_contribution(row))
            row.is_latest = False
            row.excluded_reason = Feedback.EXCLUDED_SUPERSEDED
            delta.update(feedback_contribution(row))
            row.save(update_fields=["is_latest", "excluded_reason"])
            superseded.append(row.pk)

    row = Feedback(
        tenant=tenant, conversation=conversation, message=message,
        conversation_external_id=conversation_id, message_external_id=message_id,
        type=type, correction=redacted, rating=rating, metadata=metadata, user_id=user_id,
        is_latest=True, pii_redactions=pii,
        pii_hold=type == Feedback.CORRECTION and pii_is_hold(redacted, pii),
    )
    row.excluded_reason = _excluded_reason(
        row, reported=_reported_message_ids(tenant, [message_id]) | (
            {message_id} if type == Feedback.REPORT else set()))
    row.save()
    delta.update(feedback_contribution(row))
    if type == Feedback.REPORT or superseded:
        _feedback_refresh(tenant, [message_id], delta)
        row.refresh_from_db(fields=["excluded_reason"])
    _counters_apply(counters, delta, newest_feedback_id=row.pk)
    return FeedbackSubmitResult(feedback=row, superseded_ids=superseded)


# --- datasets -------------------------------------------------------------------------------


@transaction.atomic
def dataset_register(*, tenant: Tenant, name: str, type: str, allow_rag: bool = False,
                     allow_private_training: bool = True) -> tuple[Dataset, bool]:
    """Register a dataset; registering the same name, type and data use again returns the
    existing one (so a setup script can be re-run). Same name with another type or data use is a
    conflict: consent to training is never changed as a side effect."""
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()  # serialise same-name races
    existing = Dataset.objects.filter(tenant=tenant, name=name).first()
    if existing is not None:
        if (existing.type, existing.allow_rag, existing.allow_private_training) == (
                type, allow_rag, allow_private_training):
            return existing, False
        raise ApiError(
            "dataset_name_taken",
            f"A dataset named {name!r} already exists with another type or data use.",
            details={"id": existing.pk, "type": existing.type,
                     "data_use": {"allow_rag": existing.allow_rag,
                                  "allow_private_training": existing.allow_private_training}},
            status_code=409,
        )
    dataset = Dataset.objects.create(tenant=tenant, name=name, type=type, allow_rag=allow_rag,
                                     allow_private_training=allow_private_training)
    return dataset, True


def dataset_require_type(*, dataset: Dataset, upload_type: str) -> None:
    """Refuse records of the other kind (conversations into a preferences dataset, say)."""
    if dataset.type != upload_type:
        raise ApiError(
            "dataset_type_mismatch",
            f"Dataset {dataset.pk} holds {dataset.type}; upload {dataset.type} to it "
            f"(POST .../datasets/{dataset.pk}/upload/{dataset.type}) or register a "
            f"{upload_type} dataset.",
            details={"dataset_type": dataset.type, "upload_type": upload_type},
        )


@dataclass
class UploadItem:
    """One incoming record: where it came from, its parsed value, or why it could not parse."""

    locator: dict  # {"index": 3} or {"line": 7}
    value: Any = None
    parse_error: str | None = None


def upload_items_from_list(records: list) -> Iterator[UploadItem]:
    for index, value in enumerate(records):
        yield UploadItem(locator={"index": index}, value=value)


def upload_items_from_jsonl(lines: Iterable[tuple[int, Any, str | None]]) -> Iterator[UploadItem]:
    for line_number, value, error in lines:
        yield UploadItem(locator={"line": line_number}, value=value, parse_error=error)


def _field_path(dataset_type: str, locator: dict, field_name: str) -> str:
    if "line" in locator:
        return f"line {locator['line']}: {field_name}" if field_name else f"line {locator['line']}"
    base = f"{dataset_type}[{locator['index']}]"
    return f"{base}.{field_name}" if field_name else base


class _UploadRejected(Exception):
    def __init__(self, report: dict):
        super().__init__("upload rejected")
        self.report = report


def dataset_upload(*, tenant: Tenant, dataset: Dataset, items: Iterable[UploadItem],
                   expected_type: str | None = None, skip_invalid: bool = False,
                   source: str = "json", filename: str = "") -> dict:
    """Validate, redact, de-duplicate and store records; returns the upload report.

    Atomic: if any record is invalid and `skip_invalid` is false, nothing is stored and an
    `invalid_records` error lists every bad record (up to 1000, with the total). With
    `skip_invalid`, valid records are stored and the report lists what was skipped. Records
    whose redacted content is already in the dataset (or earlier in the same upload) are counted
    as duplicates and not stored again. The dataset's `last_validation_report` keeps the report.
    """
    if expected_type is not None:
        dataset_require_type(dataset=dataset, upload_type=expected_type)
    try:
        with transaction.atomic():
            report = _dataset_upload_locked(tenant, dataset, items, skip_invalid=skip_invalid,
                                            source=source, filename=filename)
    except _UploadRejected as rejected:
        Dataset.objects.filter(pk=dataset.pk).update(
            last_validation_report=rejected.report, updated_at=timezone.now())
        report = rejected.report
        raise ApiError(
            "invalid_records",
            f"{report['invalid']} of {report['received']} records are invalid; nothing was "
            "stored. Fix them, or send skip_invalid=true to store only the valid records.",
            details={"invalid_records": report["invalid_records"],
                     "invalid": report["invalid"], "received": report["received"],
                     "truncated": report["invalid"] > len(report["invalid_records"])},
        ) from None
    return report


def _dataset_upload_locked(tenant, dataset, items, *, skip_invalid, source, filename) -> dict:
    locked = Dataset.objects.select_for_update().get(pk=dataset.pk, tenant=tenant)
    check, normalize = VALIDATORS[locked.type]
    received = stored = duplicates = invalid = 0
    invalid_records: list[dict] = []
    duplicate_records: list[dict] = []
    pii_total: dict[str, int] = {}
    batch: list[tuple[dict, str, dict, dict]] = []

    def flush() -> None:
        nonlocal stored, duplicates, pii_total
        hashes = [h for _, h, _, _ in batch]
        seen = set(DatasetRecord.objects.filter(dataset=locked, content_hash__in=hashes)
                   .values_list("content_hash", flat=True))
        rows = []
        for locator, content_hash, data, pii in batch:
            if content_hash in seen:
                duplicates += 1
                if len(duplicate_records) < MAX_LISTED_PROBLEMS:
                    duplicate_records.append(locator)
                continue
            seen.add(content_hash)
            rows.append(DatasetRecord(tenant=tenant, dataset=locked, content_hash=content_hash,
                                      data=data, pii_redactions=pii))
            pii_total = pii_counts_add(pii_total, pii)
        DatasetRecord.objects.bulk_create(rows, batch_size=UPLOAD_BATCH_SIZE)
        stored += len(rows)
        batch.clear()

    for item in items:
        received += 1
        if item.parse_error:
            errors = [("", item.parse_error)]
        else:
            errors = check(item.value)
        if not errors:
            data, pii = pii_redact_value(normalize(item.value))
            if locked.type == Dataset.PREFERENCES and data["chosen"] == data["rejected"]:
                errors = [("rejected", "'chosen' and 'rejected' are identical once personal "
                                       "data is redacted.")]
        if errors:
            invalid += 1
            if len(invalid_records) < MAX_LISTED_PROBLEMS:
                invalid_records.append({**item.locator, "errors": [
                    {"field": _field_path(locked.type, item.locator, f), "message": m}
                    for f, m in errors]})
            continue
        if invalid and not skip_invalid:
            continue  # the upload will be refused; keep validating to list every bad record
        batch.append((item.locator, record_content_hash(data), data, pii))
        if len(batch) >= UPLOAD_BATCH_SIZE:
            flush()

    report = {
        "at": timezone.now().isoformat(), "source": source, "filename": filename,
        "received": received, "invalid": invalid, "invalid_records": invalid_records,
        "skip_invalid": skip_invalid,
    }
    if received == 0:
        raise ApiError("empty_upload", "The upload has no records.",
                       details={"records": ["At least one record is required."]})
    if invalid and not skip_invalid:
        report.update(accepted=False, stored=0, duplicates=0)
        raise _UploadRejected(report)
    if batch:
        flush()
    locked.record_count = DatasetRecord.objects.filter(dataset=locked).count()
    locked.duplicate_count += duplicates
    locked.pii_redaction_counts = pii_counts_add(locked.pii_redaction_counts, pii_total)
    report.update(accepted=True, stored=stored, duplicates=duplicates,
                  duplicate_records=duplicate_records, skipped=invalid,
                  pii_redactions=pii_total, record_count=locked.record_count)
    locked.last_validation_report = report
    locked.updated_at = timezone.now()
    locked.save(update_fields=["record_count", "duplicate_count", "pii_redaction_counts",
                               "last_validation_report", "updated_at"])
    return report


__all__ = [
    "MAX_CONTENT_CHARS",
    "conversation_log",
    "conversation_log_turns",
    "dataset_register",
    "dataset_require_type",
    "dataset_upload",
    "feedback_counters_rebuild",
    "feedback_submit",
]
