"""The tenant's feedback counters and each row's `excluded_reason`.

Counters are sharded (`FeedbackCounterShard`, `FEEDBACK_COUNTER_SHARDS` rows per tenant): each
feedback write adds its delta to one shard picked at random, at the end of its transaction
(`counters_apply`), so the counts stay exact and the shard's row lock is held only from that
update to the commit; the stats read sums the shards. Writes that must not interleave (a user's
newer feedback superseding the earlier one, a report excluding the feedback on its message,
logging a message linking the feedback that waited for it) lock what they touch, the message
(its row once logged) and the tenant's message and conversation ids (`feedback_write_lock`),
not the whole tenant. A row's
`excluded_reason` says why it never reaches training ("" = usable); `feedback_refresh`
recomputes it whenever something it depends on changes.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterable

from django.db import connection, transaction
from django.db.models import (
    BooleanField,
    Count,
    ExpressionWrapper,
    Max,
    Q,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from feedback.models import Feedback, FeedbackCounterShard, Message
from tenants.models import Tenant

# Writers of one tenant spread over this many counter rows. 16 keeps two concurrent writers on
# the same shard rare at the concurrency one server sees, while the stats read stays a read of 16
# small rows whatever the volume. Fewer shards than before (a lowered constant) still count:
# reads sum every shard of the tenant, whatever its number.
FEEDBACK_COUNTER_SHARDS = 16


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


def feedback_write_lock(tenant: Tenant, *, message_ids: Iterable[str] = (),
                        conversation_id: str | None = None) -> None:
    """Serialise this transaction with the others writing feedback on the same messages (or
    logging the same conversation) of the tenant, until it ends.

    PostgreSQL transaction-scoped advisory locks, taken in a fixed order (no deadlock between
    two writers); a lock key is a hash, so two unrelated ids may rarely share one, which only
    makes one wait. Other databases (SQLite) serialise all writers already.
    """
    if connection.vendor != "postgresql":
        return
    names = sorted({f"m:{m}" for m in message_ids}
                   | ({f"c:{conversation_id}"} if conversation_id else set()))
    keys = sorted({_lock_key(tenant.pk, name) for name in names})
    with connection.cursor() as cursor:
        for key in keys:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def _lock_key(tenant_id: int, name: str) -> int:
    digest = hashlib.blake2b(f"feedback:{tenant_id}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def feedback_counters_stale(tenant_id: int, *, own_feedback_id: int | None = None) -> Subquery:
    """An expression: the id of a feedback row of the tenant newer than every shard counted
    (rows written around these services: a bulk load, a data migration), other than the
    caller's own new row; NULL when there is none (the counters are fresh).

    Evaluated inside the query that reads the shards, so the shards and the probe see one
    snapshot (a write committing in between cannot look like one around the services). One
    probe of the (tenant, id) index: `ORDER BY id LIMIT 1`, not EXISTS, because the planner
    does not know the bound before it runs and would scan the whole table for an EXISTS."""
    counted = Coalesce(Subquery(
        FeedbackCounterShard.objects.filter(tenant_id=tenant_id).order_by()
        .values("tenant_id").annotate(newest=Max("last_feedback_id")).values("newest")[:1]),
        Value(0))
    newer = Feedback.objects.filter(tenant_id=tenant_id, pk__gt=counted)
    if own_feedback_id is not None:
        newer = newer.exclude(pk=own_feedback_id)
    return Subquery(newer.order_by("pk").values("pk")[:1])


def counters_apply(tenant: Tenant, delta: Counter,
                   newest_feedback_id: int | None = None) -> None:
    """Add this write's delta to one of the tenant's counter shards (picked at random), inside
    the caller's transaction, after its rows are written: the shard's lock is held only from
    here to the commit.

    If rows were written around these services (a bulk load), the counters are recounted
    instead (the recount sees this transaction's own rows, delta included), so a delta is never
    left on stale numbers.
    """
    if newest_feedback_id is None and not any(delta.values()):
        return
    index = random.randrange(FEEDBACK_COUNTER_SHARDS)
    apply = _shard_add_postgresql if connection.vendor == "postgresql" else _shard_add_orm
    for _ in range(2):
        stale = apply(tenant.pk, index, delta, newest_feedback_id)
        if stale is not None:
            break
        _shards_ensure(tenant.pk)
    if stale is None or stale:
        _counters_recount(tenant.pk)


def _shard_add_orm(tenant_id: int, index: int, delta: Counter,
                   newest_feedback_id: int | None) -> bool | None:
    """Lock the shard, add the delta in Python. Whether the counters were stale; None when the
    tenant has no shards yet."""
    shard = (FeedbackCounterShard.objects.select_for_update()
             .filter(tenant_id=tenant_id, shard=index)
             .annotate(stale=feedback_counters_stale(tenant_id,
                                                     own_feedback_id=newest_feedback_id))
             .first())
    if shard is None:
        return None
    counts = Counter(shard.counts or {})
    counts.update(delta)
    shard.counts = {key: n for key, n in sorted(counts.items()) if n}
    if newest_feedback_id is not None:
        shard.last_feedback_id = max(shard.last_feedback_id, newest_feedback_id)
    shard.updated_at = timezone.now()
    shard.save(update_fields=["counts", "last_feedback_id", "updated_at"])
    return shard.stale is not None


def _shard_add_postgresql(tenant_id: int, index: int, delta: Counter,
                          newest_feedback_id: int | None) -> bool | None:
    """The same in one statement (one round trip on the request path): the delta is summed
    into the shard's JSON by PostgreSQL, and the staleness probe is its RETURNING value, read
    in the statement's snapshot (see `feedback_counters_stale`)."""
    import json

    shards, feedback = FeedbackCounterShard._meta.db_table, Feedback._meta.db_table
    sql = f"""
        UPDATE {shards} AS s SET
            counts = COALESCE((
                SELECT jsonb_object_agg(key, total) FROM (
                    SELECT key, SUM(value::numeric)::bigint AS total FROM (
                        SELECT key, value FROM jsonb_each_text(s.counts)
                        UNION ALL SELECT key, value FROM jsonb_each_text(%s::jsonb)) AS parts
                    GROUP BY key HAVING SUM(value::numeric) <> 0) AS sums), '{{}}'::jsonb),
            last_feedback_id = GREATEST(s.last_feedback_id, %s),
            updated_at = %s
        WHERE s.tenant_id = %s AND s.shard = %s
        RETURNING (
            SELECT f.id FROM {feedback} AS f
            WHERE f.tenant_id = %s AND f.id <> %s AND f.id > COALESCE(
                (SELECT MAX(c.last_feedback_id) FROM {shards} AS c WHERE c.tenant_id = %s), 0)
            ORDER BY f.id LIMIT 1)
    """  # noqa: S608 - table names from the models; every value is a parameter
    newest = newest_feedback_id or 0
    with connection.cursor() as cursor:
        cursor.execute(sql, [json.dumps({k: n for k, n in delta.items() if n}), newest,
                             timezone.now(), tenant_id, index, tenant_id,
                             newest_feedback_id or -1, tenant_id])
        found = cursor.fetchone()
    return None if found is None else found[0] is not None


def _shards_ensure(tenant_id: int) -> None:
    FeedbackCounterShard.objects.bulk_create(
        [FeedbackCounterShard(tenant_id=tenant_id, shard=i)
         for i in range(FEEDBACK_COUNTER_SHARDS)], ignore_conflicts=True)


def counters_sum(shards: Iterable[FeedbackCounterShard]) -> Counter:
    """The tenant's counters: the sum of its shards."""
    total: Counter = Counter()
    for shard in shards:
        total.update(shard.counts or {})
    return total


@transaction.atomic
def feedback_counters_rebuild(*, tenant: Tenant) -> dict:
    """Recount the tenant's counters from the rows (repair tool; tests compare it with the
    maintained numbers). Needed after deleting feedback or messages outside these services."""
    return _counters_recount(tenant.pk)


def _counters_recount(tenant_id: int) -> dict:
    """Lock every shard of the tenant (in shard order, so two recounts never deadlock), count
    the rows, write the total into shard 0 and empty the others.

    Grouped aggregate queries (not a Python pass over every row), so a million rows recount
    in about a second on PostgreSQL. A writer that updated a shard before the lock commits
    first and is counted here; one that comes after adds its delta to the recounted numbers.
    """
    _shards_ensure(tenant_id)
    shards = list(FeedbackCounterShard.objects.select_for_update()
                  .filter(tenant_id=tenant_id).order_by("shard"))
    rows = Feedback.objects.filter(tenant_id=tenant_id)
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
    for redactions in Message.objects.filter(tenant_id=tenant_id).exclude(
            pii_redactions={}).values_list("pii_redactions", flat=True).iterator():
        for kind, n in redactions.items():
            total[f"pii_messages.{kind}"] += n
    counts = {key: n for key, n in sorted(total.items()) if n}
    now = timezone.now()
    for shard in shards:
        first = shard.shard == shards[0].shard
        shard.counts = counts if first else {}
        shard.last_feedback_id = newest if first else 0
        shard.updated_at = now
    FeedbackCounterShard.objects.bulk_update(shards, ["counts", "last_feedback_id",
                                                      "updated_at"])
    return counts


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
