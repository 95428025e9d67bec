"""OpenAI's fine-tuning JSONL formats, in and out.

* Chat (supervised) lines, `{"messages": [{"role", "content"}, ...]}`, are the DataHub's own
  conversation records already: they upload unchanged into a `conversations` dataset (extra keys
  such as `tools` or a message's `weight` are accepted and not stored).
* Preference (DPO) lines, `{"input": {"messages": [...]}, "preferred_output": [{"role":
  "assistant", "content"}], "non_preferred_output": [...]}`, upload unchanged into a
  `preferences` dataset: `openai_preference_to_record` turns one into the stored record
  `{"prompt", "chosen", "rejected"}` plus `messages` (the input, ending with the user turn) when
  the input has more than that one user turn.
* Export writes the same two shapes back (`openai_chat_line`, `openai_preference_line`).
"""

from __future__ import annotations

from typing import Any

OPENAI_CHAT = "openai-chat"
OPENAI_PREFERENCE = "openai-preference"
EXPORT_FORMATS = (OPENAI_CHAT, OPENAI_PREFERENCE)
INPUT_ROLES = ("system", "user", "assistant")


def is_openai_preference(value: Any) -> bool:
    return isinstance(value, dict) and ("preferred_output" in value or "input" in value)


def _output_text(value: Any, name: str, errors: list) -> str | None:
    """The one assistant message's content of `preferred_output` / `non_preferred_output`."""
    if not isinstance(value, list) or len(value) != 1:
        errors.append((name, "Must be a list with exactly one assistant message."))
        return None
    message = value[0]
    if not isinstance(message, dict):
        errors.append((f"{name}[0]", "Must be an object with 'role' and 'content'."))
        return None
    if message.get("role") != "assistant":
        errors.append((f"{name}[0].role", "Must be 'assistant'."))
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        errors.append((f"{name}[0].content", "Must be a non-empty string."))
        return None
    return content


def openai_preference_to_record(value: dict) -> tuple[dict | None, list[tuple[str, str]]]:
    """One OpenAI preference line -> (the DataHub preference record, errors as (field, msg))."""
    errors: list[tuple[str, str]] = []
    source = value.get("input")
    messages = source.get("messages") if isinstance(source, dict) else None
    history: list[dict] = []
    if not isinstance(messages, list) or not messages:
        errors.append(("input.messages", "Required: a non-empty list of {role, content}."))
    else:
        for i, message in enumerate(messages):
            path = f"input.messages[{i}]"
            if not isinstance(message, dict):
                errors.append((path, "Must be an object with 'role' and 'content'."))
                continue
            if message.get("role") not in INPUT_ROLES:
                errors.append((f"{path}.role", f"Must be one of {', '.join(INPUT_ROLES)}."))
            if not isinstance(message.get("content"), str) or not message["content"].strip():
                errors.append((f"{path}.content", "Must be a non-empty string."))
            else:
                history.append({"role": message.get("role"), "content": message["content"]})
        if not errors and history[-1]["role"] != "user":
            errors.append((f"input.messages[{len(messages) - 1}].role",
                           "The input must end with a user turn (the prompt answered)."))
    chosen = _output_text(value.get("preferred_output"), "preferred_output", errors)
    rejected = _output_text(value.get("non_preferred_output"), "non_preferred_output", errors)
    if errors:
        return None, errors
    record = {"prompt": history[-1]["content"], "chosen": chosen, "rejected": rejected}
    if len(history) > 1:
        record["messages"] = history
    return record, []


def openai_chat_line(record: dict) -> dict:
    """A stored conversation record (or an SFT example) -> OpenAI's chat fine-tuning line."""
    return {"messages": [{"role": m["role"], "content": m["content"]}
                         for m in record.get("messages") or []]}


def openai_preference_line(record: dict) -> dict:
    """A stored preference record (or a DPO pair) -> OpenAI's preference fine-tuning line."""
    history = record.get("messages") or [{"role": "user", "content": record["prompt"]}]
    return {
        "input": {"messages": [{"role": m["role"], "content": m["content"]} for m in history]},
        "preferred_output": [{"role": "assistant", "content": record["chosen"]}],
        "non_preferred_output": [{"role": "assistant", "content": record["rejected"]}],
    }
