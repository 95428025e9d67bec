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

    validate = _validate_sft if method == "sft" else _validate_dpo
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
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        return '"messages" must be a non-empty list'
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{index}] must be an object"
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            return f"messages[{index}].role must be one of {', '.join(ROLES)}, got {role!r}"
        if not isinstance(content, str) or not content.strip():
            return f"messages[{index}].content must be a non-empty string"
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant message to learn from"
    weight = record.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        return f'"weight" must be a number, got {json.dumps(weight)}'
    if not 0 < weight <= MAX_WEIGHT:
        return f'"weight" must be in (0, {MAX_WEIGHT:g}], got {weight}'
    return _validate_id(record)


def _validate_dpo(record: dict[str, Any]) -> str | None:
    for key in ("prompt", "chosen", "rejected"):
        value = record.get(key)
        if not isinstance(value, str) or not value.strip():
            return f'"{key}" must be a non-empty string'
    if record["chosen"] == record["rejected"]:
        return '"chosen" and "rejected" are identical'
    return _validate_id(record)


def _validate_id(record: dict[str, Any]) -> str | None:
    if "id" in record and not isinstance(record["id"], str | int):
        return '"id" must be a string'
    return None


def tokenize_sft(tokenizer: Any, data: LoadedData, max_length: int) -> list[dict[str, Any]]:
    """Chat-template each record with its assistant mask, truncated to `max_length`.

    Done here rather than inside TRL so that padding-free batches (where TRL does not truncate) are
    bounded too, and so an example truncated down to no assistant token is dropped and counted
    instead of silently training on nothing.
    """
    rows = []
    for record in data.records:
        try:
            encoded = tokenizer.apply_chat_template(
                record["messages"], return_dict=True, return_assistant_tokens_mask=True
            )
        except Exception as exc:  # noqa: BLE001 - the template is the model's; name the record
            raise DataError(
                f"{Path(data.path).name} record {record.get('id', '?')}: "
                f"chat template failed: {exc}"
            ) from exc
        input_ids = list(encoded["input_ids"])[:max_length]
        mask = list(encoded["assistant_masks"])[:max_length]
        if 1 not in mask:
            data.dropped += 1
            continue
        rows.append(
            {
                "input_ids": input_ids,
                "assistant_masks": mask,
                "weight": float(record.get("weight", 1.0)),
            }
        )
    if data.dropped:
        data.notes.append(
            f"{data.dropped} example(s) of {Path(data.path).name} had no assistant token within "
            f"max_length={max_length} and were dropped"
        )
    if not rows:
        raise DataError(
            f"{Path(data.path).name}: no example keeps an assistant token within max_length"
        )
    return rows


def dpo_rows(data: LoadedData) -> list[dict[str, Any]]:
    """Preference pairs as conversations, so TRL renders them through the chat template."""
    return [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in data.records
    ]
