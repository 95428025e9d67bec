"""Session fixtures for the trainer tests: one tiny base model, one real SFT run, shared.

Everything here is real training on the CPU; the fixtures exist so that the expensive parts (the
base model's pre-training, the SFT run several tests inspect) happen once per session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from trainer_helpers import (
    events_of,
    job,
    read_jsonl,
    store_corrections,
    write_jsonl,
)


@dataclass
class Run:
    """A finished run: its output folder and the events it wrote."""

    out: Path
    config: dict[str, Any]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return events_of(self.out, kind)

    @property
    def completed(self) -> dict[str, Any]:
        (event,) = self.events("completed")
        return event


@pytest.fixture(scope="session")
def tiny_base(tiny_base_path) -> Path:
    """The shared tiny base (tests/conftest.py builds it once per builder version)."""
    return tiny_base_path


@pytest.fixture(scope="session")
def base_knowledge(tiny_base) -> list[dict[str, Any]]:
    return read_jsonl(tiny_base / "base_knowledge.jsonl")


@pytest.fixture(scope="session")
def corrections() -> list[dict[str, Any]]:
    return store_corrections()


@pytest.fixture(scope="session")
def corrections_files(tmp_path_factory, corrections) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("corrections")
    train = write_jsonl(folder / "train.jsonl", corrections)
    # Held-out eval: a slice of the same facts (a snapshot's eval split is drawn from the data).
    eval_path = write_jsonl(folder / "eval.jsonl", corrections[::5])
    return train, eval_path


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory, tiny_base, corrections_files) -> Run:
    """The reference SFT run: 50 corrections, in-process through `run_job`."""
    from training.trainer.config import parse_job_config
    from training.trainer.run import run_job

    tmp = tmp_path_factory.mktemp("sft")
    train, eval_path = corrections_files
    config = job(tmp, tiny_base, train, eval_path)
    run_job(parse_job_config(config))
    return Run(out=tmp / "out", config=config)
