"""Replay prompts from the tenant's own traffic (issue 15: what a tenant cares to keep is what
its users ask, not only the shipped general prompts).

An SFT job with `replay_traffic_rows` > 0 also anchors the model, as it is before the job, on up
to that many of the tenant's own served prompts: the opening user message of its newest
conversations that drew no complaint. The trainer answers them with the model before the job and
trains them like the shipped replay prompts (training.trainer.replay: KL to the model before the
job, their own loss weighted by `replay_weight`), so what the model says to the tenant's users
moves only where the tenant's data asks it to.

Left out, so that replay never holds the model to an answer the job is meant to change, and
never trains on what measures the job:
- conversations with any complaint: a correction, a thumbs-down, a rating of 2 or less, a report
  (the latest reaction of each user);
- prompts that any example of the tenant's compiled data asks (trained or held out as the golden
  set), and prompts of the tenant's evaluation-only datasets; also the same question in other
  words (training.text.near_same: every content word of one is in the other, "Which city is
  Zorbania's capital?" for "What is the capital of Zorbania?"), so a user's other wording of a
  question the job corrects is not held to the old answer;
- the platform's evaluation questions (settings.EVALUATION_QUESTION_FILES: the general-knowledge
  set each version is scored on, the base-knowledge set), so "kept" is still measured on
  questions no job trained on;
- empty prompts and prompts longer than MAX_PROMPT_CHARS; duplicates (the newest kept).

Text is read as stored (PII-redacted by the feedback app). The records carry their message's id
in the snapshot's sources, so erasure of the message rewrites the snapshot like any other file.
Reads only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.db.models import Q

from feedback.models import Conversation, Feedback, Message
from feedback.selectors import dataset_records_for_evaluation
from training.compiler import RATING_MAX_UNDESIRABLE, CompiledData
from training.text import NearIndex

MAX_PROMPT_CHARS = 2000
# How many of the newest conversations are looked at per wanted prompt (bounds the read).
CONVERSATIONS_PER_ROW = 4


@dataclass
class TrafficReplay:
    """The prompts picked (`{"id", "prompt"}` records) and, per record, the rows it came from."""

    records: list[dict] = field(default_factory=list)
    sources: list[list[str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def message_ids(self) -> list[int]:
        return sorted(int(s.split(":", 1)[1]) for row in self.sources for s in row)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _norm(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def _user_texts(row: dict) -> set[str]:
    """The user side of one record, normalised: a `question` or `prompt` string, or the user
    turns of `messages` or of a `prompt` given as turns (evaluation sets, compiled examples,
    dataset records)."""
    out: set[str] = set()
    for key in ("question", "prompt"):
        if isinstance(row.get(key), str):
            out.add(_norm(row[key]))
    turns = row.get("messages") or (row.get("prompt") if isinstance(row.get("prompt"), list)
                                    else [])
    for message in turns:
        if isinstance(message, dict) and message.get("role") == "user":
            out.add(_norm(message.get("content", "")))
    out.discard("")
    return out


@lru_cache(maxsize=8)
def _platform_questions(files: tuple[str, ...]) -> frozenset[str]:
    """The questions of the platform's evaluation sets (a JSONL `question` field, or the first
    user message of `messages`)."""
    out: set[str] = set()
    for name in files:
        path = Path(name)
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    out |= _user_texts(json.loads(line))
    return frozenset(out)


def _taken_prompts(tenant, compiled: CompiledData) -> set[str]:
    """What the job trains or holds out, the tenant's evaluation-only datasets, and the
    platform's evaluation questions."""
    out: set[str] = set()
    for record in [*compiled.train, *compiled.eval]:
        out |= _user_texts(record)
    for data in dataset_records_for_evaluation(tenant=tenant).values_list("data", flat=True):
        if isinstance(data, dict):
            out |= _user_texts(data)
    return out | _platform_questions(tuple(str(p) for p in settings.EVALUATION_QUESTION_FILES))


def _complained_conversations(tenant, conversation_ids: list[int]) -> set[int]:
    complaint = (Q(type__in=[Feedback.CORRECTION, Feedback.THUMBS_DOWN, Feedback.REPORT])
                 | Q(type=Feedback.RATING, rating__lte=RATING_MAX_UNDESIRABLE))
    return set(
        Feedback.objects.filter(tenant=tenant, is_latest=True,
                                message__conversation_id__in=conversation_ids)
        .filter(complaint).values_list("message__conversation_id", flat=True)
    )


def traffic_replay_prompts(*, tenant, compiled: CompiledData, limit: int) -> TrafficReplay:
    """Up to `limit` opening prompts of the tenant's newest conversations (see the module
    docstring for what is left out), newest first."""
    picked = TrafficReplay()
    if limit <= 0:
        return picked
    conversation_ids = list(
        Conversation.objects.filter(tenant=tenant).order_by("-created_at", "-id")
        .values_list("id", flat=True)[: limit * CONVERSATIONS_PER_ROW]
    )
    if not conversation_ids:
        return picked
    complained = _complained_conversations(tenant, conversation_ids)
    taken = _taken_prompts(tenant, compiled)
    near_taken = NearIndex(taken)
    openers: dict[int, list[Message]] = {}
    for message in (Message.objects.filter(tenant=tenant, conversation_id__in=conversation_ids)
                    .exclude(role="system").order_by("conversation_id", "position", "id")
                    .only("id", "conversation_id", "role", "content", "position")):
        turns = openers.setdefault(message.conversation_id, [])
        if len(turns) < 2:
            turns.append(message)
    seen: set[str] = set()
    for conversation_id in conversation_ids:  # newest first
        if len(picked.records) >= limit:
            break
        turns = openers.get(conversation_id, [])
        # Served: a user message that opens the conversation and an answer right after it.
        if len(turns) < 2 or turns[0].role != "user" or turns[1].role != "assistant":
            picked.skip("no_served_opening")
            continue
        if conversation_id in complained:
            picked.skip("complaint")
            continue
        prompt = turns[0].content.strip()
        key = _norm(prompt)
        if not prompt or len(prompt) > MAX_PROMPT_CHARS:
            picked.skip("length")
            continue
        if key in taken:
            picked.skip("trained_or_evaluated")
            continue
        if near_taken.match(prompt):
            picked.skip("near_trained_or_evaluated")
            continue
        if key in seen:
            picked.skip("duplicate")
            continue
        seen.add(key)
        picked.records.append({"id": f"msg_{turns[0].id}", "prompt": prompt})
        picked.sources.append([f"message:{turns[0].id}"])
    return picked
