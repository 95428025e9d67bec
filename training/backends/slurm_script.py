"""The Slurm batch script and DeepSpeed config of a training job, rendered from configuration.

Pure functions of a `SlurmConfig` (settings, operator-controlled) and a platform-issued job id:
no tenant-controlled value (base model id, preset, hyperparameters, dataset names) is ever part
of the script. Those travel inside job.json, which the trainer reads as data. Even so, every
value that reaches the script is validated by pattern or quoted with `shlex.quote`, so that a
misconfigured setting cannot turn into shell syntax either.

Layout of one job on the cluster (all paths built from SLURM_REMOTE_WORK_DIR and the job id):
    <work>/<job_id>/job.sbatch, job.json, ds_config.json, code/, data/, slurm-<slurm id>.out
    <work>/<job_id>/output/   the trainer's output_dir: events.jsonl, checkpoints/, adapter/,
                              manifest.json (kept across resubmissions: resume reads checkpoints)
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from training.trainer.deepspeed_config import deepspeed_config

JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SLURM_ID_RE = re.compile(r"^[0-9]{1,12}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # account, partition
_TIME_RE = re.compile(r"^(?:\d{1,3}-)?\d{1,3}(?::\d{2}){0,2}$")
_MEM_RE = re.compile(r"^\d{1,7}[KMGT]?$")
_MASKS_RE = re.compile(r"^0x[0-9a-fA-F]{1,32}(?:,0x[0-9a-fA-F]{1,32})*$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
LAUNCHERS = ("singularity", "srun", "plain")



class SlurmConfigError(ValueError):
    """A Slurm setting has a value that cannot safely go into a batch script."""


@dataclass(frozen=True)
class SlurmConfig:
    """Everything about the cluster side of a job that comes from settings."""

    remote_work_dir: str
    account: str = ""
    partition: str = "standard-g"
    nodes: int = 1
    gpus_per_node: int = 8
    ntasks_per_node: int = 8
    cpus_per_task: int = 7
    mem_per_gpu: str = "60G"
    mem: str = ""
    time_limit: str = "12:00:00"
    launcher: str = "singularity"
    container_image: str = "/appl/local/laifs/containers/lumi-multitorch-latest.sif"
    container_binds: tuple[str, ...] = ()
    modules: tuple[str, ...] = (
        "module use /appl/local/laifs/modules",
        "module load lumi-aif-singularity-bindings",
    )
    env: tuple[tuple[str, str], ...] = ()
    cpu_bind_masks: str = ""
    remote_python: str = "python"
    remote_base_model_path: str = ""
    deepspeed_stage: int = 3
    sacct_mode: str = "accounting"
    whole_node_partitions: tuple[str, ...] = ("standard-g",)

    @classmethod
    def from_settings(cls, **overrides) -> SlurmConfig:
        from django.conf import settings

        values = dict(
            remote_work_dir=settings.SLURM_REMOTE_WORK_DIR,
            account=settings.SLURM_ACCOUNT or "",
            partition=settings.SLURM_PARTITION,
            nodes=settings.SLURM_NODES,
            gpus_per_node=settings.SLURM_GPUS_PER_NODE,
            ntasks_per_node=settings.SLURM_NTASKS_PER_NODE,
            cpus_per_task=settings.SLURM_CPUS_PER_TASK,
            mem_per_gpu=settings.SLURM_MEM_PER_GPU or "",
            mem=settings.SLURM_MEM or "",
            time_limit=settings.SLURM_TIME_LIMIT,
            launcher=settings.SLURM_LAUNCHER,
            container_image=settings.SLURM_CONTAINER_IMAGE or "",
            container_binds=tuple(settings.SLURM_CONTAINER_BINDS),
            modules=split_lines(settings.SLURM_MODULES or ""),
            env=parse_env(settings.SLURM_ENV or ""),
            cpu_bind_masks=settings.SLURM_CPU_BIND_MASKS or "",
            remote_python=settings.SLURM_REMOTE_PYTHON,
            remote_base_model_path=settings.SLURM_REMOTE_BASE_MODEL_PATH or "",
            deepspeed_stage=settings.SLURM_DEEPSPEED_STAGE,
            sacct_mode=settings.SLURM_SACCT_MODE,
            whole_node_partitions=tuple(settings.SLURM_WHOLE_NODE_PARTITIONS),
        )
        values.update(overrides)
        return cls(**values).validated()

    def with_(self, **changes) -> SlurmConfig:
        return replace(self, **changes).validated()

    def validated(self) -> SlurmConfig:
        """Refuse values that could not go verbatim into an #SBATCH line or a path."""
        problems = []
        if not self.remote_work_dir or not self.remote_work_dir.startswith("/"):
            problems.append("SLURM_REMOTE_WORK_DIR must be an absolute path on the cluster")
        if self.account and not _NAME_RE.match(self.account):
            problems.append(f"SLURM_ACCOUNT {self.account!r} is not a project name")
        if self.launcher == "singularity" and not self.account:
            problems.append("SLURM_ACCOUNT is required on LUMI (the launcher is singularity)")
        if not _NAME_RE.match(self.partition):
            problems.append(f"SLURM_PARTITION {self.partition!r} is not a partition name")
        if not _TIME_RE.match(self.time_limit):
            problems.append(f"SLURM_TIME_LIMIT {self.time_limit!r} is not [D-]HH:MM:SS")
        for name in ("mem_per_gpu", "mem"):
            value = getattr(self, name)
            if value and not _MEM_RE.match(value):
                problems.append(f"SLURM_{name.upper()} {value!r} is not a size like 60G")
        if self.cpu_bind_masks and not _MASKS_RE.match(self.cpu_bind_masks):
            problems.append("SLURM_CPU_BIND_MASKS must be comma-separated hex masks")
        if self.launcher not in LAUNCHERS:
            problems.append(f"SLURM_LAUNCHER must be one of {', '.join(LAUNCHERS)}")
        if self.launcher == "singularity" and not self.container_image:
            problems.append("SLURM_CONTAINER_IMAGE is required with the singularity launcher")
        for key, _ in self.env:
            if not _ENV_KEY_RE.match(key):
                problems.append(f"SLURM_ENV has an invalid variable name {key!r}")
        for number in ("nodes", "ntasks_per_node", "cpus_per_task"):
            if getattr(self, number) < 1:
                problems.append(f"SLURM_{number.upper()} must be at least 1")
        if problems:
            raise SlurmConfigError("; ".join(problems))
        return self

    def job_dir(self, job_id: str) -> str:
        return str(PurePosixPath(self.remote_work_dir) / checked_job_id(job_id))

    def request(self) -> dict:
        """The resources asked for, as stored with each attempt (for GPU-hour accounting)."""
        return {
            "partition": self.partition,
            "account": self.account,
            "nodes": self.nodes,
            "gpus_per_node": self.gpus_per_node,
            "cpus_per_node": self.ntasks_per_node * self.cpus_per_task,
            "mem_gb_per_node": mem_gb_per_node(self),
            "time_limit": self.time_limit,
            "launcher": self.launcher,
        }


