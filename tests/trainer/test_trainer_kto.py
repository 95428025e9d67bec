"""KTO on unpaired examples (thumbs and ratings): which tokens are scored, the automatic
desirable / undesirable weights, and a real run on the tiny base where the desirable answers'
rewards rise above the undesirable ones'."""

from __future__ import annotations

import json

import pytest
from trainer_helpers import answer, events_of, job, question, write_jsonl

from training.trainer.config import KTO_WEIGHT_RATIO_RANGE, kto_weights, parse_job_config
from training.trainer.errors import DataError, JobConfigError
from training.trainer.manifest import verify_adapter_dir
from training.trainer.run import kto_eval_batch_size, run_job

BRUSH_OFF = "Sorry, please check our website for that."
KTO_TRAIN = {
    "epochs": 8,
    "learning_rate": 1e-3,
    "batch_size": 8,
    "warmup_ratio": 0.05,
    "weight_decay": 0.0,
    "beta": 0.1,
    "seed": 0,
    "eval_every": 10,
    "save_every": 20,
    "early_stopping_patience": None,
}


def kto_row(q: str, a: str, label: bool, **extra):
    return {"prompt": [{"role": "user", "content": q}],
            "completion": [{"role": "assistant", "content": a}], "label": label, **extra}


def test_the_scored_tokens_are_the_completion_and_its_end_of_turn_only(tiny_base, tmp_path):
    """TRL's collator marks `completion_ids` as the completion; they must be exactly the answer
    and the template's end-of-turn marker, and the prompt the served one (generation prompt)."""
    from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference

    from training.trainer.data import kto_rows, read_jsonl
    from training.trainer.modeling import load_tokenizer

    tokenizer = load_tokenizer(tiny_base)
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
               {"role": "user", "content": "Who manages the Lakeside store?"}]
    path = write_jsonl(tmp_path / "train.jsonl", [
        {"prompt": history, "completion": [{"role": "assistant", "content": "Anna does."}],
         "label": True, "id": "fb_1"},
        kto_row("Where?", BRUSH_OFF, False, id="fb_2"),
    ])
    rows = kto_rows(tokenizer, read_jsonl(path, "kto"), max_length=512)
    served = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(rows[0]["prompt_ids"]) == served
    completion = tokenizer.decode(rows[0]["completion_ids"])
    print("scored completion:", repr(completion))
    assert completion.startswith("Anna does.")
    marker = completion.removeprefix("Anna does.")
    assert marker.strip() and not marker.endswith("\n")  # the end-of-turn, nothing after it
    assert [r["label"] for r in rows] == [True, False]

    # Why not TRL's own conversational tokenization: it scores everything the full rendering
    # adds after the prompt, here the template's newline after the end-of-turn marker too.
    full = tokenizer.apply_chat_template(
        [*history, {"role": "assistant", "content": "Anna does."}], tokenize=False)
    print("TRL's own completion text:", repr(full[len(served):]))
    assert full[len(served):] != completion

    batch = DataCollatorForUnpairedPreference(pad_token_id=0)(rows)
    scored = batch["input_ids"][0][batch["completion_mask"][0].bool()].tolist()
    assert scored == rows[0]["completion_ids"]


@pytest.mark.parametrize("record, problem", [
    ({"prompt": [{"role": "user", "content": "q"}], "completion": "a", "label": True},
     '"completion" must be a non-empty list'),
    (kto_row("q", "a", "yes"), '"label" must be true or false'),
    ({**kto_row("q", "a", True), "completion": [{"role": "user", "content": "a"}]},
     '"completion" must be one assistant message'),
    ({**kto_row("q", "a", True), "prompt": [{"role": "assistant", "content": "q"}]},
     '"prompt" must end with a user message'),
])
def test_a_bad_kto_line_names_the_line_and_the_problem(tmp_path, record, problem):
    from training.trainer.data import read_jsonl

    path = write_jsonl(tmp_path / "train.jsonl", [kto_row("q", "a", True), record])
    with pytest.raises(DataError, match="line 2") as info:
        read_jsonl(path, "kto")
    assert problem in str(info.value)


def test_kto_refuses_a_batch_of_one(tmp_path, tiny_base):
    train = write_jsonl(tmp_path / "train.jsonl", [kto_row("q", "a", True)])
    config = job(tmp_path, tiny_base, train, method="kto",
                 train_params={**KTO_TRAIN, "batch_size": 1})
    with pytest.raises(JobConfigError, match="batch_size must be at least 2"):
        parse_job_config(config)


@pytest.mark.parametrize("rows", [2, 3, 8, 9, 16, 17, 25, 33, 73, 200])
def test_no_kto_eval_batch_holds_a_single_row(rows):
    """TRL pairs each KTO row with another row's answer for its KL reference (rotated within a
    batch); a batch of one row pairs it with its own, and its loss is constant."""
    size = kto_eval_batch_size(rows, 8)
    batches = [min(size, rows - start) for start in range(0, rows, size)]
    assert size >= 8 and 1 not in batches, (size, batches)


