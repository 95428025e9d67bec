"""Submitting feedback on a message: thumbs, corrections, ratings, reports.

Corrections are PII-redacted before they are stored. A user's newer feedback of the same family
on the same message replaces the earlier one (kept as history, excluded from training).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from functools import cache

from django.db import connection, transaction
from django.db.models.signals import post_save

from feedback.models import Conversation, Feedback, Message
from feedback.pii import pii_is_hold, pii_redact
from feedback.services.counters import (
    counters_apply,
    excluded_reason,
    feedback_contribution,
    feedback_refresh,
    feedback_write_lock,
)
from tenants.errors import Conflict, InvalidInput
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


@dataclass
class FeedbackSubmitResult:
    feedback: Feedback
    superseded_ids: list[int]


def _message_locked(tenant: Tenant, message_id: str) -> Message | None:
    """The tenant's message `message_id` with its conversation, its row locked (FOR NO KEY UPDATE
    on PostgreSQL) until the end of the transaction; None when it is not logged.

    One SQL statement instead of the ORM's select_for_update/select_related query: building
    that query took longer than running it, on every feedback POST (issue 16).
    The instances carry only the columns read here; anything else loads on access."""
    lock = " FOR NO KEY UPDATE OF m" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT m.id, m.role, m.conversation_id, c.external_id "
            f"FROM {Message._meta.db_table} m JOIN {Conversation._meta.db_table} c "
            f"ON c.id = m.conversation_id WHERE m.tenant_id = %s AND m.external_id = %s{lock}",
            [tenant.pk, message_id])
        found = cursor.fetchone()
    if found is None:
        return None
    pk, role, conversation_pk, conversation_external_id = found
    message = _partial(Message, {"id": pk, "tenant_id": tenant.pk, "external_id": message_id,
                                 "conversation_id": conversation_pk, "role": role})
    message.conversation = _partial(Conversation, {
        "id": conversation_pk, "tenant_id": tenant.pk, "external_id": conversation_external_id})
    return message


def _partial(model, values: dict):
    """A model instance as loaded from the database with only these columns (by attname); the
    others are deferred (loaded on access). `from_db` takes the values in field order."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(connection.alias, names, [values[name] for name in names])


def _feedback_target(tenant: Tenant, *, conversation_id: str, message_id: str,
                     type: str) -> tuple[Message | None, Conversation | None]:
    """The message the feedback is about (None when not logged yet) and its conversation,
    locked until the end of the transaction: feedback on one message is written one at a time
    (a user's newer feedback supersedes the earlier one, a report excludes the others), while
    writers on other messages of the tenant go on (issue 16).

    A logged message is locked by its row (no extra round trip); an id not logged yet by the
    advisory lock that logging it takes too (`feedback_write_lock`), after which it is looked
    up again, since a log holding that lock may just have committed it."""
    message = _message_locked(tenant, message_id)
    if message is None:
        feedback_write_lock(tenant, message_ids=[message_id])
        message = _message_locked(tenant, message_id)
    if message is None:
        return None, Conversation.objects.filter(tenant=tenant,
                                                 external_id=conversation_id).first()
    if message.conversation.external_id != conversation_id:
        raise Conflict(
            "conversation_mismatch",
            f"Message {message_id!r} belongs to conversation "
            f"{message.conversation.external_id!r}, not {conversation_id!r}.",
            details={"message_id": message_id,
                     "conversation_id": message.conversation.external_id},
        )
    if message.role != "assistant" and type != Feedback.REPORT:
        raise InvalidInput(
            "not_an_assistant_message",
            f"Message {message_id!r} is a {message.role} turn; {type} feedback rates an "
            "assistant answer (a report may concern any message).",
            details={"message_id": [f"role is {message.role!r}, expected 'assistant'"]},
        )
    return message, message.conversation


_SUPERSEDE_COLUMNS = ["id", "tenant_id", "conversation_external_id", "message_external_id",
                      "message_id", "type", "rating", "user_id", "is_latest", "pii_redactions",
                      "excluded_reason", "pii_hold"]


def _latest_feedback_of(tenant: Tenant, *, message_id: str, user_id: str, conversation_id: str,
                        family: list[str]) -> list[Feedback]:
    """The latest reports on the message and the user's latest feedback of `family` on it, with
    the columns their counter contribution needs (one SQL statement, not the ORM's query: see
    `_message_locked`)."""
    params: list = [tenant.pk, message_id, Feedback.REPORT]
    mine = ""
    if user_id:
        mine = (" OR (user_id = %s AND conversation_external_id = %s AND type IN ("
                + ", ".join(["%s"] * len(family)) + "))")
        params += [user_id, conversation_id, *family]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(_SUPERSEDE_COLUMNS)} FROM {Feedback._meta.db_table} "
            f"WHERE tenant_id = %s AND message_external_id = %s AND is_latest "
            f"AND (type = %s{mine}) ORDER BY id", params)
        found = cursor.fetchall()
    rows = []
    for values in found:
        row = dict(zip(_SUPERSEDE_COLUMNS, values, strict=True))
        if isinstance(row["pii_redactions"], str):  # JSON comes back as text without the ORM
            row["pii_redactions"] = json.loads(row["pii_redactions"])
        rows.append(_partial(Feedback, row))
    return rows


