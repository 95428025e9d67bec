"""Record-level validation of training data, before anything is stored.

Validators return a list of `(field, message)` pairs with paths relative to the record
(`messages[1].role`); the caller prefixes the record's locator (`conversations[3].` for JSON
bodies, `line 7: ` for JSONL files), so every error names the record and the field. They never
stop at the first problem: a client fixing a file wants the whole list at once.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

ROLES = ("system", "user", "assistant")
MAX_CONTENT_CHARS = 32_000
MAX_MESSAGES_PER_RECORD = 200
MAX_RECORD_CHARS = 400_000
MAX_PREFERENCE_FIELD_CHARS = 32_000
MAX_JSONL_LINE_BYTES = 1_048_576

FieldError = tuple[str, str]


# Lone UTF-16 surrogates (a JSON "\ud800" without its pair) are not text: encoding them raises.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def text_field_errors(value: Any, field: str, *, max_chars: int) -> list[FieldError]:
    """A required, non-empty string within its size limit."""
    if value is None:
        return [(field, "This field is required.")]
    if not isinstance(value, str):
        return [(field, f"Must be a string, not {type(value).__name__}.")]
    if not value.strip():
        return [(field, "Must not be empty.")]
    if len(value) > max_chars:
        return [(field, f"Too long: {len(value)} characters, at most {max_chars}.")]
    if "\x00" in value:  # PostgreSQL refuses NUL in text and jsonb: a 400 here, not a 500 later
        return [(field, "Null characters (U+0000) are not allowed.")]
    if _LONE_SURROGATE.search(value):  # a JSONL line's "\ud800": not text, cannot be encoded
        return [(field, "Unpaired surrogates (U+D800 to U+DFFF) are not valid text.")]
    return []


def conversation_record_errors(record: Any) -> list[FieldError]:
    """SFT conversation: an optional system turn first, then user/assistant alternating, starting
    with a user turn and ending with an assistant turn (the turn SFT learns to produce)."""
    if _conversation_plainly_valid(record):
        return []
    if not isinstance(record, dict):
        return [("", f"A record must be an object with 'messages', not {type(record).__name__}.")]
    messages = record.get("messages")
    if messages is None:
        return [("messages", "This field is required.")]
    if not isinstance(messages, list):
        return [("messages", "Must be a list of {role, content} objects.")]
    if len(messages) > MAX_MESSAGES_PER_RECORD:
        return [("messages", f"Too many messages: {len(messages)}, at most "
                             f"{MAX_MESSAGES_PER_RECORD}.")]
    errors: list[FieldError] = []
    roles: list[str | None] = []
    total_chars = 0
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        if not isinstance(message, dict):
            errors.append((path, "Must be an object with 'role' and 'content'."))
            roles.append(None)
            continue
        role = message.get("role")
        if role is None:
            errors.append((f"{path}.role", "This field is required."))
            roles.append(None)
        elif role not in ROLES:
            errors.append((f"{path}.role", f"Unknown role {role!r}: expected one of "
                                           f"{', '.join(ROLES)}."))
            roles.append(None)
        else:
            roles.append(role)
        errors.extend(text_field_errors(message.get("content"), f"{path}.content",
                                        max_chars=MAX_CONTENT_CHARS))
        if isinstance(message.get("content"), str):
            total_chars += len(message["content"])
    if total_chars > MAX_RECORD_CHARS:
        errors.append(("messages", f"Record too large: {total_chars} characters of content, at "
                                   f"most {MAX_RECORD_CHARS}."))
    errors.extend(_role_order_errors(roles))
    return errors


def _conversation_plainly_valid(record: Any) -> bool:
    """True only for a record the checks below would pass: one tight loop for the common case
    (plain JSON objects, well-formed turns), without the per-turn paths and lists the full check
    builds to name problems. Anything unusual (including subclasses) gets the full check."""
    if type(record) is not dict:
        return False
    messages = record.get("messages")
    if type(messages) is not list or len(messages) > MAX_MESSAGES_PER_RECORD:
        return False
    start = 1 if messages and type(messages[0]) is dict and messages[0].get("role") == "system" \
        else 0
    if len(messages) - start < 2:
        return False
    expected = "user"
    total_chars = 0
    for i, message in enumerate(messages):
        if type(message) is not dict:
            return False
        content = message.get("content")
        if (type(content) is not str or len(content) > MAX_CONTENT_CHARS or "\x00" in content
                or not content.strip() or _LONE_SURROGATE.search(content)):
            return False
        total_chars += len(content)
        if i < start:
            continue  # the system turn, checked above
        if message.get("role") != expected:
            return False
        expected = "assistant" if expected == "user" else "user"
    return expected == "user" and total_chars <= MAX_RECORD_CHARS  # ended on an assistant turn


def _role_order_errors(roles: list[str | None]) -> list[FieldError]:
    if not roles:
        return [("messages", "At least one user turn and one assistant turn are required.")]
    errors: list[FieldError] = []
    start = 1 if roles[0] == "system" else 0
    expected = "user"
    for i in range(start, len(roles)):
        role = roles[i]
        if role is None:  # already reported; resynchronise on the next known role
            expected = "user" if expected == "assistant" else "assistant"
            continue
        if role == "system":
            errors.append((f"messages[{i}].role", "A system turn is only allowed first."))
        elif role != expected:
            errors.append((f"messages[{i}].role",
                           f"Expected {expected!r} here (turns alternate user/assistant after an "
                           f"optional system turn), got {role!r}."))
        expected = "user" if expected == "assistant" else "assistant"
    conversational = len(roles) - start
    if conversational < 2:
        errors.append(("messages", "At least one user turn and one assistant turn are required."))
    elif roles[-1] is not None and roles[-1] != "assistant":
        errors.append((f"messages[{len(roles) - 1}].role",
                       "The conversation must end with an assistant turn (the answer SFT learns)."))
    return errors


def preference_record_errors(record: Any) -> list[FieldError]:
    """DPO pair: prompt, chosen, rejected present, non-empty, within limits, chosen != rejected."""
    if not isinstance(record, dict):
        return [("", "A record must be an object with 'prompt', 'chosen' and 'rejected', "
                     f"not {type(record).__name__}.")]
    errors: list[FieldError] = []
    for name in ("prompt", "chosen", "rejected"):
        errors.extend(text_field_errors(record.get(name), name,
                                        max_chars=MAX_PREFERENCE_FIELD_CHARS))
    if not errors and record["chosen"].strip() == record["rejected"].strip():
        errors.append(("rejected", "'chosen' and 'rejected' are identical: a preference pair "
                                   "needs two different answers."))
    return errors


def conversation_record_normalize(record: dict) -> dict:
    """Keep only what training uses: the role and content of each turn."""
    return {"messages": [{"role": m["role"], "content": m["content"]}
                         for m in record["messages"]]}


def preference_record_normalize(record: dict) -> dict:
    """prompt, chosen, rejected; and `messages`, the multi-turn input ending with the prompt's
    user turn, when the record brings a well-formed one (OpenAI preference lines do)."""
    data = {"prompt": record["prompt"], "chosen": record["chosen"],
            "rejected": record["rejected"]}
    history = record.get("messages")
    if isinstance(history, list) and len(history) > 1 and all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
            for m in history) and history[-1]["role"] == "user" \
            and history[-1]["content"] == record["prompt"]:
        data["messages"] = [{"role": m["role"], "content": m["content"]} for m in history]
    return data


# One encoder for every record: json.dumps with options builds a new one per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def record_canonical_json(data: dict) -> str:
    """A stored record as canonical JSON (sorted keys, no spaces): what its hash is taken of, and
    what the PostgreSQL bulk writer sends as the `data` column (jsonb stores the same value)."""
    return _CANONICAL.encode(data)


def record_content_hash(data: dict, canonical: str | None = None) -> str:
    """Stable hash of a stored record (canonical JSON), the duplicate key within a dataset."""
    if canonical is None:
        canonical = record_canonical_json(data)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


VALIDATORS = {
    "conversations": (conversation_record_errors, conversation_record_normalize),
    "preferences": (preference_record_errors, preference_record_normalize),
}


def jsonl_lines(uploaded_file, *, max_line_bytes: int = MAX_JSONL_LINE_BYTES):
    """Yield (line_number, parsed_value, error) for each non-blank line of an uploaded JSONL file.

    Reads the file in chunks, so a 200 MB upload never sits in memory at once; a single line
    longer than `max_line_bytes` is reported, not buffered.
    """
    buffer = b""
    line_number = 0
    overlong = False
    uploaded_file.seek(0)
    # read() in fixed chunks rather than .chunks(): an in-memory upload's chunks() is one piece.
    for chunk in iter(lambda: uploaded_file.read(64 * 1024), b""):
        parts = (buffer + chunk).split(b"\n")
        buffer = parts.pop()
        for raw in parts:
            line_number += 1
            if overlong:
                overlong = False
                yield line_number, None, f"Line longer than {max_line_bytes} bytes."
                continue
            result = _jsonl_parse(raw, line_number)
            if result is not None:
                yield result
        if len(buffer) > max_line_bytes:
            overlong = True
            buffer = b""
    if overlong:
        yield line_number + 1, None, f"Line longer than {max_line_bytes} bytes."
    elif buffer.strip():
        result = _jsonl_parse(buffer, line_number + 1)
        if result is not None:
            yield result


def _jsonl_parse(raw: bytes, line_number: int):
    if line_number == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return line_number, None, (f"Not valid UTF-8 (byte 0x{raw[exc.start]:02x} at position "
                                   f"{exc.start}).")
    try:
        return line_number, json.loads(text), None
    except json.JSONDecodeError as exc:
        return line_number, None, f"Not valid JSON: {exc.msg} (column {exc.colno})."
    except RecursionError:  # json recurses per nesting level: [[[[... ]]]] must not be a 500
        return line_number, None, "Not valid JSON: nested too deeply."
