"""The LUMI launch itself, as far as a CPU machine allows: the LUMI batch script (settings'
defaults) rendered for 2 tasks on the local Slurm, with the container prefix swapped by settings
(SLURM_LAUNCHER=srun, SLURM_REMOTE_PYTHON = this venv's python) and the resources and partition
of this node; `srun` starts two ranks that train a LoRA adapter under DeepSpeed ZeRO-3 on the CPU
(gloo). The first attempt is cancelled with `scancel` after a checkpoint (a stand-in for a
preemption, which this cluster cannot produce); the platform's resubmission resumes it from
that checkpoint and the job completes with an adapter that loads.

Nothing stands in for srun or DeepSpeed. What still differs from LUMI (singularity, ROCm, RCCL,
more than one node) is in the README's "What the local DeepSpeed test proves"."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.slurm.helpers import REPO, TERMINAL, Observed, poll_until, submit_like_runner
from training.backends.slurm import SlurmBackend
from training.backends.slurm_script import (
    SlurmConfig,
    render_batch_script,
    render_probe_script,
)
from training.backends.ssh import SshTarget, ssh_session

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

LUMI_ACCOUNT = "project_465000123"


def lumi_config() -> SlurmConfig:
    """SlurmConfig.from_settings() in a process whose environment sets no SLURM_* but the
    account: the LUMI defaults of settings.py, not whatever the test settings hold."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    clean.update(SLURM_ACCOUNT=LUMI_ACCOUNT, SYNAPSEX_EMBEDDED="1",
                 DJANGO_SETTINGS_MODULE="synapsex_site.settings")
    code = ("import dataclasses, django, json; django.setup()\n"
            "from training.backends.slurm_script import SlurmConfig\n"
            "print(json.dumps(dataclasses.asdict(SlurmConfig.from_settings())))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    values = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("container_binds", "modules", "whole_node_partitions"):
        values[key] = tuple(values[key])
    values["env"] = tuple(tuple(pair) for pair in values["env"])
    return SlurmConfig(**values).validated()


def local_config(lumi: SlurmConfig, cluster: dict[str, str]) -> SlurmConfig:
    """The LUMI config with what this node and this machine need instead: the resources of a
    2-CPU node without GPUs, its partition and scratch, no LUMI modules, and the container
    prefix dropped (srun runs this venv's python directly)."""
    return lumi.with_(
        remote_work_dir=cluster["SLURM_REMOTE_WORK_DIR"],
        partition=cluster["SLURM_PARTITION"],
        gpus_per_node=0,
        ntasks_per_node=2,
        cpus_per_task=1,
        modules=(),
        launcher="srun",
        remote_python=cluster["SLURM_REMOTE_PYTHON"],
        sacct_mode="jobcomp",
    )


def _lines(script: str, config: SlurmConfig) -> set[str]:
    return set(script.replace(config.remote_work_dir, "<WORK>").splitlines())


def test_the_local_script_is_the_lumi_script_with_only_site_lines_and_the_container_swapped(
        slurm_cluster):
    lumi = lumi_config()
    local = local_config(lumi, slurm_cluster)
    job_id = "train_0123456789ab"
    lumi_lines = _lines(render_batch_script(lumi, job_id), lumi)
    local_lines = _lines(render_batch_script(local, job_id), local)
    python = slurm_cluster["SLURM_REMOTE_PYTHON"]
    launch = ("  bash -c 'export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID; exec {python} -m "
              "training.trainer --config <WORK>/train_0123456789ab/job.json'")
    assert lumi_lines - local_lines == {
        "#SBATCH --partition=standard-g", "#SBATCH --gpus-per-node=8",
        "#SBATCH --ntasks-per-node=8", "#SBATCH --cpus-per-task=7",
        "#SBATCH --mem-per-gpu=60G",
        "module use /appl/local/laifs/modules", "module load lumi-aif-singularity-bindings",
        "SIF=/appl/local/laifs/containers/lumi-multitorch-latest.sif",
        f'  singularity run -B /scratch/{LUMI_ACCOUNT} "$SIF" \\',
        launch.format(python="python"),
    }
    assert local_lines - lumi_lines == {
        f"#SBATCH --partition={slurm_cluster['SLURM_PARTITION']}",
        "#SBATCH --ntasks-per-node=2", "#SBATCH --cpus-per-task=1",
        launch.format(python=python),
    }
    # Kept from LUMI: the account, srun with LUMI's CPU masks (this node has no task/affinity
    # plugin: srun says so and runs unbound), the NCCL/MIOpen/HF environment, MASTER_ADDR/PORT.
    assert 'srun --cpu-bind=v,mask_cpu="$CPU_BIND_MASKS" \\' in local_lines
    assert f"#SBATCH --account={LUMI_ACCOUNT}" in local_lines


def _remote_text(path: str) -> str:
    with ssh_session(SshTarget.from_settings()) as s:
        got = s.read_from(path, 0, 50_000_000)
    assert got is not None, f"{path} does not exist on the cluster"
    return got[0].decode("utf-8", "replace")


def _rank_lines(log: str, tag: str) -> dict[int, dict]:
    """`synapsex-distributed {...}` lines of the job log (each rank prints its own) by rank."""
    found = {}
    for match in re.finditer(rf"^{tag} (\{{.*\}})$", log, re.M):
        facts = json.loads(match.group(1))
        found[facts["rank"]] = facts
    return found


def test_two_ranks_train_under_zero3_through_srun_and_resume_after_scancel(
        make_slurm_job, slurm_cluster, tiny_base_path):
    from training.models import TrainingEvent
    from training.services.resubmit import training_job_resubmit

    started = time.monotonic()
    backend = SlurmBackend(config=local_config(lumi_config(), slurm_cluster))
    # 16 examples, batch 4 per rank, 2 ranks: 2 steps per epoch; 40 epochs = 80 steps,
    # a checkpoint every 10.
    job = make_slurm_job(train={"epochs": 40, "eval_every": 10, "save_every": 10,
                                "early_stopping_patience": None})
    first_id = submit_like_runner(backend, job)
    job_dir = backend.config.job_dir(job.id)
    script = _remote_text(f"{job_dir}/job.sbatch")
    assert "#SBATCH --ntasks-per-node=2" in script and "singularity" not in script
    ds = json.loads(_remote_text(f"{job_dir}/ds_config.json"))
    assert ds["zero_optimization"]["stage"] == 3
    assert json.loads(_remote_text(f"{job_dir}/job.json"))["deepspeed"] == ds

    # Attempt 1: wait for a checkpoint, then cancel it as a preemption would end it.
    observed = Observed()
    deadline = time.monotonic() + 240
    while not any(e["type"] == "checkpoint" for e in observed.events):
        poll_until(backend, job, until={"running"} | TERMINAL, timeout=240, interval=0.5,
                   observed=observed)
        last = observed.last
        assert last.state == "running", (last.state, last.reason, last.log_tail)
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.5)
    subprocess.run(["scancel", first_id], check=True)
    observed = poll_until(backend, job, timeout=60, interval=0.5, observed=observed)
    assert observed.last.state == "cancelled", observed.last.reason
    # The newest checkpoint written before the cancel took effect (read after it: all events).
    checkpoint_step = max(e["step"] for e in observed.events if e["type"] == "checkpoint")
    first_started = next(e for e in observed.events if e["type"] == "started")
    assert first_started["totals"]["world_size"] == 2
    assert first_started["distributed"]["backend"] == "gloo"
    assert first_started["distributed"]["zero3"] is True
    assert not any(e["type"] == "completed" for e in observed.events)
    first_steps = [e["step"] for e in observed.events if e["type"] == "step"]
    assert checkpoint_step <= first_steps[-1] < 80

    log1 = _remote_text(f"{job_dir}/slurm-{first_id}.out")
    ranks = _rank_lines(log1, "synapsex-distributed")
    assert sorted(ranks) == [0, 1], log1[-4000:]
    for facts in ranks.values():
        assert facts["world_size"] == 2 and facts["backend"] == "gloo", facts
        assert facts["accelerator"] == "cpu" and facts["zero3"] is True, facts
        # ZeRO-3 partitioned the weights: each rank holds about half of all elements.
        assert facts["zero3_local_numel"] * 2 == pytest.approx(facts["zero3_total_numel"],
                                                               rel=0.02), facts

    # Attempt 2: the platform's resubmission (what the runner does for TIMEOUT/PREEMPTED).
    job = training_job_resubmit(job, backend, f"Slurm job {first_id} cancelled by the test")
    assert job.attempt == 2 and job.external_id != first_id, job.failure_reason
    second_id = job.external_id
    assert "--resume" in _remote_text(f"{job_dir}/job.sbatch")
    resumed = poll_until(backend, job, timeout=300, interval=1.0)
    assert resumed.last.state == "completed", (resumed.last.reason, resumed.last.log_tail)
    started_again = next(e for e in resumed.events if e["type"] == "started")
    assert started_again["resumed_from_step"] == checkpoint_step
    second_steps = [e["step"] for e in resumed.events if e["type"] == "step"]
    assert second_steps[0] == checkpoint_step + 1 and second_steps[-1] == 80
    completed = resumed.events[-1]
    assert completed["type"] == "completed" and completed["steps"] == 80
    assert completed["distributed"]["engine_zero_stage"] == 3
    assert completed["distributed"]["resumed_from"] == f"checkpoint-{checkpoint_step}"

    log2 = _remote_text(f"{job_dir}/slurm-{second_id}.out")
    trained = _rank_lines(log2, "synapsex-distributed-trained")
    assert sorted(trained) == [0, 1], log2[-4000:]
    for facts in trained.values():
        assert facts["engine_zero_stage"] == 3 and facts["world_size"] == 2
        assert facts["resumed_from"] == f"checkpoint-{checkpoint_step}"
    resubmitted = TrainingEvent.objects.filter(job=job, type="resubmitted")
    assert resubmitted.count() == 1

    # The adapter: fetched, sha256-verified, and it loads onto the base model with trained
    # (non-zero) LoRA B weights, i.e. ZeRO-3 gathered the partitioned weights on save.
    fetched = backend.fetch(job)
    manifest = json.loads((fetched / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["hyperparameters"]["deepspeed"] is True
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_base_path)
    model = PeftModel.from_pretrained(base, fetched / "adapter")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.numel() > 0 for p in lora_b)
    assert sum(float(p.abs().sum()) for p in lora_b) > 0
    print(f"\n2-rank ZeRO-3 job {job.id}: Slurm {first_id} cancelled after step "
          f"{first_steps[-1]} (checkpoint {checkpoint_step}), Slurm {second_id} resumed and "
          f"completed; {time.monotonic() - started:.0f} s in all")


