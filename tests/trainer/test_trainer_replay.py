"""Replay against forgetting (training.trainer.replay), on the real instruct base and its template.

What replay does to learning and forgetting is measured by `bench/learning.py` (README, "Defaults
on a real base") and asserted end to end by tests/training/test_e2e_real_base.py; these tests pin
the mechanics: the rows are the model's own served answers, cut answers never train, the sample
is stable per seed, a job says what it replayed, and only SFT takes it.
"""

from __future__ import annotations

import json

import pytest
from trainer_helpers import BOX_CODES, events_of, job, write_jsonl

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


def test_a_job_also_replays_the_prompts_of_its_tenants_traffic(tmp_path, real_base_path):
    """data.replay_prompts (written by the platform from the tenant's own conversations,
    training.replay_traffic): every one of them is answered by the model before the job and
    trained as a replay row, before and beside the shipped sample."""
    from training.trainer.run import run_job

    rows = [{"messages": [{"role": "user", "content": f"What is the code of box {i}?"},
                          {"role": "assistant", "content": f"The code of box {i} is K{i}7."}]}
            for i in range(6)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    traffic = ["What is the capital of Peru?", "Name a planet of the solar system."]
    replay = write_jsonl(tmp_path / "replay.jsonl",
                         [{"id": f"msg_{i}", "prompt": p} for i, p in enumerate(traffic)])
    config = job(tmp_path, real_base_path, train, train_params={
        "epochs": 1, "learning_rate": 1e-4, "batch_size": 8, "replay_rows": 2,
        "kl_to_base": 1.0, "replay_weight": 1e-6, "early_stopping_patience": None})
    config["data"]["replay_prompts"] = str(replay)
    run_job(parse_job_config(config))
    (started,) = events_of(tmp_path / "out", "started")
    (note,) = [n for n in started["notes"] if n.startswith("replayed")]
    assert "and to 2 of the tenant's own users' prompts" in note and "(4 asked" in note
    replayed = int(note.split()[1])
    assert 3 <= replayed <= 4  # a shipped prompt's answer may not finish; these two do
    assert started["totals"]["train_examples"] == len(rows) + replayed
    assert any(f"{replayed} anchor row(s)" in n for n in started["notes"])


def test_replay_prompts_are_sft_only_and_must_be_prompts(tmp_path, tiny_base_path):
    from training.trainer.errors import DataError
    from training.trainer.replay import traffic_prompts

    replay = write_jsonl(tmp_path / "replay.jsonl", [{"id": "msg_1", "prompt": "Hi?"}])
    config = job(tmp_path, tiny_base_path, tmp_path / "train.jsonl", method="dpo",
                 train_params={"batch_size": 4})
    config["data"]["replay_prompts"] = str(replay)
    with pytest.raises(JobConfigError, match="data.replay_prompts applies to sft only"):
        parse_job_config(config)
    assert traffic_prompts(replay) == ["Hi?"]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "msg_2", "text": "no prompt key"}])
    with pytest.raises(DataError, match="data.replay_prompts"):
        traffic_prompts(bad)


@pytest.mark.parametrize("method,value,message", [
    ("dpo", 10, "go together"),  # DPO's replay rows only anchor the KL term: not alone
    ("kto", 10, "apply to sft and dpo only"),
    ("sft", -1, "at least 0"),
    ("sft", 1.5, "must be a int"),
])
def test_replay_rows_is_validated(tmp_path, tiny_base_path, method, value, message):
    config = job(tmp_path, tiny_base_path, tmp_path / "train.jsonl", method=method,
                 train_params={"replay_rows": value, "batch_size": 4})
    with pytest.raises(JobConfigError, match=message):
        parse_job_config(config)


def _kl_to_before(base, adapter, rows) -> float:
    """Mean KL(before || adapter) per token over `rows` (SFT records), the same quantity the
    trainer's term takes: every token of the row, the whole next-token distribution."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    from training.trainer.modeling import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(base, adapter)
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids = tokenizer.apply_chat_template(row["messages"], return_tensors="pt",
                                                return_dict=True)["input_ids"]
            log_q = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            with model.disable_adapter():
                log_p = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            total += float((log_p.exp() * (log_p - log_q)).sum())
            count += ids.shape[1] - 1
    return total / count


def _without_and_with_kl(tmp_path, base, train, params, term, *, method="sft") -> list[dict]:
    """Two jobs on the same rows and seed, the second with `term` (kl_to_base and for DPO its
    replay rows) added: their started event, step events and adapter. Checks what the events say
    of the term: exactly 0 at the first step (the LoRA layers are zero), above 0 at the last, a
    note; absent without it."""
    from training.trainer.run import run_job

    runs = []
    for extra in ({}, term):
        folder = tmp_path / ("with-kl" if extra else "without-kl")
        run_job(parse_job_config(job(folder, base, train, method=method,
                                     train_params={**params, **extra})))
        (started,) = events_of(folder / "out", "started")
        steps = events_of(folder / "out", "step")
        if extra:
            assert any("anchor row(s) kept close" in n for n in started["notes"])
            assert steps[0]["kl_to_base"] == pytest.approx(0.0, abs=1e-6)
            assert steps[-1]["kl_to_base"] > 0
        else:
            assert all("kl_to_base" not in step for step in steps)
        runs.append({"started": started, "steps": steps, "adapter": folder / "out" / "adapter"})
    return runs


def _replay_kls(base, without, with_term) -> tuple[float, float]:
    """`_kl_to_before` of two adapters on the rows a job with `replay_rows: 8` replays (seed
    42): the base's own answers to the 8 prompts it picks."""
    from training.trainer.modeling import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(base)
    replayed, _ = replay_records(model, tokenizer, replay_pick(replay_prompts(), rows=8, seed=42))
    return _kl_to_before(base, without, replayed), _kl_to_before(base, with_term, replayed)


