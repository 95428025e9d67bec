"""The invented facts that the learning measurements score (bench/learning.py and
tests/training/test_e2e_real_base.py) must be scorable: a reply is right when it contains the
fact's key, so a key that is not in the fact's own answer can never be right. One was not
("VeshkRiver" for "the Veshka River"), which cost every measurement that fact since it was added.
"""

from __future__ import annotations

import json
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "training" / "trainer" / "assets"


def _facts() -> list[dict]:
    return [json.loads(line) for line in
            (ASSETS / "invented_facts.jsonl").read_text().splitlines() if line.strip()]


def test_every_fact_key_is_in_its_own_answer_and_no_other():
    facts = _facts()
    assert len(facts) >= 30
    for fact in facts:
        assert fact["key"].lower() in fact["answer"].lower(), fact["id"]
        others = [f["id"] for f in facts
                  if f is not fact and fact["key"].lower() in f["answer"].lower()]
        assert not others, (fact["id"], others)


def test_held_out_phrasings_are_never_training_phrasings():
    trained = {q for fact in _facts() for q in fact["questions"]}
    held_out = [q for fact in _facts() for q in fact["held_out"]]
    assert len(held_out) == len(set(held_out)) >= 30
    assert not trained & set(held_out)
    lines = (ASSETS / "replay_prompts.jsonl").read_text().splitlines()
    replay = {json.loads(line)["prompt"] for line in lines if line}
    assert not replay & (trained | set(held_out))