def _feedback_supersede(tenant: Tenant, *, conversation_id: str, message_id: str, type: str,
                        user_id: str, delta: Counter) -> tuple[list[int], bool]:
    """Mark the user's earlier latest feedback of the same family as superseded. Returns their
    ids and whether the message is reported (a latest report on it, this user's included: a
    report only ever supersedes a report). One query finds both."""
    family = [t for t, f in FEEDBACK_FAMILIES.items() if f == FEEDBACK_FAMILIES[type]]
    rows = _latest_feedback_of(tenant, message_id=message_id, user_id=user_id,
                               conversation_id=conversation_id, family=family)
    reported = any(row.type == Feedback.REPORT for row in rows)
    superseded: list[int] = []
    for row in rows:
        if not (user_id and row.user_id == user_id
                and row.conversation_external_id == conversation_id and row.type in family):
            continue
        delta.subtract(feedback_contribution(row))
        row.is_latest = False
        row.excluded_reason = Feedback.EXCLUDED_SUPERSEDED
        delta.update(feedback_contribution(row))
        row.save(update_fields=["is_latest", "excluded_reason"])
        superseded.append(row.pk)
    return superseded, reported


def _feedback_insert(row: Feedback) -> None:
    """INSERT `row` as `row.save()` would, in one prepared statement, then send post_save
    (created) as save() does: its receivers (training, adapters) queue their checks on commit.

    save() spent about 1 ms of CPU per feedback POST building the same INSERT (issue 16); the
    values still go through each field's own `pre_save` and `get_db_prep_save` (defaults, JSON,
    time zones), so what is stored is what save() stores. The model has no pre_save receivers.
    A database without INSERT ... RETURNING takes save() itself."""
    if not _insert_returns_id():
        row.save()
        return
    fields = [f for f in Feedback._meta.concrete_fields if not f.primary_key]
    params = [f.get_db_prep_save(f.pre_save(row, True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(connection.vendor, tuple(f.column for f in fields)), params)
        row.pk = cursor.fetchone()[0]
    row._state.adding = False
    row._state.db = connection.alias
    post_save.send(sender=Feedback, instance=row, created=True, update_fields=None, raw=False,
                   using=connection.alias)


def _insert_returns_id() -> bool:
    """Whether the database has INSERT ... RETURNING (SQLite before 3.35 has not)."""
    return connection.features.can_return_columns_from_insert


@cache
def _insert_sql(vendor: str, columns: tuple[str, ...]) -> str:
    """The INSERT of `_feedback_insert`, built once per database vendor and column list."""
    quote = connection.ops.quote_name
    return (f"INSERT INTO {quote(Feedback._meta.db_table)} "
            f"({', '.join(quote(c) for c in columns)}) "
            f"VALUES ({', '.join(['%s'] * len(columns))}) RETURNING {quote('id')}")


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
    metadata = metadata or {}
    message, conversation = _feedback_target(tenant, conversation_id=conversation_id,
                                             message_id=message_id, type=type)
    redacted, pii = pii_redact(correction) if correction else ("", {})
    user_id = str(metadata.get("user_id") or "")[:200]
    delta: Counter = Counter()
    superseded, reported = _feedback_supersede(tenant, conversation_id=conversation_id,
                                               message_id=message_id, type=type,
                                               user_id=user_id, delta=delta)
    row = Feedback(
        tenant=tenant, conversation=conversation, message=message,
        conversation_external_id=conversation_id, message_external_id=message_id,
        type=type, correction=redacted, rating=rating, metadata=metadata, user_id=user_id,
        is_latest=True, pii_redactions=pii,
        pii_hold=type == Feedback.CORRECTION and pii_is_hold(redacted, pii),
    )
    row.excluded_reason = excluded_reason(
        row, reported={message_id} if reported or type == Feedback.REPORT else set())
    _feedback_insert(row)
    delta.update(feedback_contribution(row))
    # Only a report changes why the other feedback on the message is excluded; a superseded
    # row was handled above and changes nothing for the others.
    if type == Feedback.REPORT:
        feedback_refresh(tenant, [message_id], delta)
        row.refresh_from_db(fields=["excluded_reason"])
    counters_apply(tenant, delta, newest_feedback_id=row.pk)
    return FeedbackSubmitResult(feedback=row, superseded_ids=superseded)
