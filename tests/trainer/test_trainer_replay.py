"""Replay against forgetting (training.trainer.replay), on the real instruct base and its template.

What replay does to learning and forgetting is measured by `bench/learning.py` (README, "Defaults
on a real base") and asserted end to end by tests/training/test_e2e_real_base.py; these tests pin
the mechanics: the rows are the model's own served answers, cut answers never train, the sample
is stable per seed, a job says what it replayed, and only SFT takes it.
"""

from __future__ import annotations

import json

import pytest
from trainer_helpers import events_of, job, write_jsonl

from training.trainer.config import parse_job_config
from training.trainer.errors import JobConfigError
from training.trainer.replay import replay_pick, replay_prompts, replay_records

PROMPTS = ["What is the capital of Chile?", "What is 3 times 4?", "Name a primary color."]


@pytest.fixture(scope="module")
def real_model(real_base_path):
    from training.trainer.modeling import load_model_and_tokenizer

    return load_model_and_tokenizer(real_base_path)


def test_replay_rows_are_the_models_own_served_answers(real_model):
    from training.trainer.generation import end_of_turn_strings, generation_kwargs, reply_clean

    model, tokenizer = real_model
    records, unfinished = replay_records(model, tokenizer, PROMPTS)
    assert unfinished == 0
    assert [r["messages"][0]["content"] for r in records] == PROMPTS
    # The same answer one prompt at a time, as serving generates it (no batch, no padding).
    kwargs = generation_kwargs(model, tokenizer, max_new_tokens=96)
    ends = end_of_turn_strings(tokenizer, kwargs["generation_config"])
    for record in records:
        encoded = tokenizer.apply_chat_template(
            [record["messages"][0]], add_generation_prompt=True, return_tensors="pt",
            return_dict=True)
        output = model.generate(**encoded, **kwargs)
        served = reply_clean(tokenizer.decode(output[0, encoded["input_ids"].shape[1]:]), ends)
        assert record["messages"][1] == {"role": "assistant", "content": served}
    assert "Santiago" in records[0]["messages"][1]["content"]


def test_an_answer_cut_by_the_token_budget_is_left_out(real_model):
    model, tokenizer = real_model
    records, unfinished = replay_records(model, tokenizer, PROMPTS, max_new_tokens=3)
    assert records == [] and unfinished == len(PROMPTS)


def test_the_sample_is_stable_per_seed_and_shares_nothing_with_the_evaluation_sets():
    from pathlib import Path

    prompts = replay_prompts()
    assert len(prompts) == len(set(prompts)) >= 100
    assert replay_pick(prompts, rows=20, seed=7) == replay_pick(prompts, rows=20, seed=7)
    assert replay_pick(prompts, rows=20, seed=7) != replay_pick(prompts, rows=20, seed=8)
    assert replay_pick(prompts, rows=500, seed=7) == prompts
    root = Path(__file__).resolve().parents[2]
    general = root / "adapters" / "assets" / "general_knowledge.jsonl"
    known = root / "training" / "trainer" / "assets" / "base_knowledge.jsonl"
    questions = {json.loads(line)["question"] for line in general.read_text().splitlines()}
    questions |= {json.loads(line)["messages"][0]["content"]
                  for line in known.read_text().splitlines()}
    assert not questions & set(prompts)


def test_a_job_trains_its_rows_with_the_replayed_ones_and_says_so(tmp_path, real_base_path):
    from training.trainer.run import run_job

    rows = [{"messages": [{"role": "user", "content": f"What is the code of box {i}?"},
                          {"role": "assistant", "content": f"The code of box {i} is K{i}7."}]}
            for i in range(6)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    config = job(tmp_path, real_base_path, train, train_params={
        "epochs": 1, "learning_rate": 1e-4, "batch_size": 8, "replay_rows": 4,
        "early_stopping_patience": None})
    run_job(parse_job_config(config))
    (started,) = events_of(tmp_path / "out", "started")
    (note,) = [n for n in started["notes"] if n.startswith("replayed")]
    replayed = int(note.split()[1])
    assert 1 <= replayed <= 4 and "4 asked" in note
    assert started["totals"]["train_examples"] == len(rows) + replayed
    assert started["parameters"]["train"]["replay_rows"] == 4


@pytest.mark.parametrize("method,value,message", [
    ("dpo", 10, "applies to sft only"),
    ("kto", 10, "applies to sft only"),
    ("sft", -1, "at least 0"),
    ("sft", 1.5, "must be a int"),
])
def test_replay_rows_is_validated(tmp_path, tiny_base_path, method, value, message):
    config = job(tmp_path, tiny_base_path, tmp_path / "train.jsonl", method=method,
                 train_params={"replay_rows": value, "batch_size": 4})
    with pytest.raises(JobConfigError, match=message):
        parse_job_config(config)