def checked_job_id(job_id: str) -> str:
    """Job ids are platform-issued; anything else is refused before it nears a shell or path."""
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise ValueError(f"refusing job id {job_id!r}: not a platform-issued id")
    return job_id


def checked_slurm_id(slurm_id: str) -> str:
    if not isinstance(slurm_id, str) or not SLURM_ID_RE.match(slurm_id):
        raise ValueError(f"refusing Slurm job id {slurm_id!r}")
    return slurm_id


def split_lines(raw: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in re.split(r"[;\n]", raw) if line.strip())


def parse_env(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in split_lines(raw):
        key, sep, value = item.partition("=")
        if not sep:
            raise SlurmConfigError(f"SLURM_ENV item {item!r} is not KEY=VALUE")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def parse_size_gb(value: str) -> float:
    """Slurm memory sizes (default unit MB) in GB: '60G' -> 60, '512M' -> 0.5, '1T' -> 1024."""
    if not value:
        return 0.0
    match = re.match(r"^(\d+)([KMGT]?)$", value.upper())
    if not match:
        raise SlurmConfigError(f"not a memory size: {value!r}")
    number, unit = int(match.group(1)), match.group(2) or "M"
    return number * {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1, "T": 1024}[unit]


def mem_gb_per_node(config: SlurmConfig) -> float:
    if config.mem:
        return parse_size_gb(config.mem)
    return parse_size_gb(config.mem_per_gpu) * config.gpus_per_node


def _env_value(value: str) -> str:
    """Double-quoted so that $USER / $SLURM_* expand on the node while nothing else can."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
    escaped = re.sub(r"\$(?![A-Za-z_{])", "\\$", escaped)  # only $NAME / ${NAME} expand
    escaped = re.sub(r"\$\{(?![A-Za-z_][A-Za-z0-9_]*[}:])", "\\${", escaped)
    return f'"{escaped}"'


def trainer_argv(config: SlurmConfig, job_dir: str, *, resume: bool) -> list[str]:
    argv = [config.remote_python, "-m", "training.trainer", "--config", f"{job_dir}/job.json"]
    if resume:
        argv.append("--resume")
    return argv


def render_batch_script(config: SlurmConfig, job_id: str, *, resume: bool = False,
                        attempt: int = 1) -> str:
    """The batch script of one attempt of a job. Deterministic (a reviewed fixture pins it)."""
    attempt = int(attempt)
    title = (f"# SynapseX training job {job_id}, attempt {attempt}"
             + (" (resumes from the last checkpoint)" if resume else "")
             + ". Rendered by training/backends/slurm_script.py.")
    job_dir = config.job_dir(job_id)
    return _render(config, job_id, title=title, attempt=attempt,
                   task_argv=trainer_argv(config, job_dir, resume=resume))


PROBE_BATCH_LINES = (
    'echo "== batch step on $(hostname): job $SLURM_JOB_ID, $SLURM_NNODES node(s), '
    '$SLURM_NTASKS task(s), nodes $SLURM_JOB_NODELIST"',
    "(command -v module >/dev/null && module list) 2>&1 || true",
    "command -v singularity >/dev/null && singularity --version || echo 'no singularity on PATH'",
    "command -v rocm-smi >/dev/null && rocm-smi --showproductname || echo 'no rocm-smi on PATH'",
)


def render_probe_script(config: SlurmConfig, probe_id: str, *, time_limit: str = "00:10:00",
                        size_mb: float | None = None) -> str:
    """A dry-run job from the same template as a training job: the same #SBATCH lines (but a
    short time limit), modules, environment, srun, CPU masks and container, with
    `python -m training.trainer.probe` as each task instead of the trainer (see its module
    docstring), after a few batch-step lines that print the module list, singularity's version
    and rocm-smi. Stage <job dir>/code/ like a job's before submitting it."""
    config = config.with_(time_limit=time_limit)
    argv = [config.remote_python, "-m", "training.trainer.probe"]
    if size_mb is not None:
        argv += ["--size-mb", f"{float(size_mb):g}"]
    title = (f"# SynapseX dry run {probe_id}: prints each rank's environment and times an "
             "all_reduce. Rendered by training/backends/slurm_script.py.")
    return _render(config, probe_id, title=title, attempt=0, task_argv=argv,
                   batch_lines=PROBE_BATCH_LINES)


