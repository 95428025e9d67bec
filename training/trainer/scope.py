"""An adapter's scope: which prompts it was trained for, so that serving can let the base answer
the others (`train.scope_gate`, issue 15).

Why: on a small base every LoRA update tips some of the base's close calls on questions no row
asks (README, "Which answers go, and why"): the recipe keeps 53 of the 57 general questions
at best, and each lever that keeps more learns less. An edit that only applies where it was
taught cannot tip them. This is the scope classifier of memory-based model editing (SERAC,
Mitchell et al. 2022; GRACE's deferral radius, Hartvigsen et al. 2023), kept as small as it
can be: a prompt goes to the adapter when it is close enough to a prompt the adapter trained
on, and to the base model, adapter off, otherwise.

"Close enough" is the cosine of two bags of content words (`training.text.content_words`)
weighted by inverse document frequency, over the job's own prompts: the trained prompts, its
anchor (replay) prompts and the shipped general replay prompts as the background of what
users ask anyway. A word every general question has ("capital", "what") weighs little; a name
only the trained prompts have ("Zorbania") weighs a lot, and a word no prompt of the job has
weighs the most. So "Do you know the capital of Zorbania?" is close to the trained "What is the
capital of Zorbania?" and "What is the capital of India?" is not. The threshold (0.5 in the
small-base recipe) was set before any measurement: half-way along the cosine's range. What
the job's own prompts say about it (how many of its background prompts would reach the adapter,
how many trained prompts have a sibling above it) is reported in the job's metrics.

The scope is data, not code: `scope_build` returns a JSON-able dict (stored in the adapter's
manifest, so on its version row) and `Scope` answers from it. No Django, no torch: the trainer
writes it, the web app reads it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from training.text import content_words

SCOPE_FORMAT = "synapsex-scope/1"
# A job that continues an adapter finds the parent's scope beside its files (the platform's
# bundle writes it there): the new version's scope is both jobs' prompts.
PARENT_SCOPE_FILE = "scope.json"
BACKGROUND = Path(__file__).resolve().parent / "assets" / "replay_prompts.jsonl"


def background_prompts() -> list[str]:
    """The shipped general prompts (the replay asset): what users ask whatever the tenant."""
    return [json.loads(line)["prompt"] for line in BACKGROUND.read_text().splitlines()
            if line.strip()]


def record_prompt(record: dict[str, Any]) -> str:
    """The user's text a training record answers: the last user message before its last
    assistant turn (SFT), or the prompt (DPO, KTO; a string or messages)."""
    messages = record.get("messages")
    if messages is None:
        prompt = record.get("prompt")
        if isinstance(prompt, str):
            return prompt
        messages = prompt or []
    return last_user_text(messages)


def last_user_text(messages: list[dict]) -> str:
    """The content of the last user message ("" when there is none): what the gate reads."""
    users = [m.get("content") or "" for m in messages if m.get("role") == "user"]
    return users[-1] if users else ""


def scope_build(trained: list[str], *, background: list[str], threshold: float,
                parent: dict[str, Any] | None = None) -> dict[str, Any]:
    """The scope of an adapter trained on `trained` (the prompts), against `background` (general
    prompts the job did not train to change); with `parent` (the scope of the adapter the job
    continues), its prompts are the new scope's too. JSON-able."""
    inherited = [list(b) for b in parent["prompts"] if b] if parent else []
    bags = [sorted(content_words(p)) for p in dict.fromkeys(trained)]
    bags = list({tuple(b): b for b in inherited + bags if b}.values())
    documents = [set(b) for b in bags] + [set(content_words(p)) for p in background]
    df: dict[str, int] = {}
    for doc in documents:
        for word in doc:
            df[word] = df.get(word, 0) + 1
    return {"format": SCOPE_FORMAT, "threshold": float(threshold),
            "documents": len(documents), "df": df, "prompts": bags}


class Scope:
    """Answers whether a prompt is in an adapter's scope (see the module's docstring)."""

    def __init__(self, data: dict[str, Any]):
        if data.get("format") != SCOPE_FORMAT:
            raise ValueError(f"unknown scope format {data.get('format')!r}")
        self.threshold = float(data["threshold"])
        self._documents = int(data["documents"])
        self._df = data["df"]
        self._prompts = [frozenset(b) for b in data["prompts"]]
        self._norms = [self._norm(b) for b in self._prompts]
        self._by_word: dict[str, list[int]] = {}
        for index, bag in enumerate(self._prompts):
            for word in bag:
                self._by_word.setdefault(word, []).append(index)

    def _idf(self, word: str) -> float:
        # scikit-learn's smoothed idf: a word no document has weighs the most.
        return math.log((1 + self._documents) / (1 + self._df.get(word, 0))) + 1.0

    def _norm(self, bag: frozenset[str]) -> float:
        return math.sqrt(sum(self._idf(w) ** 2 for w in bag))

    def similarity(self, text: str, *, exclude: int | None = None) -> float:
        """The highest idf-weighted cosine of `text` to a trained prompt (0-1)."""
        return self._similarity(content_words(text), exclude=exclude)

    def _similarity(self, bag: frozenset[str], *, exclude: int | None = None) -> float:
        if not bag:
            return 0.0
        shared: dict[int, float] = {}
        for word in bag:
            weight = self._idf(word) ** 2
            for index in self._by_word.get(word, ()):
                if index != exclude:
                    shared[index] = shared.get(index, 0.0) + weight
        if not shared:
            return 0.0
        norm = self._norm(bag)
        return max(dot / (norm * self._norms[index]) for index, dot in shared.items())

    def covers(self, text: str) -> bool:
        return self.similarity(text) >= self.threshold

    def summary(self, background: list[str]) -> dict[str, Any]:
        """What the job's own prompts say about the threshold: how many background prompts it
        lets reach the adapter, and how many trained prompts have another trained prompt above
        it (a sibling wording of the same correction)."""
        reached = sum(self.covers(p) for p in background)
        siblings = sum(self._similarity(bag, exclude=index) >= self.threshold
                       for index, bag in enumerate(self._prompts))
        return {"threshold": self.threshold, "trained_prompts": len(self._prompts),
                "background_prompts": len(background), "background_reaching_adapter": reached,
                "trained_with_sibling": siblings}
