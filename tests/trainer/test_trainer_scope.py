"""train.scope_gate: an adapter's scope, the prompts it trained on, against which serving
decides whether the adapter or the base model answers a prompt (training.trainer.scope).

The rule is checked on the shipped assets (every never-trained paraphrase of the 30 invented
facts reaches the adapter; general questions, which no job here trains, almost never do) and on
its own terms (weights, threshold, format); the trainer is checked to store the scope in the
manifest, to report what the job's own prompts say about the threshold, and to skip the scope,
saying so, when it continues an adapter. What the gate does to learning and forgetting on the
real base is measured by bench/learning.py (README, "A scope for each version"); serving and
the evaluation by tests/adapters (test_chat_serving, test_evaluation).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainer_helpers import BOX_CODES, chat, events_of, job, new_then_continued, write_jsonl

from training.trainer.config import parse_job_config
from training.trainer.errors import DataError, JobConfigError
from training.trainer.scope import Scope, background_prompts, record_prompt, scope_build

ROOT = Path(__file__).resolve().parents[2]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("value,message", [(1.5, "between 0 and 1"), (-0.1, "at least 0"),
                                           ("near", "must be a number")])
def test_scope_gate_is_validated(tmp_path, tiny_base_path, value, message):
    config = job(tmp_path, tiny_base_path, tmp_path / "train.jsonl",
                 train_params={"scope_gate": value})
    with pytest.raises(JobConfigError, match=message):
        parse_job_config(config)


def test_paraphrases_of_trained_facts_reach_the_adapter_and_general_questions_do_not():
    """The 60 trained wordings of the 30 invented facts as the scope; the shipped replay prompts
    as the background. Every held-out wording ("Do you know ...?", never trained) is in scope;
    of the 110 general questions of the evaluation set (none is a replay prompt) at most 5%
    are, the ones that share a rare word with a fact, printed."""
    facts = _jsonl(ROOT / "training" / "trainer" / "assets" / "invented_facts.jsonl")
    general = _jsonl(ROOT / "adapters" / "assets" / "general_knowledge.jsonl")
    trained = [q for fact in facts for q in fact["questions"]]
    scope = Scope(json.loads(json.dumps(scope_build(trained, background=background_prompts(),
                                                    threshold=0.5))))
    held_out = {f["held_out"][0]: scope.similarity(f["held_out"][0]) for f in facts}
    reaching = {g["question"]: round(scope.similarity(g["question"]), 3) for g in general
                if scope.covers(g["question"])}
    print(f"\nheld out: lowest similarity {min(held_out.values()):.3f}; general questions "
          f"reaching the adapter: {reaching}")
    assert all(s >= 0.5 for s in held_out.values()), held_out
    assert len(reaching) <= 0.05 * len(general), reaching
    assert all(scope.covers(q) for q in trained)
    assert scope.summary(background_prompts())["trained_with_sibling"] == len(trained)


def test_rare_words_decide_and_common_ones_do_not():
    scope = Scope(scope_build(["What is the capital of Zorbania?"],
                              background=["What is the capital of France?",
                                          "What is the capital of Spain?"], threshold=0.5))
    assert scope.similarity("What is the capital of Zorbania?") == pytest.approx(1.0)
    assert scope.covers("Zorbania's capital, which city is it?")
    assert not scope.covers("What is the capital of Peru?")  # only the common word is shared
    assert scope.similarity("Tell me a joke.") == 0.0
    assert scope.similarity("") == 0.0
    strict = Scope({**scope_build(["What is the capital of Zorbania?"], background=[],
                                  threshold=1.0)})
    assert not strict.covers("Do you know the capital of Zorbania today?")
    with pytest.raises(ValueError, match="unknown scope format"):
        Scope({"format": "other"})


def test_the_prompt_of_a_record_is_its_last_user_message():
    assert record_prompt({"messages": [{"role": "user", "content": "first"},
                                       {"role": "assistant", "content": "a"},
                                       {"role": "user", "content": "second"},
                                       {"role": "assistant", "content": "b"}]}) == "second"
    assert record_prompt({"prompt": "Which?", "chosen": "x", "rejected": "y"}) == "Which?"
    assert record_prompt({"prompt": [{"role": "user", "content": "Hi"}], "completion": [],
                          "label": True}) == "Hi"


def test_a_job_stores_its_scope_and_a_continuing_job_inherits_it(tmp_path, tiny_base_path):
    """The trained rows' prompts make the scope, anchor rows are background; the manifest holds
    it, the metrics say what the job's prompts say about the threshold, the started event says
    it in words. A job that continues an adapter merges that adapter's scope (scope.json beside
    its files) into its own; continuing one without a scope, it has none either (the parent
    answered everything), and says so; an unreadable parent scope fails the job as bad data."""
    first, second = new_then_continued(tmp_path, tiny_base_path, {"scope_gate": 0.5})
    manifest = json.loads((first / "manifest.json").read_text())
    scope = Scope(manifest["scope"])
    assert scope.threshold == 0.5
    trained = [record_prompt(r) for r in BOX_CODES[:4]]
    assert len(manifest["scope"]["prompts"]) == len(set(trained))
    assert all(scope.covers(q) for q in trained)
    summary = manifest["metrics"]["scope_gate"]
    assert summary["trained_prompts"] == len(set(trained))
    assert summary["background_prompts"] >= len(background_prompts())
    (started,) = events_of(first, "started")
    assert any("served only on prompts like its" in n for n in started["notes"])

    # The adapter it continued had no scope beside its files: it answered every prompt, and
    # so does the continuation.
    (started,) = events_of(second, "started")
    assert any("the adapter this job continues (init_adapter) has no scope" in n
               for n in started["notes"])
    manifest = json.loads((second / "manifest.json").read_text())
    assert "scope" not in manifest and "scope_gate" not in manifest["metrics"]
    assert manifest["metrics"]["global_step"] > 0

    # With the parent's scope beside its files (as the platform's bundle writes it), the
    # continuation's scope holds both jobs' prompts.
    from training.trainer.run import run_job
    from training.trainer.scope import PARENT_SCOPE_FILE

    parent = first / "adapter"
    (parent / PARENT_SCOPE_FILE).write_text(json.dumps(json.loads(
        (first / "manifest.json").read_text())["scope"]))
    crates = [chat(f"What colour is crate {i}?", f"Crate {i} is teal.") for i in (9, 10)]
    third = tmp_path / "third"
    run_job(parse_job_config(job(third, tiny_base_path,
                                 write_jsonl(tmp_path / "crates.jsonl", crates * 2),
                                 train_params={"epochs": 1, "learning_rate": 2e-3,
                                               "batch_size": 4, "scope_gate": 0.5},
                                 init_adapter=str(parent))))
    manifest = json.loads((third / "out" / "manifest.json").read_text())
    scope = Scope(manifest["scope"])
    assert all(scope.covers(q) for q in trained + ["What colour is crate 9?"])
    assert manifest["metrics"]["scope_gate"]["trained_prompts"] == len(set(trained)) + 2
    (started,) = events_of(third / "out", "started")
    assert any(f"{len(set(trained))} of them from the adapter it continues" in n
               for n in started["notes"])

    (parent / PARENT_SCOPE_FILE).write_text('{"format": "synapsex-scope/1"}')
    with pytest.raises(DataError, match="scope of the adapter this job continues"):
        run_job(parse_job_config(job(tmp_path / "fourth", tiny_base_path,
                                     tmp_path / "crates.jsonl",
                                     train_params={"epochs": 1, "scope_gate": 0.5,
                                                   "batch_size": 4},
                                     init_adapter=str(parent))))
