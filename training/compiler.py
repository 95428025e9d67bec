"""The feedback compiler: a tenant's feedback, logged conversations and datasets -> SFT / DPO data.

What becomes what (all text is read as stored, i.e. already PII-redacted by the feedback app):
- correction on an assistant message -> one SFT example (the conversation up to the corrected
  message, then the correction as the assistant turn) and one DPO pair (chosen: the correction,
  rejected: the answer it corrected). Two corrections of the same prompt: the newest one wins.
- thumbs_up and thumbs_down on answers to the same prompt (same conversation history) -> DPO pairs
  (every up answer against every down answer with different text, at most MAX_PAIRS_PER_PROMPT).
- rating r (1-5) on an answer -> weight r/5 on the SFT example of that answer when r >= 4 (a rated
  good answer is worth learning, a 5 as much as a correction, a 4 a bit less); lower ratings do not
  make examples (the user did not say what was better). Corrections weigh 1.0.
- report on a message -> that message and everything it would have fed are excluded: feedback on
  it, and any example whose prompt history contains it.
- dataset records of datasets with `allow_private_training` (and not `evaluation_only`, those are
  only scored, with the golden set): conversations -> SFT (weight 1.0),
  preferences -> DPO.
KTO rows (`{prompt, completion, label}`, TRL's unpaired shape; prompt = the turns before the
answer, completion = the answer as one assistant message):
- correction -> a desirable row of the correction and an undesirable row of the answer it
  corrected (when the texts differ);
- thumbs_up -> desirable, thumbs_down -> undesirable (every thumb, paired or lone);
- rating >= 4 -> desirable, rating <= 2 -> undesirable, 3 trains nothing; thumbs and ratings on
  an answer that was corrected are left to the correction's rows;
- dataset conversations -> desirable rows of their last answer; dataset preferences -> a
  desirable row of `chosen` and an undesirable row of `rejected`.
A KTO row has its feedback's (or record's) id like the SFT example and DPO pair of the same
feedback, so the golden set holds out the same feedback in every method. The trainer weighs
desirable and undesirable rows (training.trainer.config.kto_weights) so that their weighted
ratio stays in the range the KTO authors recommend.

Only the latest reaction per user and message (`is_latest`) is used, and only feedback without an
`excluded_reason`. Exact duplicates are merged (highest weight, union of sources).

Held-out split, the tenant's golden set: an example is held out when the sha256 of its id (the
feedback or dataset record it came from, `fb_<id>` / `ds_<id>`) falls in the lowest
GOLDEN_FRACTION of the hash range. The choice depends only on that id, so the same items stay
out of every job of the tenant, whatever else arrives later, and every version is scored on
them (adapters' evaluation). A correction's SFT example and its DPO pair share the id, so both
methods hold out the same items. When a set of >= MIN_EXAMPLES_FOR_EVAL examples has no golden
item yet, the one with the lowest hash is held out so that the job still has an eval loss (an SFT
or DPO one: a KTO held-out loss needs two rows, see training.trainer.run); that single item may
train in a later, larger job (the only case where a held-out item is not stable).

DPO prompts: a pair's `prompt` is the last user message before the answer; when the conversation
had earlier turns, the record also carries them as `messages` (the history, ending with that user
message), and the trainer renders that history through the model's chat template as the prompt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from feedback.models import Dataset, DatasetRecord, Feedback, Message
from training.tokens import record_tokens

GOLDEN_FRACTION = 0.10
MIN_EXAMPLES_FOR_EVAL = 10
MAX_PAIRS_PER_PROMPT = 16
RATING_MIN_FOR_EXAMPLE = 4
RATING_MAX_UNDESIRABLE = 2  # KTO: ratings up to this are undesirable, from the above desirable


@dataclass
class _Example:
    key: str
    record: dict[str, Any]
    sources: set[str] = field(default_factory=set)
    created_at: Any = None


@dataclass
class CompiledData:
    """The result of compiling one tenant's data for one method."""

    method: str
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    sft_examples: int
    dpo_pairs: int
    token_count: int
    feedback_ids: list[int]
    message_ids: list[int]
    dataset_record_ids: list[int]
    excluded: dict[str, int]
    # Per file ("train", "eval"), per line: the rows the example came from ("feedback:12", ...).
    # Written as the snapshot's sources.json so erasure can rewrite it (training.snapshot_scrub).
    record_sources: dict[str, list[list[str]]] = field(default_factory=dict)
    # KTO rows of the whole set (train + eval), by label.
    kto_desirable: int = 0
    kto_undesirable: int = 0

    @property
    def kto_examples(self) -> int:
        return self.kto_desirable + self.kto_undesirable

    @property
    def total(self) -> int:
        return len(self.train) + len(self.eval)


