"""Logging conversations: the turns the platform served, or that a client served elsewhere.

Message content is PII-redacted before it is stored (`feedback.pii`); only counts of what was
redacted are kept. Feedback that arrived before its message is linked when the message is logged.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from feedback.models import Conversation, Feedback, Message
from feedback.pii import pii_counts_add, pii_redact
from feedback.services.counters import (
    counters_apply,
    feedback_contribution,
    feedback_refresh,
    feedback_write_lock,
)
from tenants.errors import Conflict, InvalidInput
from tenants.models import Tenant


def new_public_id(prefix: str) -> str:
    """`conv_<hex>` / `msg_<hex>` ids for conversations and messages the client did not name."""
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass
class ConversationLogResult:
    conversation: Conversation
    messages: list[Message]
    created_ids: set[str] = field(default_factory=set)
    conversation_created: bool = False
    linked_feedback: int = 0
    pii_redactions: dict[str, int] = field(default_factory=dict)


@dataclass
class _Turns:
    """What matching the given messages against the stored ones produced."""

    rows: list[Message] = field(default_factory=list)
    new_rows: list[Message] = field(default_factory=list)
    delta: Counter = field(default_factory=Counter)
    pii_total: dict[str, int] = field(default_factory=dict)


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
    conversation_id = conversation_id or new_public_id("conv")
    # Two logs of one conversation, or a log and feedback on one of its messages, take turns;
    # everything else of the tenant goes on concurrently.
    feedback_write_lock(tenant, conversation_id=conversation_id,
                        message_ids=[str(m["message_id"]) for m in messages
                                     if m.get("message_id")])
    conversation, created = Conversation.objects.get_or_create(
        tenant=tenant, external_id=conversation_id,
        defaults={"source": source, "metadata": metadata or {}},
    )
    existing = list(conversation.messages.order_by("position")) if not created else []
    by_id = {m.external_id: m for m in existing}
    _conversation_check_foreign_ids(tenant, conversation, messages)

    turns = _turns_match_or_build(tenant, conversation, messages, existing=existing,
                                  by_id=by_id, served_by_version=served_by_version,
                                  source=source)
    new_rows, rows = turns.new_rows, turns.rows
    Message.objects.bulk_create(new_rows)
    if new_rows and not created:
        conversation.updated_at = timezone.now()
        conversation.save(update_fields=["updated_at"])
    linked = _feedback_link(tenant, conversation, new_rows, turns.delta)
    counters_apply(tenant, turns.delta)
    # bulk_create sets primary keys on PostgreSQL and SQLite; re-read to be backend-independent.
    if new_rows and new_rows[0].pk is None:
        stored = {m.external_id: m for m in conversation.messages.all()}
        rows = [stored[m.external_id] for m in rows]
    return ConversationLogResult(
        conversation=conversation, messages=rows,
        created_ids={m.external_id for m in new_rows}, conversation_created=created,
        linked_feedback=linked, pii_redactions=turns.pii_total,
    )


def _turns_match_or_build(tenant: Tenant, conversation: Conversation, messages: list[dict], *,
                          existing: list[Message], by_id: dict[str, Message],
                          served_by_version, source: str) -> _Turns:
    """For each given message, its stored row, or a new (unsaved, redacted) one to append."""
    turns = _Turns()
    position = existing[-1].position + 1 if existing else 0
    history_matches = True
    for index, given in enumerate(messages):
        redacted, pii = pii_redact(given["content"])
        message_id = given.get("message_id")
        if message_id and message_id in by_id:
            turns.rows.append(by_id[message_id])
            continue
        if (not message_id and history_matches and index < len(existing)
                and existing[index].role == given["role"]
                and existing[index].content == redacted):
            turns.rows.append(existing[index])
            continue
        history_matches = False
        # Integrations must log a system turn first; the chat endpoint is never refused for it
        # (a client may change its system prompt between turns), its turns are stored as sent.
        if (given["role"] == "system" and source == Conversation.SOURCE_LOGGED
                and (position > 0 or turns.new_rows)):
            raise InvalidInput("validation_error", "A system message is only allowed first.",
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
        turns.new_rows.append(row)
        turns.rows.append(row)
        by_id[row.external_id] = row
        turns.pii_total = pii_counts_add(turns.pii_total, pii)
        for kind, n in pii.items():
            turns.delta[f"pii_messages.{kind}"] += n
    return turns


def _conversation_check_foreign_ids(tenant, conversation, messages) -> None:
    """Refuse a message id given twice, or one that belongs to another conversation."""
    given_ids = [m.get("message_id") for m in messages if m.get("message_id")]
    duplicates = {i for i in given_ids if given_ids.count(i) > 1}
    if duplicates:
        raise InvalidInput("validation_error", "A message_id appears twice in this request.",
                           details={"message_id": sorted(duplicates)})
    foreign = (Message.objects.filter(tenant=tenant, external_id__in=given_ids)
               .exclude(conversation=conversation)
               .values_list("external_id", "conversation__external_id"))
    clashes = {msg: conv for msg, conv in foreign}
    if clashes:
        raise Conflict(
            "message_id_conflict",
            "These message ids already belong to another conversation of this tenant; message "
            "ids are unique per tenant.",
            details={"conflicts": clashes},
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
        feedback_refresh(tenant, list(by_id), delta)
    return linked
