"""bench/learning.py's margin measurement (`--margins`, README "Which answers go"), on the real
base: the branch it reports as a near-tie must be one, and its runner-up must really end in a
wrong answer.

SmolLM2-135M-Instruct answers "2 + 3 = 5", but its first token is a near-tie with "The" (the
start of "The answer to this classic math problem is 6."), while "The capital of Japan is Tokyo."
has no branch under the measurement's 2-nat bound that gives a wrong answer. Greedy decoding on
the CPU in float32 is deterministic, so these are fixed facts of the base, not samples.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _learning():
    """bench/learning.py, loaded by path: tests/bench shadows the top-level `bench` package."""
    spec = importlib.util.spec_from_file_location(
        "bench_learning", Path(__file__).resolve().parents[2] / "bench" / "learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_key_margins_finds_the_near_tie_that_flips_an_answer(real_base_path, monkeypatch):
    learning = _learning()
    monkeypatch.setattr(learning, "BASE", real_base_path)
    model, tokenizer = learning.load()
    sums, capital = learning.key_margins(
        model, tokenizer, ["What is 2 plus 3?", "What is the capital of Japan?"], ["5", "Tokyo"])
    print(sums, capital, sep="\n")

    assert learning.right(sums["reply"], "5")
    assert 0 <= sums["prefix_margin"] <= sums["flip_margin"] < 0.2
    assert sums["margin"] > 2  # the digit itself is firm; the branch before it is not
    assert not learning.right(sums["flipped_reply"], "5")
    assert sums["flipped_reply"] != sums["reply"]

    assert learning.right(capital["reply"], "Tokyo")
    assert capital["flip_margin"] is None and capital["flipped_reply"] is None
    assert capital["margin"] > 2

    # A reply that is not right to begin with is its own wrong branch: flip margin 0.
    from training.trainer.generation import reply_branches

    wrong = reply_branches(model, tokenizer, [{"role": "user", "content": "What is 2 plus 3?"}],
                           lambda text: "seven" in text, max_new_tokens=learning.MAX_NEW_TOKENS)
    assert wrong["flip_margin"] == 0.0 and wrong["flipped_reply"] == sums["reply"]
