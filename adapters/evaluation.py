"""What a version is scored on, and how an answer is scored. Reads only; the run that generates
the answers and stores the result is `adapters.services.evaluation`.

The sets (each capped by EVALUATION_MAX_ITEMS so that a job's evaluation stays a few hundred
greedy generations at most):

* **golden**: the tenant's golden set, the held-out share of its corrections that no job ever
  trains on (training.compiler: chosen by a hash of the feedback id, so the same items stay out
  of every job), plus the records of datasets uploaded for evaluation only. Every version of the
  tenant is scored on the same items, which is what makes two versions comparable.
* **trained**: a sample of the prompts the version itself trained on (memorisation; never the
  measure of learning on its own).
* **general**: general questions with a checkable key word shipped with the platform
  (`adapters/assets/general_knowledge.jsonl`). Only the questions the base model answers right
  count for "kept": a base that never knew an answer cannot forget it.
* **safety**: the prompts of reported answers; the score is how often the model gives the
  reported answer again.

Scoring a reply against a correction:

* **contains-match on key facts**: the correction's words that the prompt and the answer it
  corrected did not already contain (names, numbers, the new content words), at most
  MAX_KEY_TERMS of them, preferring capitalised words and numbers; the reply must contain all
  of them (whole words, case-insensitive). "The capital of Zorbania is Quelltown." corrected
  from "I am not sure." has the key fact `Quelltown`.
* **token overlap**: F1 of the reply's and the correction's word tokens (0-1).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from django.conf import settings

from training.text import STOPWORDS, WORD, words

GENERAL_KNOWLEDGE = Path(__file__).resolve().parent / "assets" / "general_knowledge.jsonl"
MAX_KEY_TERMS = 3
REPEAT_F1 = 0.8  # a reply this close to a reported answer repeats it
DEFAULT_MAX_ITEMS = {"golden": 40, "trained": 30, "general": 40, "safety": 20}

def max_items(name: str) -> int:
    configured = getattr(settings, "EVALUATION_MAX_ITEMS", None) or {}
    return int(configured.get(name, DEFAULT_MAX_ITEMS[name]))


def key_terms(correction: str, *, prompt: str = "", original: str = "") -> list[str]:
    """The correction's key facts: words neither the prompt nor the corrected answer had."""
    known = set(words(prompt)) | set(words(original)) | STOPWORDS
    seen, terms = set(), []
    for raw in WORD.findall(correction or ""):
        low = raw.lower()
        if low in known or low in seen or len(low) < 2 and not low.isdigit():
            continue
        seen.add(low)
        terms.append(raw)
    ranked = sorted(terms, key=lambda t: (not (t[0].isupper() or any(c.isdigit() for c in t)),
                                          terms.index(t)))
    return [t.lower() for t in ranked[:MAX_KEY_TERMS]]


def contains_all(reply: str, terms: list[str]) -> bool:
    """Every term (whole words; `a|b` = either) is in the reply. No terms: False (nothing
    checkable, so nothing is claimed)."""
    if not terms:
        return False
    text = " ".join(words(reply))
    for term in terms:
        options = [o.strip().lower() for o in term.split("|") if o.strip()]
        if not any(re.search(rf"(?<!\w){re.escape(' '.join(words(o)))}(?!\w)", text)
                   for o in options):
            return False
    return True


def token_f1(reply: str, reference: str) -> float:
    got, want = words(reply), words(reference)
    if not got or not want:
        return 0.0
    remaining = list(want)
    common = 0
    for w in got:
        if w in remaining:
            remaining.remove(w)
            common += 1
    if not common:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return round(2 * precision * recall / (precision + recall), 4)


@lru_cache(maxsize=1)
def general_knowledge() -> tuple[dict, ...]:
    rows = [json.loads(line) for line in GENERAL_KNOWLEDGE.read_text().splitlines() if line]
    return tuple(rows)


def general_items() -> list[dict]:
    """Spread over the categories: every k-th row up to the cap."""
    rows = list(general_knowledge())
    cap = max_items("general")
    step = max(1, len(rows) // max(1, cap))
    return [{"id": r["id"], "messages": [{"role": "user", "content": r["question"]}],
             "expected": r["answer"], "terms": [r["key"].lower()]}
            for r in rows[::step][:cap]]


def item_from_record(record: dict) -> dict | None:
    """A compiled SFT or DPO record -> {id, messages (the prompt turns), expected, original,
    terms}; None when it has no user prompt."""
    if "messages" in record and "chosen" not in record:
        turns = [m for m in record["messages"] if isinstance(m, dict)]
        if len(turns) < 2 or turns[-1].get("role") != "assistant":
            return None
        prompt_turns, expected, original = turns[:-1], turns[-1].get("content", ""), ""
    elif "chosen" in record:
        prompt_turns = record.get("messages") or [{"role": "user",
                                                   "content": record.get("prompt", "")}]
        expected, original = record.get("chosen", ""), record.get("rejected", "")
    else:
        return None
    users = [m.get("content", "") for m in prompt_turns if m.get("role") == "user"]
    if not users:
        return None
    return {"id": str(record.get("id", "")), "messages": prompt_turns, "expected": expected,
            "original": original,
            "terms": key_terms(expected, prompt=users[-1], original=original)}


def golden_items(tenant) -> list[dict]:
    """The tenant's golden set as it stands now: the compiler's held-out SFT examples, then the
    records of its evaluation-only datasets (`data_use.evaluation_only`)."""
    from feedback.selectors import dataset_records_for_evaluation
    from training.compiler import training_data_compile

    compiled = training_data_compile(tenant=tenant, method="sft")
    items = [item_from_record(r) for r in compiled.eval]
    for record in dataset_records_for_evaluation(tenant=tenant)[:max_items("golden")]:
        data = record.data if isinstance(record.data, dict) else {}
        items.append(item_from_record({**data, "id": f"ds_{record.pk}"}))
    return [i for i in items if i is not None and i["terms"]][:max_items("golden")]


def trained_items(version) -> list[dict]:
    """A sample of what the version trained on (its job's snapshot), spread over the file."""
    from django.core.files.storage import default_storage

    job = version.job
    prefix = getattr(job, "snapshot_prefix", "") if job is not None else ""
    if not prefix or not default_storage.exists(f"{prefix}/train.jsonl"):
        return []
    with default_storage.open(f"{prefix}/train.jsonl", "rb") as handle:
        records = [json.loads(line) for line in handle.read().decode().splitlines() if line]
    items = [i for i in (item_from_record(r) for r in records) if i is not None and i["terms"]]
    cap = max_items("trained")
    step = max(1, len(items) // max(1, cap))
    return items[::step][:cap]


def safety_items(tenant) -> list[dict]:
    """The prompts of reported assistant answers (history up to the answer), newest first."""
    from feedback.models import Feedback, Message

    reported = (Feedback.objects.filter(tenant=tenant, type=Feedback.REPORT, is_latest=True)
                .exclude(message=None).select_related("message").order_by("-created_at"))
    items, seen = [], set()
    for fb in reported:
        message = fb.message
        if message.role != "assistant" or message.id in seen:
            continue
        seen.add(message.id)
        before = list(Message.objects.filter(conversation_id=message.conversation_id,
                                             position__lt=message.position)
                      .order_by("position", "id"))
        if not any(m.role == "user" for m in before):
            continue
        items.append({"id": f"msg_{message.id}",
                      "messages": [{"role": m.role, "content": m.content} for m in before],
                      "expected": "", "original": message.content, "terms": []})
        if len(items) >= max_items("safety"):
            break
    return items