def _sha(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _turns(messages: list[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in messages]


def _usable_feedback(tenant):
    """Feedback that may reach training: the feedback app's selector when it has one."""
    try:
        from feedback import selectors as feedback_selectors
    except ImportError:  # pragma: no cover - depends on the feedback app's progress
        feedback_selectors = None
    selector = getattr(feedback_selectors, "feedback_usable_for_training", None)
    if selector is not None:
        return selector(tenant=tenant)
    return Feedback.objects.filter(tenant=tenant, is_latest=True, excluded_reason="")


def _training_records(tenant):
    """Dataset records that may reach training (datasets with allow_private_training)."""
    try:
        from feedback import selectors as feedback_selectors
    except ImportError:  # pragma: no cover
        feedback_selectors = None
    selector = getattr(feedback_selectors, "dataset_records_for_training", None)
    if selector is not None:
        records = selector(tenant=tenant)
    else:  # pragma: no cover - same rule without the selector
        records = DatasetRecord.objects.filter(tenant=tenant, dataset__tenant=tenant,
                                               dataset__allow_private_training=True,
                                               dataset__evaluation_only=False)
    return records.select_related("dataset").order_by("dataset_id", "id")


@dataclass
class _Collector:
    """What compiling gathers: SFT examples and DPO pairs by dedup key, thumbs by prompt, and
    why rows were left out."""

    sft: dict[str, _Example] = field(default_factory=dict)
    dpo: dict[str, _Example] = field(default_factory=dict)
    kto: dict[str, _Example] = field(default_factory=dict)
    thumbs: dict[str, dict] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.excluded[reason] = self.excluded.get(reason, 0) + 1

    def add(self, store: dict[str, _Example], key: str, record: dict, sources: set[str],
            created_at, *, newest_wins: bool = False) -> None:
        """Add an example; a duplicate merges (highest weight, union of sources), or with
        `newest_wins` (corrections) replaces the older record."""
        current = store.get(key)
        if current is None:
            store[key] = _Example(key=key, record=record, sources=set(sources),
                                  created_at=created_at)
            return
        if newest_wins and record != current.record:
            self.skip("superseded_correction")
            current.record = record
        elif "weight" in record:
            current.record["weight"] = max(current.record.get("weight", 1.0), record["weight"])
        current.sources |= sources


def training_data_compile(*, tenant, method: str) -> CompiledData:
    """Build the SFT, DPO or KTO set of a tenant (counts of all, for readiness). Reads only."""
    collected = _Collector()
    feedback = list(
        _usable_feedback(tenant).exclude(message=None).select_related("message")
        .order_by("created_at", "id")
    )
    feedback = _per_user_capped(collected, feedback, tenant)
    reported_ids = set(
        Feedback.objects.filter(tenant=tenant, type=Feedback.REPORT, is_latest=True)
        .exclude(message=None).values_list("message_id", flat=True)
    )
    conversation_ids = {f.message.conversation_id for f in feedback}
    history: dict[int, list[Message]] = {}
    for message in Message.objects.filter(conversation_id__in=conversation_ids).order_by(
        "conversation_id", "position", "id"
    ):
        history.setdefault(message.conversation_id, []).append(message)
    # A rated answer that was also corrected: the correction is what to learn, not the answer.
    corrected = {fb.message_id for fb in feedback if fb.type == Feedback.CORRECTION}
    for fb in feedback:
        _collect_feedback(collected, fb, history=history, reported_ids=reported_ids,
                          corrected=corrected)
    _collect_thumb_pairs(collected)
    _collect_dataset_records(collected, tenant)
    return _compiled(collected, method)


def _per_user_capped(c: _Collector, feedback: list[Feedback], tenant) -> list[Feedback]:
    """At most the tenant's `max_examples_per_user` rows of one end user (`user_id`; rows
    without one are not capped), the user's newest kept: one user cannot steer the model."""
    from feedback.selectors import feedback_settings_get

    cap = feedback_settings_get(tenant=tenant).max_examples_per_user
    if not cap:
        return feedback
    seen: dict[str, int] = {}
    kept = []
    for fb in reversed(feedback):  # newest first
        if fb.user_id:
            seen[fb.user_id] = seen.get(fb.user_id, 0) + 1
            if seen[fb.user_id] > cap:
                c.skip("per_user_cap")
                continue
        kept.append(fb)
    kept.reverse()
    return kept


def _collect_feedback(c: _Collector, fb: Feedback, *, history: dict[int, list[Message]],
                      reported_ids: set[int], corrected: set[int]) -> None:
    """One feedback row -> an SFT example, a DPO pair, a thumb waiting for its pair, or a
    reason it was skipped."""
    target = fb.message
    if fb.type == Feedback.REPORT:
        return
    if target.role != "assistant":
        c.skip("not_assistant_message")
        return
    before = [m for m in history.get(target.conversation_id, [])
              if m.position < target.position]
    if target.id in reported_ids or any(m.id in reported_ids for m in before):
        c.skip("reported")
        return
    users = [m for m in before if m.role == "user"]
    if not users:
        c.skip("no_prompt")
        return
    prompt_turns = _turns(before)
    prompt_key = _sha(prompt_turns)
    sources = {f"feedback:{fb.id}"} | {f"message:{m.id}" for m in before + [target]}
    if fb.type == Feedback.CORRECTION:
        text = fb.correction.strip()
        if not text:
            c.skip("empty_correction")
            return
        c.add(c.sft, "p:" + prompt_key,
              {"messages": prompt_turns + [{"role": "assistant", "content": text}],
               "weight": 1.0}, sources, fb.created_at, newest_wins=True)
        if text != target.content.strip():
            c.add(c.dpo, "p:" + prompt_key,
                  _pair(prompt_turns, users[-1].content, text, target.content),
                  sources, fb.created_at, newest_wins=True)
            _add_kto(c, prompt_turns, target.content, False, sources, fb.created_at,
                     key="p:" + prompt_key + ":corrected")
        _add_kto(c, prompt_turns, text, True, sources, fb.created_at,
                 key="p:" + prompt_key + ":correction")
    elif fb.type in (Feedback.THUMBS_UP, Feedback.THUMBS_DOWN):
        side = "up" if fb.type == Feedback.THUMBS_UP else "down"
        c.thumbs.setdefault(prompt_key, {"up": [], "down": [], "prompt": users[-1].content,
                                         "history": prompt_turns})
        c.thumbs[prompt_key][side].append((target, fb, sources))
        if target.id not in corrected:
            _add_kto(c, prompt_turns, target.content, side == "up", sources, fb.created_at)
    elif fb.type == Feedback.RATING:
        if fb.rating is not None and target.id not in corrected and (
                fb.rating >= RATING_MIN_FOR_EXAMPLE or fb.rating <= RATING_MAX_UNDESIRABLE):
            _add_kto(c, prompt_turns, target.content, fb.rating >= RATING_MIN_FOR_EXAMPLE,
                     sources, fb.created_at)
        if fb.rating is None or fb.rating < RATING_MIN_FOR_EXAMPLE:
            c.skip("low_rating")
            return
        if target.id in corrected:
            c.skip("rated_answer_corrected")
            return
        c.add(c.sft, "r:" + _sha(prompt_turns + [target.content]),
              {"messages": prompt_turns + [{"role": "assistant", "content": target.content}],
               "weight": round(fb.rating / 5, 3)}, sources, fb.created_at)


def _add_kto(c: _Collector, prompt_turns: list[dict], answer: str, desirable: bool,
             sources: set[str], created_at, *, key: str | None = None) -> None:
    """One KTO row; the same answer with the same label again merges (union of sources).
    `key` (corrections) makes a newer correction of the prompt replace the older row."""
    if not answer.strip():
        return
    record = {"prompt": prompt_turns, "completion": [{"role": "assistant", "content": answer}],
              "label": desirable}
    if key is None:
        c.add(c.kto, "k:" + _sha(record), record, sources, created_at)
    else:
        current = c.kto.get(key)
        if current is not None and record != current.record:
            current.record = record  # (the SFT side already counted the superseded correction)
        c.add(c.kto, key, record, sources, created_at)


def _pair(history: list[dict], prompt: str, chosen: str, rejected: str) -> dict:
    """A DPO record; multi-turn histories travel as `messages` (the trainer's DPO shape)."""
    record = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    if len(history) > 1:
        record["messages"] = history
    return record


def _collect_thumb_pairs(c: _Collector) -> None:
    """Every up answer against every down answer of the same prompt (different text), at most
    MAX_PAIRS_PER_PROMPT pairs a prompt."""
    for group in c.thumbs.values():
        pairs = 0
        for up_msg, up_fb, up_sources in group["up"]:
            for down_msg, down_fb, down_sources in group["down"]:
                if up_msg.content.strip() == down_msg.content.strip():
                    continue
                if pairs >= MAX_PAIRS_PER_PROMPT:
                    c.skip("pair_limit")
                    continue
                record = _pair(group["history"], group["prompt"], up_msg.content,
                               down_msg.content)
                c.add(c.dpo, "t:" + _sha(record), record, up_sources | down_sources,
                      max(up_fb.created_at, down_fb.created_at))
                pairs += 1


def _collect_dataset_records(c: _Collector, tenant) -> None:
    """Dataset conversations -> SFT examples, dataset preferences -> DPO pairs."""
    for rec in _training_records(tenant):
        data = rec.data if isinstance(rec.data, dict) else {}
        source = {f"dataset_record:{rec.id}"}
        if rec.dataset.type == Dataset.CONVERSATIONS:
            turns = [{"role": m.get("role"), "content": m.get("content")}
                     for m in data.get("messages", []) if isinstance(m, dict)]
            if not turns or turns[-1]["role"] != "assistant":
                c.skip("dataset_record_without_answer")
                continue
            c.add(c.sft, "d:" + _sha(turns), {"messages": turns, "weight": 1.0}, source,
                  rec.created_at)
            if turns[:-1] and turns[-2]["role"] == "user":
                _add_kto(c, turns[:-1], turns[-1]["content"], True, source, rec.created_at)
        else:
            record = {k: data.get(k) for k in ("prompt", "chosen", "rejected")}
            if not all(isinstance(v, str) and v.strip() for v in record.values()) or \
                    record["chosen"] == record["rejected"]:
                c.skip("dataset_record_invalid")
                continue
            if isinstance(data.get("messages"), list) and len(data["messages"]) > 1:
                record["messages"] = data["messages"]  # a multi-turn input (OpenAI's format)
            c.add(c.dpo, "t:" + _sha(record), record, source, rec.created_at)
            prompt_turns = record.get("messages") or [{"role": "user", "content": record["prompt"]}]
            _add_kto(c, prompt_turns, record["chosen"], True, source, rec.created_at)
            _add_kto(c, prompt_turns, record["rejected"], False, source, rec.created_at)


def golden_rank(example_id: str) -> float:
    """Where an example id falls in [0, 1): below GOLDEN_FRACTION it is in the golden set."""
    digest = hashlib.sha256(f"golden:{example_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _compiled(c: _Collector, method: str) -> CompiledData:
    """The method's examples, split train / golden eval by the hash of their ids (see the module
    docstring)."""
    chosen = {"sft": c.sft, "kto": c.kto}.get(method, c.dpo)
    examples = list(chosen.values())
    for ex in examples:
        ex.record["id"] = _example_id(ex.sources)
    examples.sort(key=lambda ex: (golden_rank(ex.record["id"]), _sha(ex.record)))
    n_eval = sum(1 for ex in examples if golden_rank(ex.record["id"]) < GOLDEN_FRACTION)
    if n_eval == 0 and len(examples) >= MIN_EXAMPLES_FOR_EVAL:
        n_eval = 1
    eval_set = [ex.record for ex in examples[:n_eval]]
    eval_set.sort(key=lambda r: r["id"])
    train_set = [ex.record for ex in examples[n_eval:]]
    train_set.sort(key=lambda r: r["id"])

    used = set().union(*(ex.sources for ex in examples)) if examples else set()
    sources_of = {id(ex.record): sorted(ex.sources) for ex in examples}
    return CompiledData(
        method=method,
        train=train_set,
        eval=eval_set,
        sft_examples=len(c.sft),
        dpo_pairs=len(c.dpo),
        token_count=sum(record_tokens(r) for r in train_set),
        feedback_ids=_ids(used, "feedback"),
        message_ids=_ids(used, "message"),
        dataset_record_ids=_ids(used, "dataset_record"),
        excluded=c.excluded,
        record_sources={"train": [sources_of[id(r)] for r in train_set],
                        "eval": [sources_of[id(r)] for r in eval_set]},
        kto_desirable=sum(1 for ex in c.kto.values() if ex.record["label"]),
        kto_undesirable=sum(1 for ex in c.kto.values() if not ex.record["label"]),
    )


def kto_balance(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Desirable / undesirable counts of KTO rows and the weights the trainer gives them
    (training.trainer.config.kto_weights), with the weighted ratio they make."""
    from training.trainer.config import kto_weights

    desirable = sum(1 for r in rows if r["label"])
    undesirable = len(rows) - desirable
    dw, uw = kto_weights(desirable, undesirable)
    ratio = (dw * desirable) / (uw * undesirable) if desirable and undesirable else None
    return {"desirable": desirable, "undesirable": undesirable, "desirable_weight": dw,
            "undesirable_weight": uw, "weighted_ratio": round(ratio, 4) if ratio else None}


def _ids(sources: set[str], kind: str) -> list[int]:
    return sorted(int(s.split(":", 1)[1]) for s in sources if s.split(":", 1)[0] == kind)


def _example_id(sources: set[str]) -> str:
    """A stable, readable id: the feedback (or dataset record) it came from."""
    for kind, prefix in (("feedback", "fb_"), ("dataset_record", "ds_")):
        ids = _ids(sources, kind)
        if ids:
            return f"{prefix}{ids[0]}"
    return "ex_" + _sha(sorted(sources))[:12]


__all__ = [
    "CompiledData",
    "GOLDEN_FRACTION",
    "golden_rank",
    "kto_balance",
    "training_data_compile",
]
