"""Preference training moves what the model does on prompts it never saw (issue 15, section 6).

On the real instruct base and its template. The preferred style is concision: SmolLM2-135M often
answers a short question with several sentences. For each general prompt (the trainer's replay
prompts) where the base's own greedy answer runs past one sentence, the preferred answer is that
answer's first sentence and the rejected one the whole answer: every rejected answer is
different, and both are the base's own words, so the only thing to learn is where to stop.

The prompts are split by a hash: DPO (pairs) and KTO (unpaired: half of the training prompts give
a desirable row, the other half an undesirable one) train on one part; the other part is never
trained, and on it the test compares the base's and the adapter's greedy answers: how many stop
after one sentence, and the mean length. The figures are printed. Measured on a shared 2-core
box: DPO (lr 2e-4) 0% -> 100% one-sentence answers, 36.9 -> 6.2 words on 18 held-out prompts.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from trainer_helpers import job, write_jsonl

from training.trainer.config import parse_job_config
from training.trainer.replay import replay_prompts

MAX_NEW_TOKENS = 48
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")

PREFERENCE_TRAIN = {
    "epochs": 3,
    "learning_rate": 1e-3,
    "batch_size": 8,
    "warmup_ratio": 0.05,
    "weight_decay": 0.0,
    "beta": 0.1,
    "seed": 0,
    "eval_every": 10_000,
    "save_every": 10_000,
    "early_stopping_patience": None,
}

# Set after a failing first run, and said so: at lr 1e-3 DPO drove its reward margins to 13-16
# and collapsed to empty answers on the held-out prompts (every chosen answer is a prefix of its
# rejected one, so the cheapest way to prefer it is to stop at once); KTO at 1e-3 passed.
METHOD_TRAIN = {"dpo": {"learning_rate": 2e-4}, "kto": {}}


def sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(text.strip()) if s]


def held_out(prompt: str) -> bool:
    return hashlib.sha256(prompt.encode()).digest()[0] % 3 == 0


@pytest.fixture(scope="module")
def verbose_answers(real_base_path):
    """(prompt, the base's greedy answer) for every replay prompt the base answers with more than
    one sentence."""
    from training.trainer.generation import greedy_replies
    from training.trainer.modeling import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(real_base_path)
    prompts = replay_prompts()
    replies = greedy_replies(model, tokenizer, [[{"role": "user", "content": p}] for p in prompts],
                             max_new_tokens=MAX_NEW_TOKENS)
    return [(p, reply) for p, (reply, _) in zip(prompts, replies, strict=True)
            if len(sentences(reply)) >= 2 and len(sentences(reply)[0].split()) >= 3]


def _replies(base, adapter, prompts: list[str]) -> list[tuple[str, bool]]:
    from training.trainer.generation import greedy_replies
    from training.trainer.modeling import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(base, adapter)
    return greedy_replies(model, tokenizer, [[{"role": "user", "content": p}] for p in prompts],
                          max_new_tokens=MAX_NEW_TOKENS)


def _style(replies: list[tuple[str, bool]]) -> tuple[float, float]:
    """Share of greedy answers that finish after one sentence, and their mean length in words."""
    short = sum(finished and len(sentences(reply)) == 1 for reply, finished in replies)
    words = sum(len(reply.split()) for reply, _ in replies) / len(replies)
    return short / len(replies), words


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_preference_training_moves_held_out_answers_toward_the_preferred_style(
        tmp_path, real_base_path, verbose_answers, method):
    from training.trainer.run import run_job

    train = [(p, a) for p, a in verbose_answers if not held_out(p)]
    test = [p for p, _ in verbose_answers if held_out(p)]
    assert len(train) >= 30 and len(test) >= 12, (len(train), len(test))
    if method == "dpo":
        rows = [{"id": f"pair-{i}", "prompt": p, "chosen": sentences(a)[0], "rejected": a}
                for i, (p, a) in enumerate(train)]
    else:  # unpaired: a prompt gives either its desirable or its undesirable answer
        rows = [{"id": f"row-{i}", "prompt": [{"role": "user", "content": p}],
                 "completion": [{"role": "assistant",
                                 "content": sentences(a)[0] if i % 2 == 0 else a}],
                 "label": i % 2 == 0}
                for i, (p, a) in enumerate(train)]
    config = job(tmp_path, real_base_path, write_jsonl(tmp_path / "train.jsonl", rows),
                 method=method, train_params={**PREFERENCE_TRAIN, **METHOD_TRAIN[method]})
    run_job(parse_job_config(config))

    before = _replies(real_base_path, None, test)
    after = _replies(real_base_path, tmp_path / "out" / "adapter", test)
    (base_short, base_words), (short, words) = _style(before), _style(after)
    # Printed, not asserted: how many short answers are exactly the base's own first sentence
    # (the content kept). A DPO run at lr 2e-4 gave one-sentence answers that often lost it
    # ("The capital of Chile is Chile"): concision learned, correctness not guarded.
    same = sum(a.rstrip(".") == (sentences(b) or [""])[0].rstrip(".")
               for (a, _), (b, _) in zip(after, before, strict=True))
    print(f"{method}: {len(train)} training prompts; on {len(test)} never-trained prompts, "
          f"one-sentence answers {base_short:.0%} -> {short:.0%}, mean words "
          f"{base_words:.1f} -> {words:.1f}, the base's own first sentence {same}/{len(test)}")
    assert short >= base_short + 0.3
    assert words < 0.75 * base_words
