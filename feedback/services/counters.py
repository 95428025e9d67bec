"""The tenant's feedback counters and each row's `excluded_reason`.

Every feedback write takes the tenant's `FeedbackCounters` row lock first (`counters_lock`) and
applies its counter delta in the same transaction (`counters_apply`), so the stats endpoint reads
one row and is exact. A row's `excluded_reason` says why it never reaches training ("" =
usable); `feedback_refresh` recomputes it whenever something it depends on changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from django.db import transaction
from django.db.models import BooleanField, Count, ExpressionWrapper, Max, Q, Sum
from django.utils import timezone

from feedback.models import Feedback, FeedbackCounters, Message
from tenants.models import Tenant


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


def counters_lock(tenant: Tenant) -> FeedbackCounters:
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


def counters_apply(counters: FeedbackCounters, delta: Counter,
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
    counters = counters_lock(tenant)
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


def excluded_reason(row: Feedback, *, reported: set[str]) -> str:
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


def reported_message_ids(tenant: Tenant, message_ids: Iterable[str]) -> set[str]:
    return set(Feedback.objects.filter(
        tenant=tenant, type=Feedback.REPORT, is_latest=True,
        message_external_id__in=list(message_ids),
    ).values_list("message_external_id", flat=True))


def feedback_refresh(tenant: Tenant, message_ids: list[str], delta: Counter) -> None:
    """Recompute `excluded_reason` of the latest feedback on these messages."""
    if not message_ids:
        return
    reported = reported_message_ids(tenant, message_ids)
    rows = Feedback.objects.select_related("message").filter(
        tenant=tenant, is_latest=True, message_external_id__in=message_ids)
    for row in rows:
        reason = excluded_reason(row, reported=reported)
        if reason != row.excluded_reason:
            delta.subtract(feedback_contribution(row))
            row.excluded_reason = reason
            delta.update(feedback_contribution(row))
            row.save(update_fields=["excluded_reason"])
