"""Reading the compiled snapshot (train/eval JSONL) with errors that name the file and line.

The platform's compiler writes these files, but tenants' content flows into them: a bad record
must fail the job as `bad_data` with a line number, before any model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.trainer.chat import ChatTemplateError, Turn, assistant_turn, split_last_answer
from training.trainer.errors import DataError

ROLES = ("system", "user", "assistant")
MAX_WEIGHT = 100.0


@dataclass
class LoadedData:
    """Validated records of one file, plus what the manifest records about the file."""

    path: str
    records: list[dict[str, Any]]
    sha256: str
    size: int
    dropped: int = 0
    notes: list[str] = field(default_factory=list)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_jsonl(path: str | Path, method: str) -> LoadedData:
    """Validate every line of an SFT or DPO file; raises DataError at the first bad line."""
    path = Path(path)
    name = path.name
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path} does not exist") from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{name} line {line_no}: not valid UTF-8") from exc

    validate = {"sft": _validate_sft, "kto": _validate_kto}.get(method, _validate_dpo)
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{name} line {line_no}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise DataError(f"{name} line {line_no}: expected a JSON object")
        problem = validate(record)
        if problem:
            raise DataError(f"{name} line {line_no}: {problem}")
        records.append(record)
    if not records:
        raise DataError(f"{name} has no records")
    return LoadedData(
        path=str(path), records=records, sha256=hashlib.sha256(raw).hexdigest(), size=len(raw)
    )


def _validate_sft(record: dict[str, Any]) -> str | None:
    problem = _validate_messages(record.get("messages"))
    if problem:
        return problem
    if not any(m["role"] == "assistant" for m in record["messages"]):
        return "no assistant message to learn from"
    weight = record.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        return f'"weight" must be a number, got {json.dumps(weight)}'
    if not 0 < weight <= MAX_WEIGHT:
        return f'"weight" must be in (0, {MAX_WEIGHT:g}], got {weight}'
    if "anchor" in record and not isinstance(record["anchor"], bool):
        return f'"anchor" must be true or false, got {json.dumps(record["anchor"])}'
    return _validate_id(record)


def _validate_messages(messages: Any, key: str = "messages") -> str | None:
    if not isinstance(messages, list) or not messages:
        return f'"{key}" must be a non-empty list'
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"{key}[{index}] must be an object"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return f"{key}[{index}].role must be one of {', '.join(ROLES)}, got {role!r}"
        if not isinstance(content, str) or not content.strip():
            return f"{key}[{index}].content must be a non-empty string"
    return None


def _validate_dpo(record: dict[str, Any]) -> str | None:
    """A pair: `chosen` and `rejected` answers to a prompt.

    The prompt is `messages` (the conversation before the answers, ending with a user turn) when
    the record has it, else the single user message `prompt`; with both, `messages` is used.
    """
    if "messages" in record:
        problem = _validate_messages(record["messages"])
        if problem:
            return problem
        if record["messages"][-1]["role"] != "user":
            return '"messages" must end with a user message (the turn the answers reply to)'
    keys = ("chosen", "rejected") if "messages" in record else ("prompt", "chosen", "rejected")
    if "prompt" in record and "prompt" not in keys:
        keys = ("prompt", *keys)
    for key in keys:
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            return f'"{key}" must be a non-empty string'
    if record["chosen"] == record["rejected"]:
        return '"chosen" and "rejected" are identical'
    return _validate_id(record)


def _validate_kto(record: dict[str, Any]) -> str | None:
    """An unpaired example, TRL's conversational KTO shape: `prompt` (the conversation before the
    answer, ending with a user turn), `completion` (one assistant message) and `label` (true:
    desirable, false: undesirable)."""
    problem = _validate_messages(record.get("prompt"), "prompt")
    if problem:
        return problem
    if record["prompt"][-1]["role"] != "user":
        return '"prompt" must end with a user message (the turn the answer replies to)'
    completion = record.get("completion")
    problem = _validate_messages(completion, "completion")
    if problem:
        return problem
    if len(completion) != 1 or completion[0]["role"] != "assistant":
        return '"completion" must be one assistant message'
    if not isinstance(record.get("label"), bool):
        return f'"label" must be true or false, got {json.dumps(record.get("label"))}'
    return _validate_id(record)


def _validate_id(record: dict[str, Any]) -> str | None:
    if "id" in record and not isinstance(record["id"], str | int):
        return '"id" must be a string'
    return None


def tokenize_sft(tokenizer: Any, data: LoadedData, max_length: int) -> list[dict[str, Any]]:
    """Each record as token ids with its loss mask (`assistant_masks`), truncated to `max_length`.

    The mask comes from the model's own chat template (see `training.trainer.chat`): it covers the
    LAST assistant turn's content and end-of-turn marker, nothing of the prompt; earlier turns
    are context. Done here rather than inside TRL so that padding-free batches (where TRL does not
    truncate) are bounded too, and so an example truncated down to no trained token is dropped and
    counted instead of silently training on nothing.
    """
    rows = []
    for record in data.records:
        history, answer = split_last_answer(record["messages"])
        turn = _turn(tokenizer, data, record, history, answer)
        input_ids = (turn.prompt_ids + turn.answer_ids)[:max_length]
        mask = ([0] * len(turn.prompt_ids) + [1] * len(turn.answer_ids))[:max_length]
        if 1 not in mask:
            data.dropped += 1
            continue
        rows.append(
            {
                "input_ids": input_ids,
                "assistant_masks": mask,
                "weight": float(record.get("weight", 1.0)),
                "anchor": record.get("anchor") is True,
            }
        )
    return _finish(data, rows, max_length)


def dpo_rows(tokenizer: Any, data: LoadedData, max_length: int) -> list[dict[str, Any]]:
    """Preference pairs tokenized through the chat template, in TRL's tokenized DPO columns.

    The prompt is the record's conversation (`messages`) or its single `prompt` as a user turn;
    chosen and rejected are scored on exactly what SFT trains (content + end-of-turn marker). TRL's
    collator keeps the first `max_length` tokens of prompt + answer, so a pair whose prompt alone
    fills it has nothing to compare and is dropped and counted.
    """
    rows = []
    for record in data.records:
        history = record.get("messages") or [{"role": "user", "content": record["prompt"]}]
        history = [{"role": m["role"], "content": m["content"]} for m in history]
        chosen = _turn(tokenizer, data, record, history, record["chosen"])
        rejected = _turn(tokenizer, data, record, history, record["rejected"])
        if len(chosen.prompt_ids) >= max_length:
            data.dropped += 1
            continue
        rows.append(
            {
                "prompt_ids": chosen.prompt_ids,
                "chosen_ids": chosen.answer_ids,
                "rejected_ids": rejected.answer_ids,
            }
        )
    return _finish(data, rows, max_length)


def kto_rows(tokenizer: Any, data: LoadedData, max_length: int) -> list[dict[str, Any]]:
    """Unpaired examples tokenized through the chat template, in TRL's tokenized KTO columns.

    Same split as SFT and DPO (training.trainer.chat): the prompt is what the model is served,
    the completion the answer's content + end-of-turn marker, so the KTO log-probabilities cover
    exactly the tokens SFT trains, with any template, and not the template's text after the
    marker (TRL's own conversational tokenization keeps e.g. ChatML's trailing newline). TRL's
    collator keeps the first `max_length` tokens; an example whose prompt alone fills them has
    nothing to score and is dropped and counted.
    """
    rows = []
    for record in data.records:
        history = [{"role": m["role"], "content": m["content"]} for m in record["prompt"]]
        turn = _turn(tokenizer, data, record, history, record["completion"][0]["content"])
        if len(turn.prompt_ids) >= max_length:
            data.dropped += 1
            continue
        rows.append(
            {
                "prompt_ids": turn.prompt_ids,
                "completion_ids": turn.answer_ids,
                "label": bool(record["label"]),
            }
        )
    return _finish(data, rows, max_length)


def _turn(
    tokenizer: Any,
    data: LoadedData,
    record: dict[str, Any],
    history: list[dict[str, str]],
    answer: str,
) -> Turn:
    try:
        return assistant_turn(tokenizer, history, answer)
    except ChatTemplateError as exc:
        raise DataError(f"{Path(data.path).name} record {record.get('id', '?')}: {exc}") from exc


def _finish(data: LoadedData, rows: list[dict[str, Any]], max_length: int) -> list[dict[str, Any]]:
    name = Path(data.path).name
    if data.dropped:
        data.notes.append(
            f"{data.dropped} example(s) of {name} had no assistant token within "
            f"max_length={max_length} and were dropped"
        )
    if not rows:
        raise DataError(f"{name}: no example keeps an assistant token within max_length")
    return rows
