"""The Slurm backend against a REAL Slurm (slurmctld + slurmd on this machine) reached over a
REAL SSH connection (the loopback sshd that scripts/slurm-up.sh starts): submit, poll, cancel,
fetch, transport failures, host-key checking, and shell-injection attempts. The trainer is the
real one, on the CPU, on the tiny base model."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.slurm.helpers import STATE_DIR, poll_until, slurm_up, stop_sshd, submit_like_runner
from training.backends.slurm import SlurmBackend
from training.backends.ssh import HostKeyRejected, SshTarget, ssh_session
from training.services import gpu_hours_for

pytestmark = pytest.mark.slurm


def _remote_text(path: str) -> str:
    with ssh_session(SshTarget.from_settings()) as s:
        got = s.read_from(path, 0, 10_000_000)
    assert got is not None, f"{path} does not exist on the cluster"
    return got[0].decode()


def test_it_runs_a_training_job_on_the_cluster_and_fetches_a_verified_adapter(make_slurm_job):
    # 30 epochs x 4 steps: long enough (~10 s and more) that polls see it running.
    job = make_slurm_job(train={"epochs": 30, "eval_every": 20, "save_every": 20})
    backend = SlurmBackend()

    slurm_id = submit_like_runner(backend, job)
    assert slurm_id.isdigit() and job.external_id == slurm_id
    job.refresh_from_db()
    attempt = job.resources["slurm"]["attempts"][0]
    assert (attempt["attempt"], attempt["slurm_id"], attempt["resume"]) == (1, slurm_id, False)

    # job.json was rewritten for the remote layout: every path lies in the job's folder (or
    # the staged model cache), none points back into the local bundle.
    job_dir = f"{backend.config.remote_work_dir}/{job.id}"
    remote = json.loads(_remote_text(f"{job_dir}/job.json"))
    assert remote["output_dir"] == f"{job_dir}/output"
    assert remote["data"] == {"train": f"{job_dir}/data/train.jsonl",
                              "eval": f"{job_dir}/data/eval.jsonl"}
    assert remote["base_model"]["path"].startswith(f"{backend.config.remote_work_dir}/_models/")
    assert job.work_dir not in json.dumps(remote)
    script = _remote_text(f"{job_dir}/job.sbatch")
    assert "#SBATCH --partition=debug" in script and "--config " + job_dir + "/job.json" in script

    observed = poll_until(backend, job, timeout=180, interval=0.7)
    assert observed.states[-1] == "completed", observed.last.reason
    assert "running" in observed.states
    assert observed.states[0] in ("queued", "running")
    # The loss curve arrived live: step events were delivered while Slurm said RUNNING.
    assert observed.running_step_events > 0
    kinds = [e["type"] for e in observed.events]
    assert kinds[0] == "started" and kinds[-1] == "completed"
    steps = [e["step"] for e in observed.events if e["type"] == "step"]
    assert steps == sorted(set(steps)) and steps[-1] == 120  # each event exactly once

    result = backend.fetch(job)
    manifest = json.loads((result / "manifest.json").read_text())
    assert sorted(manifest["adapter"]["files"]) == ["adapter_config.json",
                                                   "adapter_model.safetensors"]
    assert (result / "adapter" / "adapter_model.safetensors").stat().st_size > 0

    job.refresh_from_db()
    attempt = job.resources["slurm"]["attempts"][0]
    assert attempt["state"] == "COMPLETED" and attempt["elapsed_seconds"] > 0
    expected = gpu_hours_for("debug", 1, 0, 1, 0, attempt["elapsed_seconds"])
    assert job.gpu_hours == pytest.approx(expected, abs=1e-6) and job.gpu_hours > 0


def test_a_failing_trainer_is_reported_failed_with_its_reason(make_slurm_job):
    job = make_slurm_job()
    Path(job.work_dir, "train.jsonl").write_text('{"messages": "not a list"}\n')
    backend = SlurmBackend()
    backend.submit(job, Path(job.work_dir))

    observed = poll_until(backend, job, timeout=120)
    result = observed.last
    assert result.state == "failed"
    failed = [e for e in observed.events if e["type"] == "failed"]
    assert failed and failed[-1]["category"] == "bad_data"
    assert failed[-1]["reason"] in result.reason
    assert f"Slurm job {job.external_id} ended FAILED (exit code" in result.reason
    assert result.log_tail  # the job's stdout/stderr tail, for the user and the operator


def test_cancel_stops_a_running_job_and_a_queued_job_waits_for_resources(make_slurm_job,
                                                                         settings):
    backend_full = SlurmBackend()
    # The first job takes both cores of the node, so the second has to wait for it.
    big = make_slurm_job(train={"epochs": 2000, "save_every": 1000, "eval_every": 1000})
    backend_big = SlurmBackend(backend_full.config.with_(cpus_per_task=2))
    backend_big.submit(big, Path(big.work_dir))
    poll_until(backend_big, big, until={"running"}, timeout=60, interval=0.5)

    waiting = make_slurm_job()
    backend_full.submit(waiting, Path(waiting.work_dir))
    time.sleep(1.5)
    assert backend_full.poll(waiting).state == "queued"

    backend_big.cancel(big)
    backend_big.cancel(big)  # idempotent
    assert poll_until(backend_big, big, timeout=60).last.state == "cancelled"
    backend_full.cancel(waiting)
    result = poll_until(backend_full, waiting, timeout=60).last
    assert result.state == "cancelled"
    assert "cancelled" in result.reason


@pytest.fixture
def sshd_restored(slurm_cluster):
    yield
    if not (STATE_DIR / "sshd.pid").is_file() or not _sshd_alive():
        slurm_up()


def _sshd_alive() -> bool:
    import os

    try:
        os.kill(int((STATE_DIR / "sshd.pid").read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def test_an_ssh_outage_is_unknown_never_finished_and_polling_resumes(make_slurm_job,
                                                                     sshd_restored):
    job = make_slurm_job(train={"epochs": 40, "eval_every": 40, "save_every": 40})
    backend = SlurmBackend()
    backend.submit(job, Path(job.work_dir))
    observed = poll_until(backend, job, until={"running"}, timeout=90, interval=0.5)
    offset_before = job.events_offset

    stop_sshd()
    outage = backend.poll(job)
    assert outage.state == "unknown"
    assert "cluster unreachable" in outage.reason
    assert outage.new_offset == offset_before and outage.events == []

    slurm_up()  # the login node is back
    observed = poll_until(backend, job, timeout=180, observed=observed)
    assert observed.states[-1] == "completed"
    kinds = [e["type"] for e in observed.events]
    assert kinds.count("started") == 1 and kinds[-1] == "completed"
    steps = [e["step"] for e in observed.events if e["type"] == "step"]
    assert steps == list(range(1, 161))  # nothing lost, nothing twice across the outage


def test_an_unknown_host_key_is_refused(make_slurm_job, slurm_settings, tmp_path):
    # Another host's key under this host's name: what a man in the middle would present.
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    other_key = tmp_path / "known_hosts"
    port = slurm_settings.SLURM_SSH_PORT
    other_key.write_text(f"[127.0.0.1]:{port} " + (tmp_path / "k.pub").read_text())
    slurm_settings.SLURM_SSH_KNOWN_HOSTS = str(other_key)
    job = make_slurm_job()
    with pytest.raises(HostKeyRejected):
        SlurmBackend().submit(job, Path(job.work_dir))
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    slurm_settings.SLURM_SSH_KNOWN_HOSTS = str(empty)
    with pytest.raises(HostKeyRejected, match="not in"):
        SlurmBackend().submit(job, Path(job.work_dir))
    job.external_id = "1"
    assert SlurmBackend().poll(job).state == "unknown"


PAYLOADS = ["$(touch {marker}-dollar)", "`touch {marker}-tick`", "x; touch {marker}-semi",
            "x && rm -rf {marker}-dir", "' ; touch {marker}-quote ; '"]


def test_tenant_values_with_shell_metacharacters_cannot_change_the_script_or_commands(
        make_slurm_job, tmp_path):
    marker = f"/tmp/pwned-{uuid.uuid4().hex[:8]}"
    evil = " ".join(p.format(marker=marker) for p in PAYLOADS)
    # Tenant-controlled values: the base model id and the preset (both reach job.json).
    job = make_slurm_job(extra={"preset": evil})
    bundle = Path(job.work_dir)
    config = json.loads((bundle / "job.json").read_text())
    config["base_model"] = {"hf_id": evil, "revision": evil}
    (bundle / "job.json").write_text(json.dumps(config))
    benign = make_slurm_job()
    backend = SlurmBackend()
    backend.submit(job, bundle)
    backend.submit(benign, Path(benign.work_dir))

    result = poll_until(backend, job, timeout=120).last
    poll_until(backend, benign, timeout=120)
    assert result.state == "failed"  # the trainer refuses the preset, as data
    assert not list(Path("/tmp").glob(Path(marker).name + "*"))

    root = backend.config.remote_work_dir
    script = _remote_text(f"{root}/{job.id}/job.sbatch")
    benign_script = _remote_text(f"{root}/{benign.id}/job.sbatch")
    # The script does not depend on tenant values at all: the same bytes as a benign job's.
    assert script.replace(job.id, "ID") == benign_script.replace(benign.id, "ID")
    assert "touch" not in script and "pwned" not in script
    # The values travelled as JSON data, verbatim.
    remote = json.loads(_remote_text(f"{root}/{job.id}/job.json"))
    assert remote["preset"] == evil and remote["base_model"]["hf_id"] == evil

    # And a job id that is not platform-issued never reaches the cluster.
    job.id = f"train_x; touch {marker}-id"
    with pytest.raises(ValueError, match="not a platform-issued id"):
        backend.submit(job, bundle)
    assert not list(Path("/tmp").glob(Path(marker).name + "*"))
