"""Failures end with a non-zero exit and one `failed` event with a one-line, actionable reason."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from trainer_helpers import REPO, events_of, job, run_cli, trainer_env, write_job, write_jsonl

from training.trainer.config import parse_job_config
from training.trainer.errors import TrainingFailure
from training.trainer.run import run_job


def test_a_bad_data_line_fails_naming_the_line(tmp_path, tiny_base, corrections):
    train = write_jsonl(tmp_path / "train.jsonl", corrections[:4])
    with open(train, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"messages": [{"role": "bot", "content": "hi"}]}) + "\n")
    config = write_job(tmp_path, job(tmp_path, tiny_base, train))
    result = run_cli(["--config", str(config)], timeout=300)
    assert result.returncode == 3
    (failed,) = events_of(tmp_path / "out", "failed")
    assert failed["category"] == "bad_data"
    assert "train.jsonl line 5" in failed["reason"] and "role" in failed["reason"]


def test_unparseable_json_line_is_bad_data(tmp_path, tiny_base, corrections):
    train = write_jsonl(tmp_path / "train.jsonl", corrections[:2])
    with open(train, "a", encoding="utf-8") as handle:
        handle.write('{"messages": [\n')
    with pytest.raises(TrainingFailure) as failure:
        run_job(parse_job_config(job(tmp_path, tiny_base, train)))
    assert failure.value.category == "bad_data"
    assert "line 3: not valid JSON" in failure.value.reason


def test_a_diverging_loss_stops_the_run_as_nan_loss(tmp_path, tiny_base, corrections):
    train = write_jsonl(tmp_path / "train.jsonl", corrections[:16])
    params = {"epochs": 5, "learning_rate": 1e30, "batch_size": 8, "warmup_ratio": 0.0, "seed": 0}
    with pytest.raises(TrainingFailure) as failure:
        run_job(parse_job_config(job(tmp_path, tiny_base, train, train_params=params)))
    assert failure.value.category == "nan_loss"
    events = events_of(tmp_path / "out")
    assert events[-1]["type"] == "failed" and events[-1]["category"] == "nan_loss"
    assert "learning rate" in events[-1]["reason"]
    assert not (tmp_path / "out" / "adapter").exists()
    assert len(events_of(tmp_path / "out", "step")) < 10  # stopped at once, not after 10 steps


def test_sigterm_cancels_quickly_with_a_cancelled_event(tmp_path, tiny_base, corrections):
    train = write_jsonl(tmp_path / "train.jsonl", corrections)
    params = {"epochs": 200, "learning_rate": 1e-3, "batch_size": 8, "seed": 0}
    config = write_job(tmp_path, job(tmp_path, tiny_base, train, train_params=params))
    process = subprocess.Popen(
        [sys.executable, "-m", "training.trainer", "--config", str(config)],
        cwd=REPO,
        env=trainer_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while not events_of(tmp_path / "out", "step") and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert returncode == 143
    assert time.monotonic() - sent < 30
    events = events_of(tmp_path / "out")
    assert events[-1]["type"] == "failed"
    assert events[-1]["category"] == "cancelled"
