"""Helpers of the Slurm tests: start/stop the cluster's pieces, write job bundles, and poll
a job the way the runner does."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STATE_DIR = Path(os.environ.get("SLURM_STATE_DIR", REPO / "var" / "slurm"))
TERMINAL = {"completed", "failed", "cancelled", "retry"}


def _pid_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


def cluster_is_up() -> bool:
    if not (STATE_DIR / "env.sh").is_file() or not _pid_alive(STATE_DIR / "sshd.pid"):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip().startswith(("idle", "mix", "alloc"))


def slurm_up() -> None:
    """Start whatever is missing (munge, slurmctld, slurmd, sshd); idempotent."""
    result = subprocess.run([str(REPO / "scripts" / "slurm-up.sh"), "--quiet"],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"scripts/slurm-up.sh failed ({result.returncode}):\n{result.stderr}")


def stop_sshd() -> None:
    """Stop the loopback sshd (the 'login node' goes away); running jobs are untouched.

    Its per-connection children are ended too, so that no session survives the outage."""
    pid = int((STATE_DIR / "sshd.pid").read_text().strip())
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    os.kill(pid, 15)
    for child in children.split():
        try:
            os.kill(int(child), 15)
        except OSError:
            pass
    for _ in range(50):
        if not _pid_alive(STATE_DIR / "sshd.pid"):
            break
        time.sleep(0.1)


def read_env_sh() -> dict[str, str]:
    env = {}
    for line in (STATE_DIR / "env.sh").read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = " ".join(shlex.split(value)) if value else ""
    return env


def qa_records(n: int = 16) -> list[dict]:
    return [
        {"messages": [
            {"role": "user", "content": f"What is the code word number {i}?"},
            {"role": "assistant", "content": f"The code word number {i} is lantern-{i * 7}."},
        ]}
        for i in range(n)
    ]


def write_bundle(folder: Path, job_id: str, base_model: Path, *, train: dict | None = None,
                 extra: dict | None = None, records: int = 16) -> Path:
    """A job bundle as the runner prepares it: job.json (local paths) + the data snapshot."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = qa_records(records)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    job = {
        "job_id": job_id,
        "method": "sft",
        "base_model": {"path": str(base_model)},
        "data": {"train": "train.jsonl", "eval": str(folder / "eval.jsonl")},
        "lora": {"r": 8, "alpha": 16},
        "train": {"epochs": 2, "learning_rate": 5e-3, "batch_size": 4, "eval_every": 4,
                  "save_every": 4, **(train or {})},
        "output_dir": str(folder / "output"),
        "deepspeed": None,
        "resume": False,
        **(extra or {}),
    }
    (folder / "job.json").write_text(json.dumps(job, indent=2))
    return folder


@dataclass
class Observed:
    """What a stand-in for the runner saw while polling one job."""

    states: list[str] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    running_step_events: int = 0  # step events that arrived while Slurm said RUNNING
    last: object = None


def submit_like_runner(backend, job, bundle: Path | None = None) -> str:
    """Submit as the runner does: the backend starts the job, the services open the attempt's
    billing record, and the row stores both."""
    from training.services.cluster import training_job_submission_record

    slurm_id = backend.submit(job, Path(bundle or job.work_dir))
    job.external_id = slurm_id
    billed = training_job_submission_record(job=job, backend=backend, external_id=slurm_id)
    job.save(update_fields=["external_id", *billed])
    return slurm_id


def poll_until(backend, job, *, until=TERMINAL, timeout: float = 120, interval: float = 1.0,
               observed: Observed | None = None) -> Observed:
    """Poll like the runner does (store the new offset, keep the events) until a state in
    `until` is reported; fails the test on timeout."""
    observed = observed or Observed()
    deadline = time.monotonic() + timeout
    while True:
        result = backend.poll(job)
        observed.last = result
        if not observed.states or observed.states[-1] != result.state:
            observed.states.append(result.state)
        observed.events += result.events
        if result.state == "running":
            observed.running_step_events += sum(e.get("type") == "step" for e in result.events)
        job.events_offset = result.new_offset
        # The services bill what the backend measured, as the runner's poll step does.
        from training.services.cluster import slurm_usage_record

        billed = ["resources", "gpu_hours"] if slurm_usage_record(job=job, usage=result.usage) \
            else []
        job.save(update_fields=["events_offset", *billed])
        if result.state in until:
            return observed
        if time.monotonic() > deadline:
            pytest.fail(f"job {job.id} still {result.state} after {timeout}s "
                        f"(states {observed.states}, reason {result.reason!r})")
        time.sleep(interval)
