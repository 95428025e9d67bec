"""Deterministic synthetic inputs: conversations of mixed lengths, with some PII and duplicates.

Words come from the tiny base model's own corpus, so token counts under its tokenizer are
realistic; the length distribution is long-tailed (most turns short, a few long), which is what
makes padding expensive and padding-free batches worth it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

CORPUS = (Path(__file__).resolve().parent.parent / "training" / "trainer" / "assets"
          / "corpus.txt")
FALLBACK_WORDS = ("store hours return policy order shipping days receipt refund manager item "
                  "dosage adults tablet every hours daily water doctor help please thanks").split()
PII_SNIPPETS = [
    "my email is jane.doe{n}@example.com",
    "call me at +358 40 123 45{n:02d}",
    "card 4111 1111 1111 1111",
    "reach me on john.smith{n}@mail.test",
]


@lru_cache(maxsize=1)
def words() -> list[str]:
    try:
        text = CORPUS.read_text(encoding="utf-8")
    except OSError:
        return FALLBACK_WORDS
    found = [w.strip(".,;:!?\"'()") for w in text.split()]
    found = [w for w in found if w.isalpha()]
    return found or FALLBACK_WORDS


def sentence(rng: random.Random, n_words: int) -> str:
    vocab = words()
    return " ".join(rng.choice(vocab) for _ in range(max(1, n_words))).capitalize() + "."


def long_tail(rng: random.Random, low: int, high: int) -> int:
    """Mostly short, sometimes long: a log-uniform draw in [low, high]."""
    return int(round(low * (high / low) ** rng.random()))


def conversation(rng: random.Random, n: int, *, pii_rate: float = 0.0,
                 min_words: int = 4, max_words: int = 120) -> dict:
    turns = rng.choice([1, 1, 1, 2])
    messages = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": "You are a helpful store assistant."})
    for _ in range(turns):
        question = sentence(rng, long_tail(rng, min_words, max_words // 3))
        if rng.random() < pii_rate:
            question += " " + rng.choice(PII_SNIPPETS).format(n=n % 100)
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant",
                         "content": sentence(rng, long_tail(rng, min_words, max_words))})
    return {"messages": messages}


def conversations(count: int, *, seed: int = 0, pii_rate: float = 0.05,
                  duplicate_rate: float = 0.02, max_words: int = 120) -> list[dict]:
    """`count` records; about `duplicate_rate` of them repeat an earlier record exactly."""
    rng = random.Random(seed)
    out: list[dict] = []
    for n in range(count):
        if out and rng.random() < duplicate_rate:
            out.append(out[rng.randrange(len(out))])
        else:
            out.append(conversation(rng, n, pii_rate=pii_rate, max_words=max_words))
    return out


def jsonl(records: list[dict]) -> Iterator[str]:
    for record in records:
        yield json.dumps(record, ensure_ascii=False)