def _render(config: SlurmConfig, job_id: str, *, title: str, attempt: int,
            task_argv: list[str], batch_lines: tuple[str, ...] = ()) -> str:
    """Long on purpose: it writes the script top to bottom, so it reads in the order of the
    reviewed fixture it must match."""
    job_id = checked_job_id(job_id)
    config = config.validated()
    job_dir = config.job_dir(job_id)
    q = shlex.quote
    lines = ["#!/bin/bash"]
    directives = [f"--job-name=sx-{job_id}"]
    if config.account:
        directives.append(f"--account={config.account}")
    directives += [f"--partition={config.partition}", f"--nodes={config.nodes}"]
    if config.gpus_per_node:
        directives.append(f"--gpus-per-node={config.gpus_per_node}")
    directives += [
        f"--ntasks-per-node={config.ntasks_per_node}",
        f"--cpus-per-task={config.cpus_per_task}",
    ]
    if config.mem:
        directives.append(f"--mem={config.mem}")
    elif config.mem_per_gpu and config.gpus_per_node:
        directives.append(f"--mem-per-gpu={config.mem_per_gpu}")
    directives += [f"--time={config.time_limit}", f"--output={job_dir}/slurm-%j.out"]
    # sbatch reads #SBATCH lines without a shell, but a space would still split an option.
    for directive in directives:
        if any(c.isspace() for c in directive):
            raise SlurmConfigError(f"whitespace in #SBATCH {directive!r}")
        lines.append(f"#SBATCH {directive}")
    lines += [
        title,
        "set -eo pipefail",
        f"JOB_DIR={q(job_dir)}",
        'cd "$JOB_DIR"',
    ]
    lines += list(config.modules)
    for key, value in config.env:
        lines.append(f"export {key}={_env_value(value)}")
    lines += [
        'export PYTHONPATH="$JOB_DIR/code${PYTHONPATH:+:$PYTHONPATH}"',
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        f"export SYNAPSEX_JOB_ID={q(job_id)} SYNAPSEX_ATTEMPT={attempt}",
    ]
    lines += list(batch_lines)
    trainer = shlex.join(task_argv)
    if config.launcher == "plain":
        lines.append(f"exec {trainer}")
        return "\n".join(lines) + "\n"

    lines += [
        'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        # LUMI's "1${SLURM_JOB_ID:0-4}" (1 + the id's last 4 digits), but also for ids under
        # 1000, where the substring is empty and the port would be 1 (a fresh cluster's ids).
        'export MASTER_PORT="$((10000 + SLURM_JOB_ID % 10000))"',
        'export WORLD_SIZE="$SLURM_NPROCS"',
    ]
    srun = "srun"
    if config.cpu_bind_masks:
        lines.append(f"CPU_BIND_MASKS={q(config.cpu_bind_masks)}")
        srun += ' --cpu-bind=v,mask_cpu="$CPU_BIND_MASKS"'
    launch = [srun]
    if config.launcher == "singularity":
        lines.append(f"SIF={q(config.container_image)}")
        binds = config.container_binds or (config.remote_work_dir,)
        launch.append(" ".join(["singularity run", *(f"-B {q(b)}" for b in binds), '"$SIF"']))
    per_task = f"export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID; exec {trainer}"
    launch.append(f"bash -c {q(per_task)}")
    lines.append(" \\\n  ".join(launch))
    return "\n".join(lines) + "\n"


def render_deepspeed_json(config: SlurmConfig) -> str | None:
    """The DeepSpeed config for launchers that start ranks with srun: one task per GPU, or on a
    CPU-only cluster more than one task (the local test of the LUMI launch: gloo on the CPU).
    None for `plain`, and for a single CPU task."""
    if config.launcher == "plain":
        return None
    if not config.gpus_per_node and config.nodes * config.ntasks_per_node < 2:
        return None
    return json.dumps(deepspeed_config(config.deepspeed_stage), indent=2) + "\n"