def test_the_dry_run_is_the_job_template_with_a_probe_as_each_task(slurm_cluster):
    lumi = lumi_config()
    job = set(render_batch_script(lumi, "train_0123456789ab").replace(
        "train_0123456789ab", "ID").splitlines())
    probe = set(render_probe_script(lumi, "dryrun_x").replace("dryrun_x", "ID").splitlines())
    # Same resources, modules, environment, srun, masks and container; only the time limit,
    # the title, the batch-step checks and the task's module differ.
    assert {line for line in job - probe if not line.startswith("#")} == {
        "export SYNAPSEX_JOB_ID=ID SYNAPSEX_ATTEMPT=1",
        "  bash -c 'export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID; exec python -m "
        f"training.trainer --config /scratch/{LUMI_ACCOUNT}/synapsex/jobs/ID/job.json'",
    }
    assert "#SBATCH --time=00:10:00" in probe and "#SBATCH --gpus-per-node=8" in probe
    assert "  singularity run -B /scratch/project_465000123 \"$SIF\" \\" in probe
    assert any("rocm-smi" in line for line in probe - job)
    assert any("singularity --version" in line for line in probe - job)


def test_the_dry_run_job_runs_on_two_ranks_and_reports_their_environment(slurm_settings):
    from django.core.management import call_command

    slurm_settings.SLURM_LAUNCHER = "srun"
    slurm_settings.SLURM_NTASKS_PER_NODE = 2
    out = io.StringIO()
    call_command("slurm_dry_run", "--wait", "180", stdout=out)
    text = out.getvalue()
    probes = _rank_lines(text, "synapsex-probe")
    assert sorted(probes) == [0, 1], text[-4000:]
    for facts in probes.values():
        assert facts["world_size"] == 2 and facts["packages"]["deepspeed"], facts
        assert facts["gpu"]["device_count"] == 0  # this node has no GPU
        assert facts["all_reduce"]["backend"] == "gloo" and facts["all_reduce"]["ok"], facts
        assert facts["all_reduce"]["sum"] == 2.0
        assert facts["env"]["RANK"] == str(facts["rank"]) and facts["env"]["MASTER_PORT"]
    assert "no singularity on PATH" in text and "no rocm-smi on PATH" in text
    assert "COMPLETED" in text
