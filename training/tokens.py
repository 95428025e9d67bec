"""Token estimates of compiled records (the job's cost and duration estimate, the snapshot's
token count): the base model's own tokenizer file when it is at hand, else characters / 4."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from django.conf import settings

CHARS_PER_TOKEN = 4  # fallback when no tokenizer file is at hand
TOKENS_PER_MESSAGE = 4  # chat-template overhead per turn (ChatML: start, role, newline, end)


@lru_cache(maxsize=4)
def _tokenizer(path: str):
    tokenizer_file = Path(path) / "tokenizer.json"
    if not tokenizer_file.is_file():
        return None
    try:
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(tokenizer_file))
    except Exception:  # noqa: BLE001 - an estimate must never fail a request
        return None


def _count(text: str) -> int:
    tokenizer = _tokenizer(str(settings.BASE_MODEL_PATH))
    if tokenizer is None:
        return max(1, len(text) // CHARS_PER_TOKEN)
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def record_tokens(record: dict) -> int:
    """Tokens one epoch of this record feeds the model (the base model's tokenizer if present)."""
    if "completion" in record:  # KTO: prompt + completion (and a KL pass of the same size)
        return sum(_count(m["content"]) + TOKENS_PER_MESSAGE
                   for m in record["prompt"] + record["completion"])
    if "messages" in record:
        return sum(_count(m["content"]) + TOKENS_PER_MESSAGE for m in record["messages"])
    prompt = _count(record["prompt"]) + TOKENS_PER_MESSAGE
    # DPO runs prompt + chosen and prompt + rejected.
    return 2 * prompt + _count(record["chosen"]) + _count(record["rejected"]) \
        + 2 * TOKENS_PER_MESSAGE


def replay_tokens(prompts: list[str], *, answer_tokens: int) -> int:
    """Tokens one epoch of replay rows feeds the model: each prompt, and its answer (generated
    by the model at the start of the job, so counted at its longest, `answer_tokens`)."""
    return sum(_count(p) + answer_tokens + 2 * TOKENS_PER_MESSAGE for p in prompts)
