"""Checkpoints: a killed run resumes to the same step count; early stopping ships the best step."""

from __future__ import annotations

import subprocess
import sys

import torch
from safetensors.torch import load_file
from trainer_helpers import (
    REPO,
    chat,
    events_of,
    job,
    question,
    run_cli,
    trainer_env,
    write_job,
    write_jsonl,
)

from training.trainer.config import parse_job_config
from training.trainer.run import run_job

# Runs the real CLI, but SIGKILLs its own process right after the given checkpoint is written:
# no cleanup, no final event, exactly what a node failure or OOM-killer leaves behind.
KILL_AFTER_CHECKPOINT = """
import os, signal, sys
from training.trainer import run
from training.trainer.__main__ import main

kill_at = int(sys.argv[2])
real_run_job = run.run_job

def hook(event):
    if event["type"] == "checkpoint" and event["step"] >= kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

run.run_job = lambda config, **kw: real_run_job(config, on_event=hook)
sys.exit(main(["--config", sys.argv[1]]))
"""


def test_a_killed_run_resumes_and_finishes_with_the_same_steps(
    tmp_path, tiny_base, corrections_files, sft_run
):
    train, eval_path = corrections_files
    config = write_job(tmp_path, job(tmp_path, tiny_base, train, eval_path))
    out = tmp_path / "out"

    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_CHECKPOINT, str(config), "28"],
        cwd=REPO,
        env=trainer_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    # Checkpoints at the periodic save (28) and at each new best eval loss (every 14 here).
    assert [e["step"] for e in events_of(out, "checkpoint")][-1] == 28
    assert not events_of(out, "completed")

    resumed = run_cli(["--config", str(config), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    started = events_of(out, "started")
    assert [s["resumed_from_step"] for s in started] == [None, 28]
    steps_after_resume = [s["step"] for s in events_of(out, "step") if s["ts"] > started[1]["ts"]]
    assert steps_after_resume == list(range(29, 85))
    (completed,) = events_of(out, "completed")
    assert completed["steps"] == sft_run.completed["steps"] == 84
    # The token and sample counters carried over in the checkpoint.
    assert completed["samples_processed"] == sft_run.completed["samples_processed"]


def test_early_stopping_exports_the_best_checkpoint_not_the_last(tmp_path, tiny_base, corrections):
    # Eval set that conflicts with training: the same questions answered with words training
    # never shows; once the corrections are learned, every step makes the eval loss worse. (With
    # "Sorry, I do not know that." as the answer, one fresh box's tiny base lowered that loss
    # almost to the end, 8.21 -> 7.50, and rose by 0.01 once; this answer's loss fell to 8.20 at
    # the fourth evaluation and rose at every one after, to 8.39.)
    train = write_jsonl(tmp_path / "train.jsonl", corrections)
    conflicting = write_jsonl(
        tmp_path / "eval.jsonl",
        [chat(question(r), "Purple elephants juggle quietly.") for r in corrections[:16]],
    )
    params = {
        "epochs": 6,
        "learning_rate": 2e-3,
        "batch_size": 8,
        "warmup_ratio": 0.0,
        "weight_decay": 0.0,
        "seed": 0,
        "eval_every": 3,
        "save_every": 6,
        "early_stopping_patience": 2,
    }
    run_job(parse_job_config(job(tmp_path, tiny_base, train, conflicting, train_params=params)))
    out = tmp_path / "out"

    evals = events_of(out, "eval")
    (completed,) = events_of(out, "completed")
    best = min(evals, key=lambda e: e["eval_loss"])
    assert completed["best_step"] == best["step"]
    assert evals[-1]["eval_loss"] > best["eval_loss"]
    assert (
        completed["steps"] < events_of(out, "started")[0]["totals"]["total_steps"]
    )  # stopped early
    assert len(evals) == [e["step"] for e in evals].index(best["step"]) + 3  # patience 2

    exported = load_file(out / "adapter" / "adapter_model.safetensors")
    best_ckpt = load_file(
        out / "checkpoints" / f"checkpoint-{best['step']}" / "adapter_model.safetensors"
    )
    assert exported.keys() == best_ckpt.keys()
    assert all(torch.equal(exported[k], best_ckpt[k]) for k in exported)
    later = max(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*"))
    assert later > best["step"]
    last_ckpt = load_file(out / "checkpoints" / f"checkpoint-{later}" / "adapter_model.safetensors")
    assert not all(torch.equal(exported[k], last_ckpt[k]) for k in exported)


def test_a_tiny_held_out_split_reports_but_does_not_pick_the_checkpoint(tmp_path, tiny_base,
                                                                        corrections):
    """A held-out split under train.select_min_eval_rows (16 by default) has its loss reported at
    every evaluation, but it neither stops the run nor picks an earlier checkpoint: the last
    weights are exported, and the started event says why. (A fresh-clone CI run had exported
    step 133 of 252 on a 6-row split.)

    The split is the conflicting set of the test above, whose loss rises once the corrections are
    learned, with the threshold set one above its size. This test used to cut a milder set to 4
    rows under the default threshold instead, but the loss of 4 rows wanders with the box: it
    fell at almost every evaluation on one fresh box (8.24, 7.93, ..., 7.57), and failed stop
    25's CI the same way, so there was no earlier checkpoint to prefer and nothing to tell. The
    test asserts that the reported losses would have stopped a run with the threshold met (2
    evaluations without improvement, the patience set here) before its end, and that this run
    went on to the end."""
    train = write_jsonl(tmp_path / "train.jsonl", corrections)
    rows = [chat(question(r), "Purple elephants juggle quietly.") for r in corrections[:16]]
    conflicting = write_jsonl(tmp_path / "eval.jsonl", rows)
    params = {"epochs": 6, "learning_rate": 2e-3, "batch_size": 8, "warmup_ratio": 0.0,
              "weight_decay": 0.0, "seed": 0, "eval_every": 3, "save_every": 6,
              "early_stopping_patience": 2, "select_min_eval_rows": len(rows) + 1}
    run_job(parse_job_config(job(tmp_path, tiny_base, train, conflicting, train_params=params)))
    out = tmp_path / "out"

    evals = events_of(out, "eval")
    (started,) = events_of(out, "started")
    (completed,) = events_of(out, "completed")
    losses = [e["eval_loss"] for e in evals]
    print("tiny split eval losses:", [round(x, 3) for x in losses])
    would_stop = next((evals[i]["step"] for i in range(2, len(evals))
                       if min(losses[:i + 1]) == min(losses[:i - 1])), None)
    assert would_stop is not None and would_stop < evals[-1]["step"], losses  # something to tell
    assert completed["steps"] == started["totals"]["total_steps"]  # not stopped early
    assert completed["best_step"] == completed["steps"]  # the last weights were exported
    assert evals[-1]["step"] == completed["steps"]
    assert any(f"has {len(rows)} rows (fewer than {len(rows) + 1})" in note
               for note in started["notes"])