def test_kl_to_base_keeps_the_replay_rows_closer_to_the_model_before_the_job(tmp_path,
                                                                             real_base_path):
    """The KL term's mechanics on the real base: two jobs on the same rows and seed, without and
    with `kl_to_base`. At the first step the LoRA layers are zero, so the term is exactly 0; after
    training, the job with the term is measurably closer to the base on the anchor (replay)
    rows. What it does to forgetting on questions it never saw is measured by bench/learning.py
    (README, "Defaults on a real base"), not here."""

    train = write_jsonl(tmp_path / "train.jsonl", BOX_CODES)
    params = {"epochs": 3, "learning_rate": 2e-3, "batch_size": 8, "replay_rows": 8,
              "early_stopping_patience": None, "warmup_ratio": 0.0, "weight_decay": 0.0}
    runs = _without_and_with_kl(tmp_path, real_base_path, train, params, {"kl_to_base": 5.0})
    without, with_term = _replay_kls(real_base_path, runs[0]["adapter"], runs[1]["adapter"])
    print(f"KL(before || adapter) per replay token: {without:.4f} without the term, "
          f"{with_term:.4f} with kl_to_base 5")
    assert with_term < 0.7 * without


def test_replay_weight_marks_each_replayed_row(real_model):
    """train.replay_weight: the replay rows' own loss weight (the small_base recipe's 1e-6 makes
    them anchors of the KL term only). Weight 1 leaves the rows unmarked, as before."""
    model, tokenizer = real_model
    light, _ = replay_records(model, tokenizer, PROMPTS[:2], weight=1e-6)
    plain, _ = replay_records(model, tokenizer, PROMPTS[:2])
    assert [r["weight"] for r in light] == [1e-6, 1e-6]
    assert all("weight" not in r for r in plain)
    assert [r["messages"] for r in light] == [r["messages"] for r in plain]


@pytest.mark.parametrize("name,method,value,message", [
    ("kl_to_base", "dpo", 1.0, "go together"),  # no anchors without replay rows
    ("kl_to_base", "kto", 1.0, "apply to sft and dpo only"),
    ("kl_to_base", "sft", -0.5, "at least 0"),
    ("kl_to_base", "sft", "a lot", "must be a number"),
    ("replay_weight", "dpo", 0.5, "applies to sft only"),
    ("replay_weight", "sft", 0, "greater than 0"),
    ("replay_weight", "sft", 1.5, "at most 1"),
    ("replay_weight", "sft", "light", "must be a number"),
    ("sft_weight", "sft", 1.0, "applies to dpo only"),
    ("sft_weight", "kto", 0.5, "applies to dpo only"),
    ("sft_weight", "dpo", -1, "at least 0"),
    ("sft_weight", "dpo", "much", "must be a number"),
    ("keep_margin", "sft", 1.0, "applies to sft with train.kl_to_base"),  # no kl_to_base
    ("keep_margin", "dpo", 1.0, "applies to sft with train.kl_to_base"),
    ("keep_margin", "sft", -1, "at least 0"),
])
def test_loss_terms_are_validated(tmp_path, tiny_base_path, name, method, value, message):
    """kl_to_base and replay_weight (SFT) and sft_weight (DPO): refused in job.json by the
    trainer itself, whatever wrote it."""
    config = job(tmp_path, tiny_base_path, tmp_path / "train.jsonl", method=method,
                 train_params={name: value, "batch_size": 4})
    with pytest.raises(JobConfigError, match=message):
        parse_job_config(config)