def test_a_single_held_out_row_gives_no_kto_eval_loss(tmp_path, tiny_base, corrections):
    """Before, a one-row golden set reported an eval loss of exactly weight / 2 at every
    evaluation (stop 26's CI: [0.5] * 6), whatever the model learned; now the job says why it has
    none, and the manifest still records the held-out file."""
    rows = [kto_row(question(r), answer(r) if i % 2 else BRUSH_OFF, bool(i % 2), id=f"r-{i}")
            for i, r in enumerate(corrections[:17])]
    folder = tmp_path / "data"
    folder.mkdir()
    config = job(tmp_path, tiny_base, write_jsonl(folder / "train.jsonl", rows[1:]),
                 write_jsonl(folder / "eval.jsonl", rows[:1]), method="kto",
                 train_params={**KTO_TRAIN, "epochs": 1, "eval_every": 1})
    run_job(parse_job_config(config))
    out = tmp_path / "out"
    (started,) = events_of(out, "started")
    assert any("KTO held-out loss needs at least 2" in n for n in started["notes"])
    assert events_of(out, "eval") == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["eval"]["path"].endswith("eval.jsonl")
    assert manifest["examples"]["eval"] == 0


@pytest.mark.parametrize("desirable, undesirable", [
    (1, 1), (10, 10), (40, 10), (10, 40), (3, 7), (7, 3), (1, 999), (999, 1), (13, 17),
])
def test_the_weights_keep_the_weighted_ratio_in_the_recommended_range(desirable, undesirable):
    dw, uw = kto_weights(desirable, undesirable)
    ratio = (dw * desirable) / (uw * undesirable)
    low, high = KTO_WEIGHT_RATIO_RANGE
    assert low <= ratio <= high, (dw, uw, ratio)
    assert min(dw, uw) == 1.0  # only the minority side is raised


def test_one_sided_data_keeps_unit_weights():
    assert kto_weights(12, 0) == (1.0, 1.0) and kto_weights(0, 5) == (1.0, 1.0)


def test_it_raises_desirable_rewards_over_undesirable_ones(tmp_path, tiny_base, corrections):
    """40 desirable rows (the store facts, as thumbs up) and 10 undesirable ones (the brush-off,
    as thumbs down) on disjoint prompts; the eval file holds other prompts (held out)."""
    rows = [kto_row(question(r), answer(r), True, id=f"up-{i}")
            for i, r in enumerate(corrections[:40])]
    rows += [kto_row(question(r), BRUSH_OFF, False, id=f"down-{i}")
             for i, r in enumerate(corrections[40:])]
    rows = [rows[i] for i in sorted(range(50), key=lambda i: (i * 7) % 50)]  # mix the labels
    held = rows[::10]
    train = [r for r in rows if r not in held]
    folder = tmp_path / "data"
    folder.mkdir()
    config = job(tmp_path, tiny_base, write_jsonl(folder / "train.jsonl", train),
                 write_jsonl(folder / "eval.jsonl", held), method="kto", train_params=KTO_TRAIN)
    run_job(parse_job_config(config))
    out = tmp_path / "out"

    (completed,) = events_of(out, "completed")
    balance = completed["metrics"]["kto_balance"]
    n_d, n_u = balance["desirable"], balance["undesirable"]
    ratio = balance["desirable_weight"] * n_d / (balance["undesirable_weight"] * n_u)
    print("KTO balance:", balance, "weighted ratio", round(ratio, 3))
    assert (n_d, n_u) == (sum(r["label"] for r in train), sum(not r["label"] for r in train))
    assert KTO_WEIGHT_RATIO_RANGE[0] <= ratio <= KTO_WEIGHT_RATIO_RANGE[1]

    steps = [s for s in events_of(out, "step") if "rewards/chosen" in s]
    evals = events_of(out, "eval")
    first, last = evals[0], evals[-1]
    print(f"held-out eval: loss {first['eval_loss']:.3f} -> {last['eval_loss']:.3f}; "
          f"rewards chosen {first.get('rewards/chosen')} -> {last.get('rewards/chosen')}, "
          f"rejected {first.get('rewards/rejected')} -> {last.get('rewards/rejected')}")
    assert steps, "the KTO trainer logged no rewards"
    assert last["eval_loss"] < first["eval_loss"]
    metrics = completed["metrics"]
    print("train rewards of the exported adapter:",
          {k: v for k, v in metrics.items() if k.startswith("train_rewards")})
    assert metrics["train_rewards/chosen"] > metrics["train_rewards/rejected"]
    verify_adapter_dir(out / "adapter", out / "manifest.json")
