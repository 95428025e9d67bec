"""Preference training moves what the model does on prompts it never saw (issue 15, section 6).

On the real instruct base and its template. The preferred style is concision: SmolLM2-135M often
answers a short question with several sentences. For each general prompt (the trainer's replay
prompts) where the base's own greedy answer runs past one sentence, the preferred answer is that
answer's first sentence and the rejected one the whole answer: every rejected answer is
different, and both are the base's own words, so the only thing to learn is where to stop.

The prompts are split by a hash: DPO (pairs) and KTO (unpaired: half of the training prompts give
a desirable row, the other half an undesirable one) train on one part; the other part is never
trained, and on it the test compares the base's and the adapter's greedy answers: how many stop
after one sentence, and the mean length. Content is scored apart, on the platform's general
questions with a checkable key (adapters/assets/general_knowledge.jsonl) that the base answers
right: how many the adapter still answers right. The figures are printed. Measured on a 2-core
box (one run each, 2026-12-03; 42 training prompts, 18 held-out, 60 known questions):

| variant | one-sentence answers | mean words | known questions still right |
|---|---|---|---|
| base | 0% | 36.9 | 60/60 |
| DPO, lr 2e-4 | 100% | 6.2 | 23/60 |
| DPO + the chosen answer's loss (sft_weight 1) | 100% | 10.3 | 51/60 |
| KTO, lr 1e-3 | 100% | 11.6 | 50/60 |

Plain DPO learned the style by dropping the content ("The capital of Brazil is Brazil", "What
is 9 minus 4?" -> "Hangover"); with the supervised term the same job kept it ("The capital of
Colombia is Bogotá.").
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from trainer_helpers import job, write_jsonl

from adapters.evaluation import GENERAL_KNOWLEDGE, contains_all
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
# dpo_sft: the same DPO job with the chosen answer's own loss added at weight 1 (sft_weight).
VARIANT_TRAIN = {"dpo": {"learning_rate": 2e-4},
                 "dpo_sft": {"learning_rate": 2e-4, "sft_weight": 1.0},
                 "kto": {}}


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


@pytest.fixture(scope="module")
def known_questions(real_base_path) -> list[tuple[str, str]]:
    """(question, key) of the platform's general questions (adapters/assets) that the base
    answers right: what a preference job on style must not make it forget."""
    rows = [json.loads(line) for line in GENERAL_KNOWLEDGE.read_text().splitlines() if line]
    replies = _replies(real_base_path, None, [r["question"] for r in rows])
    return [(r["question"], r["key"]) for r, (reply, _) in zip(rows, replies, strict=True)
            if contains_all(reply, [r["key"].lower()])]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, real_base_path, verbose_answers, known_questions):
    """variant -> the adapter's figures, trained once per module whichever tests ask."""
    from training.trainer.run import run_job

    train = [(p, a) for p, a in verbose_answers if not held_out(p)]
    test = [p for p, _ in verbose_answers if held_out(p)]
    assert len(train) >= 30 and len(test) >= 12, (len(train), len(test))
    before = _replies(real_base_path, None, test)
    runs: dict[str, dict] = {}

    def get(variant: str) -> dict:
        if variant in runs:
            return runs[variant]
        method = variant.split("_")[0]
        if method == "dpo":
            rows = [{"id": f"pair-{i}", "prompt": p, "chosen": sentences(a)[0], "rejected": a}
                    for i, (p, a) in enumerate(train)]
        else:  # unpaired: a prompt gives either its desirable or its undesirable answer
            rows = [{"id": f"row-{i}", "prompt": [{"role": "user", "content": p}],
                     "completion": [{"role": "assistant",
                                     "content": sentences(a)[0] if i % 2 == 0 else a}],
                     "label": i % 2 == 0}
                    for i, (p, a) in enumerate(train)]
        tmp = tmp_path_factory.mktemp(variant)
        config = job(tmp, real_base_path, write_jsonl(tmp / "train.jsonl", rows),
                     method=method, train_params={**PREFERENCE_TRAIN, **VARIANT_TRAIN[variant]})
        run_job(parse_job_config(config))
        adapter = tmp / "out" / "adapter"
        after = _replies(real_base_path, adapter, test)
        general = _replies(real_base_path, adapter, [q for q, _ in known_questions])
        kept = sum(contains_all(reply, [key.lower()])
                   for (reply, _), (_, key) in zip(general, known_questions, strict=True))
        # How many short answers are exactly the base's own first sentence (its content kept,
        # word for word; strict: the base's first sentences are long).
        same = sum(a.rstrip(".") == (sentences(b) or [""])[0].rstrip(".")
                   for (a, _), (b, _) in zip(after, before, strict=True))
        runs[variant] = {"train": len(train), "test": len(test), "before": _style(before),
                         "after": _style(after), "same": same, "kept": kept,
                         "known": len(known_questions),
                         "samples": list(zip(test, after, strict=True))[:6]}
        return runs[variant]

    return get


@pytest.mark.parametrize("variant", ["dpo", "dpo_sft", "kto"])
def test_preference_training_moves_held_out_answers_toward_the_preferred_style(trained, variant):
    run = trained(variant)
    (base_short, base_words), (short, words) = run["before"], run["after"]
    print(f"{variant}: {run['train']} training prompts; on {run['test']} never-trained prompts, "
          f"one-sentence answers {base_short:.0%} -> {short:.0%}, mean words "
          f"{base_words:.1f} -> {words:.1f}, the base's own first sentence "
          f"{run['same']}/{run['test']}; general questions the base knew still right "
          f"{run['kept']}/{run['known']}")
    for prompt, (reply, _) in run["samples"]:
        print(f"  {prompt!r} -> {reply!r}")
    assert short >= base_short + 0.3
    assert words < 0.75 * base_words


def test_the_supervised_term_keeps_what_plain_dpo_forgets(trained):
    """DPO alone only widens the gap between the chosen and the rejected answer; here every chosen
    answer is a prefix of its rejected one, and plain DPO learns to stop early partly by making
    the content itself unlikely ("The capital of Brazil is Brazil"). `sft_weight` adds the chosen
    answer's own loss (RPO); the same job must then keep more of the general questions the base
    answered right, while learning the style as well (the test above)."""
    plain, rpo = trained("dpo"), trained("dpo_sft")
    print(f"general questions the base knew still right: plain DPO {plain['kept']}/"
          f"{plain['known']}, DPO + supervised term {rpo['kept']}/{rpo['known']}")
    assert plain["known"] >= 40
    # The margin was written before the first run (10 points); the floor after it (measured
    # 51/60 against 23/60), well below the measurement.
    assert rpo["kept"] >= plain["kept"] + 0.1 * plain["known"]
    assert rpo["kept"] >= 0.7 * rpo["known"]