def test_margin_shrink_sees_a_close_call_tipped_that_the_kl_term_barely_sees():
    """train.keep_margin's term: a near tie (0.52 / 0.48) turned around changes the greedy choice
    while KL(before || after) stays near 0; the term is the lead lost (0.16 nats). A firm choice
    (lead above 2 nats) is outside its window, a lead that grows costs nothing, and positions
    outside the mask count for nothing."""
    import torch

    from training.trainer.trainers import kl_to_before, margin_shrink

    before = torch.log(torch.tensor([[[0.52, 0.48, 1e-9], [0.98, 0.01, 0.01]]]))
    tipped = torch.log(torch.tensor([[[0.48, 0.52, 1e-9], [0.60, 0.39, 0.01]]]))
    firmer = torch.log(torch.tensor([[[0.70, 0.30, 1e-9], [0.98, 0.01, 0.01]]]))
    both = torch.tensor([[True, True]])
    lead = float(torch.log(torch.tensor(0.52 / 0.48)))
    assert float(kl_to_before(before[:, :1], tipped[:, :1], both[:, :1])) < 0.01
    assert float(margin_shrink(before, tipped, both)) == pytest.approx(2 * lead, rel=1e-4)
    assert float(margin_shrink(before, firmer, both)) == 0.0
    assert float(margin_shrink(before, tipped, torch.tensor([[False, True]]))) == 0.0


def test_keep_margin_reports_its_term_in_the_step_events(tmp_path, tiny_base):
    """A job with train.keep_margin runs the hinge beside the KL term and reports it per step:
    exactly 0 at the first step (the LoRA layers start at zero, so no lead has moved). Whether it
    keeps more of what the base knew is measured by bench/learning.py (README: it does not)."""
    from training.trainer.run import run_job

    rows = [{"messages": [{"role": "user", "content": f"What is the code of box {i}?"},
                          {"role": "assistant", "content": f"The code of box {i} is K{i}7."}]}
            for i in range(8)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    run_job(parse_job_config(job(tmp_path, tiny_base, train, train_params={
        "epochs": 2, "batch_size": 4, "replay_rows": 4, "kl_to_base": 1.0, "keep_margin": 1.0,
        "replay_weight": 1e-6, "early_stopping_patience": None, "learning_rate": 5e-3})))
    (started,) = events_of(tmp_path / "out", "started")
    assert any("close-call hinge, weight 1" in note for note in started["notes"])
    # A step whose batch holds no anchor row has neither term (as for kl_to_base alone).
    steps = [s for s in events_of(tmp_path / "out", "step") if "kl_to_base" in s]
    assert steps and all("margin_shrink" in step for step in steps)
    assert steps[0]["step"] == 1 and steps[0]["margin_shrink"] == pytest.approx(0.0, abs=1e-6)
    assert all(step["margin_shrink"] >= 0 for step in steps)
    assert any(step["margin_shrink"] > 0 for step in steps)


def test_sft_weight_makes_trls_dpo_loss_the_sum(tmp_path, tiny_base_path):
    """train.sft_weight > 0: TRL's DPO config gets the sigmoid loss plus the chosen answer's NLL
    at that weight; 0 (the default) leaves TRL's plain DPO."""
    from training.trainer.run import _training_args

    for weight, loss_type, weights in ((0.5, ["sigmoid", "sft"], [1.0, 0.5]),
                                       (0, ["sigmoid"], None)):
        config = parse_job_config(job(tmp_path, tiny_base_path, tmp_path / "train.jsonl",
                                      method="dpo",
                                      train_params={"sft_weight": weight, "batch_size": 4}))
        args = _training_args(config, tmp_path / "out", has_eval=False)
        assert list(args.loss_type) == loss_type and args.loss_weights == weights


def test_kl_to_base_anchors_a_dpo_job_on_the_replay_rows(tmp_path, real_base_path):
    """DPO's reference holds only the pairs' log-ratios; with `replay_rows` and `kl_to_base` a
    DPO job also runs a batch of the replay rows each step (not trained on: anchors only) and
    adds the KL term on them. Two DPO jobs on the real base, same pairs and seed, without and
    with the term: the term starts at exactly 0 (LoRA layers are zero), shows in the step events,
    and leaves the adapter measurably closer to the base on the anchor rows. DPO's own numbers
    (rewards, accuracies) still come out. What it keeps on questions never seen is measured by
    bench/learning.py (README, "DPO that keeps content")."""

    pairs = [{"prompt": f"What is the code of box {i}?", "chosen": f"The code of box {i} is K{i}7.",
              "rejected": f"Box {i} has no code that I know of."} for i in range(8)]
    train = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    params = {"epochs": 3, "learning_rate": 2e-3, "batch_size": 8, "beta": 0.1,
              "early_stopping_patience": None, "warmup_ratio": 0.0, "weight_decay": 0.0}
    runs = _without_and_with_kl(tmp_path, real_base_path, train, params,
                                {"kl_to_base": 5.0, "replay_rows": 8}, method="dpo")
    assert all("rewards/margins" in step for run in runs for step in run["steps"])
    assert any("as KL anchors" in n for n in runs[1]["started"]["notes"])
    assert runs[1]["started"]["totals"]["train_examples"] == 8  # the pairs; anchors are apart
    without, with_term = _replay_kls(real_base_path, runs[0]["adapter"], runs[1]["adapter"])
    print(f"DPO: KL(before || adapter) per replay token: {without:.4f} without the term, "
          f"{with_term:.4f} with kl_to_base 5")
    assert with_term < 0.7 * without
