"""The rendered batch script (LUMI defaults against a reviewed fixture), its refusal of unsafe
values, the state table, LUMI's GPU-hour billing rule and the allocation limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests import factories
from training.backends import base
from training.backends.slurm import parse_elapsed, slurm_state_to_backend
from training.backends.slurm_script import (
    SlurmConfig,
    SlurmConfigError,
    render_batch_script,
    render_deepspeed_json,
)
from training.selectors import slurm_gpu_hours_by_month
from training.services import gpu_hours_for, slurm_allocation_check

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "lumi_2node.sbatch"


def _render_with_settings_defaults(env: dict[str, str], job_id: str, resume: bool = False) -> str:
    """Render in a fresh process whose environment has no SLURM_* but `env`: the settings'
    own defaults (LUMI) are what gets rendered, not whatever this shell exported."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    clean.update(env, SYNAPSEX_EMBEDDED="1", DJANGO_SETTINGS_MODULE="synapsex_site.settings")
    code = (
        "import django; django.setup()\n"
        "from training.backends.slurm_script import SlurmConfig, render_batch_script\n"
        f"print(render_batch_script(SlurmConfig.from_settings(), {job_id!r}, resume={resume}),"
        " end='')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_it_renders_the_reviewed_lumi_script_for_a_2_node_8_gcd_job():
    script = _render_with_settings_defaults(
        {"SLURM_ACCOUNT": "project_465000123", "SLURM_NODES": "2"}, "train_0123456789ab")
    assert script == FIXTURE.read_text()
    # What the review checked, spelled out: one task per GCD, 7 cores each, the container,
    # MIOpen caches on node-local /tmp, the binding masks, srun, and ZeRO-3 via job.json.
    for needle in ("#SBATCH --partition=standard-g", "#SBATCH --nodes=2",
                   "#SBATCH --gpus-per-node=8", "#SBATCH --ntasks-per-node=8",
                   "#SBATCH --cpus-per-task=7", "MIOPEN_USER_DB_PATH=\"/tmp/",
                   "singularity run -B /scratch/project_465000123",
                   'srun --cpu-bind=v,mask_cpu="$CPU_BIND_MASKS"'):
        assert needle in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_a_resubmission_passes_resume_to_the_trainer():
    script = _render_with_settings_defaults({"SLURM_ACCOUNT": "project_465000123"},
                                            "train_0123456789ab", resume=True)
    assert script.rstrip().endswith("job.json --resume'")
    assert "resumes from the last checkpoint" in script


def test_the_deepspeed_config_is_zero3_without_optimizer_offload():
    lumi = SlurmConfig(remote_work_dir="/scratch/project_1/jobs", account="project_1")
    ds = json.loads(render_deepspeed_json(lumi))
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_optimizer"] == {"device": "none"}
    assert ds["train_micro_batch_size_per_gpu"] == "auto"
    plain = lumi.with_(launcher="plain", gpus_per_node=0)
    assert render_deepspeed_json(plain) is None


def test_the_plain_launcher_runs_the_trainer_directly_without_srun_or_container():
    config = SlurmConfig(remote_work_dir="/srv/jobs", partition="debug", gpus_per_node=0,
                         ntasks_per_node=1, cpus_per_task=1, mem_per_gpu="", launcher="plain",
                         remote_python="/opt/venv/bin/python", modules=(), env=())
    script = render_batch_script(config, "train_abc123")
    assert script.splitlines()[-1] == (
        "exec /opt/venv/bin/python -m training.trainer --config /srv/jobs/train_abc123/job.json")
    assert "srun" not in script and "singularity" not in script
    assert "--gpus-per-node" not in script and "--account" not in script


@pytest.mark.parametrize("job_id", [
    "train_$(touch /tmp/pwned)", "train_`id`", "train_a; rm -rf /", "../etc", "train a",
    "", "-rf", "train_a\nb",
])
def test_it_refuses_a_job_id_that_is_not_platform_issued(job_id):
    config = SlurmConfig(remote_work_dir="/srv/jobs", launcher="plain")
    with pytest.raises(ValueError, match="not a platform-issued id"):
        render_batch_script(config, job_id)


@pytest.mark.parametrize("change, message", [
    ({"account": "project_1; touch /tmp/x"}, "SLURM_ACCOUNT"),
    ({"partition": "small-g --wrap=id"}, "SLURM_PARTITION"),
    ({"time_limit": "1:00:00 x"}, "SLURM_TIME_LIMIT"),
    ({"mem_per_gpu": "$(id)"}, "SLURM_MEM_PER_GPU"),
    ({"cpu_bind_masks": "0xff;id"}, "SLURM_CPU_BIND_MASKS"),
    ({"remote_work_dir": "relative/dir"}, "SLURM_REMOTE_WORK_DIR"),
    ({"env": (("BAD-NAME", "1"),)}, "SLURM_ENV"),
])
def test_it_refuses_settings_that_would_not_be_safe_in_a_script(change, message):
    config = SlurmConfig(remote_work_dir="/srv/jobs", account="project_1")
    with pytest.raises(SlurmConfigError, match=message):
        config.with_(**change)


def test_an_environment_value_can_use_variables_but_not_run_commands(tmp_path):
    config = SlurmConfig(remote_work_dir="/srv/jobs", launcher="plain", modules=(),
                         env=(("A", "/tmp/cache-$USER"), ("B", "$(touch x)`touch y`\"; id")))
    script = render_batch_script(config, "train_abc123")
    exports = "\n".join(line for line in script.splitlines() if line.startswith("export A=")
                        or line.startswith("export B="))
    out = subprocess.run(["bash", "-c", exports + '\necho "$A|$B"'], cwd=tmp_path,
                         env={"USER": "alice", "PATH": "/usr/bin:/bin"}, capture_output=True,
                         text=True)
    assert out.stdout.strip() == '/tmp/cache-alice|$(touch x)`touch y`"; id'
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("slurm_state, expected", [
    ("PENDING", base.QUEUED), ("CONFIGURING", base.QUEUED), ("REQUEUED", base.QUEUED),
    ("RUNNING", base.RUNNING), ("COMPLETING", base.RUNNING), ("COMPLETED", base.COMPLETED),
    ("FAILED", base.FAILED), ("OUT_OF_MEMORY", base.FAILED), ("DEADLINE", base.FAILED),
    ("CANCELLED", base.CANCELLED), ("CANCELLED by 0", base.CANCELLED),
    ("TIMEOUT", base.RETRY), ("PREEMPTED", base.RETRY), ("NODE_FAIL", base.RETRY),
    ("BOOT_FAIL", base.RETRY), ("", base.UNKNOWN), ("SOMETHING_NEW", base.UNKNOWN),
])
def test_slurm_states_map_to_backend_states(slurm_state, expected):
    assert slurm_state_to_backend(slurm_state) == expected


def test_gpu_hours_follow_lumis_billing_rule():
    # standard-g: whole nodes, 4 GPU-hours per node-hour.
    assert gpu_hours_for("standard-g", 2, 8, 56, 480, 5400) == pytest.approx(12.0)
    # small-g: 0.5 * max(ceil(cores/8), ceil(mem/64 GB), GCDs) per hour.
    assert gpu_hours_for("small-g", 1, 2, 14, 120, 3600) == pytest.approx(1.0)  # GCDs: 2
    assert gpu_hours_for("small-g", 1, 1, 56, 60, 3600) == pytest.approx(3.5)   # cores: 7
    assert gpu_hours_for("dev-g", 1, 1, 7, 200, 1800) == pytest.approx(1.0)     # mem: 4
    assert gpu_hours_for("small-g", 1, 8, 56, 480, 0) == 0.0
    assert parse_elapsed("1-02:03:04") == 93784
    assert parse_elapsed("00:01:06") == 66
    assert parse_elapsed("12:34") == 754
    assert parse_elapsed("INVALID") == 0


def test_the_allocation_limit_refuses_new_cluster_jobs_with_the_envelope(db, settings,
                                                                          make_tenant):
    from tenants.api.errors import api_exception_handler
    from tenants.errors import Conflict

    tenant = make_tenant("acme").tenant
    settings.SLURM_ACCOUNT = "project_465000123"
    settings.SLURM_ALLOCATION_GPU_HOURS = 10.0
    settings.SLURM_ALLOCATION_PERIOD_START = ""
    factories.job(tenant, backend="slurm", gpu_hours=6.0)
    factories.job(tenant, backend="local", gpu_hours=50.0)
    slurm_allocation_check()  # 6 of 10 used: allowed
    with pytest.raises(Conflict) as too_big:
        slurm_allocation_check(estimated_gpu_hours=5.0)
    assert too_big.value.code == "cluster_allocation_exhausted"

    factories.job(tenant, backend="slurm", gpu_hours=4.0)
    with pytest.raises(Conflict) as spent:
        slurm_allocation_check()
    response = api_exception_handler(spent.value, {})
    assert response.status_code == 409
    error = response.data["error"]
    assert error["code"] == "cluster_allocation_exhausted"
    assert "project_465000123" in error["message"] and "10.00" in error["message"]
    assert error["details"]["used_gpu_hours"] == 10.0

    settings.SLURM_ALLOCATION_PERIOD_START = "2999-01-01"  # a new period: nothing used yet
    slurm_allocation_check()
    settings.SLURM_ALLOCATION_GPU_HOURS = 0.0  # no limit configured
    settings.SLURM_ALLOCATION_PERIOD_START = ""
    slurm_allocation_check()


def test_gpu_hours_are_summed_per_tenant_per_month(db, make_tenant):
    acme, globex = make_tenant("acme").tenant, make_tenant("globex").tenant

    def job(tenant, month, hours, backend="slurm"):
        factories.job(tenant, backend=backend, gpu_hours=hours,
                      created_at=datetime(2026, month, 15, tzinfo=UTC))

    job(acme, 10, 1.5)
    job(acme, 10, 2.0)
    job(acme, 11, 4.0)
    job(globex, 11, 0.25)
    job(globex, 11, 99.0, backend="local")
    assert slurm_gpu_hours_by_month() == [
        {"tenant": "acme", "month": "2026-10", "gpu_hours": 3.5, "jobs": 2},
        {"tenant": "acme", "month": "2026-11", "gpu_hours": 4.0, "jobs": 1},
        {"tenant": "globex", "month": "2026-11", "gpu_hours": 0.25, "jobs": 1},
    ]
    assert slurm_gpu_hours_by_month(tenant=globex) == [
        {"tenant": "globex", "month": "2026-11", "gpu_hours": 0.25, "jobs": 1},
    ]
