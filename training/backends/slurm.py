"""The Slurm compute backend: LUMI (or any Slurm cluster) driven over SSH from outside.

The platform never runs on the cluster: it logs in to a login node with a key (training/backends/
ssh.py), stages the job bundle into `<SLURM_REMOTE_WORK_DIR>/<job id>/`, submits with
`sbatch --parsable`, and from then on a poller (`manage.py poll_cluster_jobs`, which calls the
runner's `training_job_advance` for each cluster job) asks Slurm for the state and tails the
trainer's events.jsonl over SFTP from the job's offset. No RQ worker waits on a cluster job.

What a poll reports (lumi.md's table): PENDING... -> queued; RUNNING... -> running; COMPLETED ->
completed (the runner then fetches and verifies the adapter); FAILED, OUT_OF_MEMORY, DEADLINE ->
failed with the trainer's one-line reason; CANCELLED -> cancelled; TIMEOUT, PREEMPTED, NODE_FAIL,
BOOT_FAIL -> retry (the runner resubmits, and `submit` of an attempt > 1 resumes from the
checkpoints kept in the remote output folder). An SSH failure is `unknown`: never finished.

The backend writes no database row. Each poll reports what Slurm measured (`PollResult.usage`:
the Slurm id, its state, the elapsed time and the resources asked for); the services bill it by
LUMI's rule per attempt (`training.services.cluster`), keep it in
`job.resources["slurm"]["attempts"]` and sum it into `job.gpu_hours`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from training.backends import base
from training.backends.slurm_script import (
    SlurmConfig,
    checked_job_id,
    checked_slurm_id,
    render_batch_script,
    render_deepspeed_json,
)
from training.backends.ssh import (
    ClusterUnreachable,
    RemoteCommandFailed,
    SshSession,
    SshTarget,
    ssh_session,
)
from training.trainer.events import last_terminal_event, read_events_from

logger = logging.getLogger(__name__)

EVENTS_NAME = "events.jsonl"
EVENTS_CHUNK_BYTES = 1024 * 1024
LOG_TAIL_BYTES = 16384
LOG_TAIL_LINES = 40
STAGED_MARKER = ".synapsex-staged"

# lumi.md: "Slurm states and what they should mean to a job".
SLURM_STATE_MAP = {
    **dict.fromkeys(
        ["PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
         "SUSPENDED"], base.QUEUED),
    **dict.fromkeys(
        ["RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"], base.RUNNING),
    "COMPLETED": base.COMPLETED,
    **dict.fromkeys(["NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "TIMEOUT"], base.RETRY),
    **dict.fromkeys(
        ["FAILED", "OUT_OF_MEMORY", "DEADLINE", "SPECIAL_EXIT", "REVOKED"], base.FAILED),
    "CANCELLED": base.CANCELLED,
}
TERMINAL_STATES = {base.COMPLETED, base.FAILED, base.CANCELLED, base.RETRY}


def slurm_state_to_backend(slurm_state: str) -> str:
    """'CANCELLED by 0' -> cancelled; an empty or unheard-of state -> unknown."""
    word = (slurm_state or "").strip().split(" ")[0].rstrip("+").upper()
    return SLURM_STATE_MAP.get(word, base.UNKNOWN)


# --- Slurm's answers ------------------------------------------------------------------------
def parse_elapsed(text: str) -> int:
    """Slurm durations ([D-][HH:]MM:SS, or 'UNLIMITED'/'INVALID') in seconds."""
    text = (text or "").strip()
    match = re.match(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$", text)
    if not match:
        return 0
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


@dataclass
class SlurmJobInfo:
    state: str  # Slurm's word, e.g. RUNNING; "" when Slurm does not know the job
    reason: str = ""
    exit_code: str = ""
    elapsed_seconds: int = 0
    source: str = ""


def _parse_scontrol(text: str) -> SlurmJobInfo | None:
    fields = dict(re.findall(r"(\w+)=(\S*)", text))
    if "JobState" not in fields:
        return None
    return SlurmJobInfo(
        state=fields["JobState"],
        reason=fields.get("Reason", ""),
        exit_code=fields.get("ExitCode", ""),
        elapsed_seconds=parse_elapsed(fields.get("RunTime", "")),
        source="scontrol",
    )


def _parse_sacct(text: str, slurm_id: str) -> SlurmJobInfo | None:
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 4 and parts[0] == slurm_id:
            return SlurmJobInfo(state=parts[1], exit_code=parts[2],
                                elapsed_seconds=parse_elapsed(parts[3]), source="sacct")
    return None


# --- the backend ----------------------------------------------------------------------------
class SlurmBackend:
    """ComputeBackend for Slurm over SSH. See the module docstring."""

    name = "slurm"
    runs_in_worker = False  # polled by `poll_cluster_jobs`, not by a waiting RQ worker

    def __init__(self, config: SlurmConfig | None = None, target: SshTarget | None = None):
        self.config = config or SlurmConfig.from_settings()
        self.target = target or SshTarget.from_settings()

    # -- paths ------------------------------------------------------------------------------
    def job_dir(self, job) -> str:
        return self.config.job_dir(job.id)

    def output_dir(self, job) -> str:
        return f"{self.job_dir(job)}/output"

    # -- submit -----------------------------------------------------------------------------
    def submit(self, job, bundle_dir: Path, *, resume: bool | None = None) -> str:
        """Stage job.json, data, code and scripts; `sbatch --parsable`; returns the Slurm id.

        An attempt after the first (the runner's resubmission after TIMEOUT/PREEMPTED/NODE_FAIL)
        resumes: the remote output folder (checkpoints, events.jsonl) is kept and the trainer
        gets `--resume`. A first attempt starts from an empty output folder.
        """
        job_id = checked_job_id(job.id)
        attempt = int(job.attempt or 1)
        if resume is None:
            resume = attempt > 1
        bundle = Path(bundle_dir)
        job_dir = self.job_dir(job)
        out_dir = self.output_dir(job)
        raw = json.loads((bundle / "job.json").read_text(encoding="utf-8"))
        ds_json = render_deepspeed_json(self.config)
        script = render_batch_script(self.config, job_id, resume=resume, attempt=attempt)

        with ssh_session(self.target) as s:
            s.makedirs(self.config.remote_work_dir)
            if not resume:
                # A fresh run must not resume from (or report events of) an earlier attempt.
                s.run(["rm", "-rf", "--", out_dir])
            for folder in (job_dir, f"{job_dir}/data", out_dir):
                s.makedirs(folder)
            remote_json = self._stage_inputs(s, raw, bundle, job_dir)
            remote_json.update(
                job_id=job_id,
                output_dir=out_dir,
                resume=bool(resume),
                deepspeed=json.loads(ds_json) if ds_json else None,
            )
            self._stage_code(s, job_dir)
            s.put_bytes(json.dumps(remote_json, indent=2).encode(), f"{job_dir}/job.json")
            if ds_json:
                s.put_bytes(ds_json.encode(), f"{job_dir}/ds_config.json")
            s.put_bytes(script.encode(), f"{job_dir}/job.sbatch", mode=0o750)
            result = s.run(["sbatch", "--parsable", f"--chdir={job_dir}", f"{job_dir}/job.sbatch"])
        slurm_id = result.stdout.strip().splitlines()[-1].split(";")[0].strip()
        checked_slurm_id(slurm_id)

        # The caller stores the id (and the services open this attempt's usage record).
        job.external_id = slurm_id
        logger.info("job %s attempt %s submitted as Slurm job %s", job_id, attempt, slurm_id)
        return slurm_id

    def _stage_inputs(self, s: SshSession, raw: dict, bundle: Path, job_dir: str) -> dict:
        """Upload what job.json points at and return job.json rewritten for the remote layout.

        Remote names are fixed (data/train.jsonl, init_adapter/) or derived from hashes: nothing
        tenant-supplied names a remote path.
        """
        remote = dict(raw)
        data = dict(raw.get("data") or {})
        for key in ("train", "eval", "replay_prompts"):
            if data.get(key):
                local = _local_path(data[key], bundle)
                target = f"{job_dir}/data/{key}.jsonl"
                s.put_file(local, target)
                data[key] = target
        remote["data"] = data
        base_model = dict(raw.get("base_model") or {})
        if base_model.get("path"):
            base_model["path"] = self._stage_base_model(s, _local_path(base_model["path"], bundle))
        remote["base_model"] = base_model
        if raw.get("init_adapter"):
            target = f"{job_dir}/init_adapter"
            s.run(["rm", "-rf", "--", target])
            s.put_tree(_local_path(raw["init_adapter"], bundle), target)
            remote["init_adapter"] = target
        return remote

    def _stage_base_model(self, s: SshSession, local: Path) -> str:
        """The base model's folder on the cluster: the configured one, or a staged copy.

        Staged copies live in <work>/_models/<name>-<digest of file names, sizes, mtimes>/ and
        are uploaded once (a marker file is written last; a half-copied folder is redone).
        """
        if self.config.remote_base_model_path:
            return self.config.remote_base_model_path
        if not local.is_dir():
            raise FileNotFoundError(f"base model folder {local} does not exist")
        digest = hashlib.sha256()
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            st = file.stat()
            digest.update(f"{file.relative_to(local)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", local.name).lstrip(".")[:40] or "model"
        target = f"{self.config.remote_work_dir}/_models/{name}-{digest.hexdigest()[:16]}"
        if s.stat(f"{target}/{STAGED_MARKER}") is None:
            s.run(["rm", "-rf", "--", target])
            s.put_tree(local, target)
            s.put_bytes(b"", f"{target}/{STAGED_MARKER}")
        return target

    def _stage_code(self, s: SshSession, job_dir: str) -> None:
        """The trainer package (no Django) into <job>/code/, first on the job's PYTHONPATH."""
        package = Path(__file__).resolve().parent.parent  # training/
        s.run(["rm", "-rf", "--", f"{job_dir}/code"])
        s.makedirs(f"{job_dir}/code/training")
        s.put_file(package / "__init__.py", f"{job_dir}/code/training/__init__.py")
        s.put_tree(package / "trainer", f"{job_dir}/code/training/trainer")

    # -- poll -------------------------------------------------------------------------------
    def poll(self, job) -> base.PollResult:
        if not job.external_id:
            return base.PollResult(state=base.QUEUED, new_offset=job.events_offset)
        slurm_id = checked_slurm_id(job.external_id)
        try:
            with ssh_session(self.target) as s:
                info = self.job_info(s, slurm_id)
                state = slurm_state_to_backend(info.state)
                terminal = state in TERMINAL_STATES
                events, offset = self._read_events(s, job, read_all=terminal)
                reason = tail = ""
                if terminal:
                    tail = self._log_tail(s, job, slurm_id)
                    last = self._last_terminal_event(s, job)
                    state, reason = self._judge(state, info, last, slurm_id)
        except ClusterUnreachable as exc:
            return base.PollResult(state=base.UNKNOWN, new_offset=job.events_offset,
                                   reason=f"cluster unreachable: {exc}")
        except RemoteCommandFailed as exc:  # e.g. slurmctld not answering
            return base.PollResult(state=base.UNKNOWN, new_offset=job.events_offset,
                                   reason=f"Slurm did not answer: {exc}")
        if not info.state:
            return base.PollResult(state=base.UNKNOWN, events=events, new_offset=offset,
                                   reason=f"Slurm does not know job {slurm_id}")
        usage = {"slurm_id": slurm_id, "attempt": int(job.attempt or 1),
                 "state": info.state, "elapsed_seconds": info.elapsed_seconds,
                 "request": self.config.request(),
                 "whole_node_partitions": list(self.config.whole_node_partitions)}
        return base.PollResult(state=state, events=events, new_offset=offset, reason=reason,
                               log_tail=tail, usage=usage)

    def job_info(self, s: SshSession, slurm_id: str) -> SlurmJobInfo:
        """scontrol while the controller knows the job, else sacct (accounting or jobcomp)."""
        result = s.run(["scontrol", "-o", "show", "job", slurm_id], check=False)
        info = _parse_scontrol(result.stdout) if result.rc == 0 else None
        if info is not None:
            return info
        if "invalid job id" not in (result.stderr + result.stdout).lower() and result.rc != 0:
            raise RemoteCommandFailed(["scontrol"], result.rc, result.stdout, result.stderr)
        flag = "-c" if self.config.sacct_mode == "jobcomp" else "-X"
        result = s.run(["sacct", flag, "-n", "-P", "-j", slurm_id,
                        "-o", "jobid,state,exitcode,elapsed"], check=False)
        return _parse_sacct(result.stdout, slurm_id) or SlurmJobInfo(state="", source="none")

    def _judge(self, state: str, info: SlurmJobInfo, last: dict | None,
               slurm_id: str) -> tuple[str, str]:
        """The final state and the reason a user reads."""
        word = info.state.split(" ")[0]
        trainer_reason = (last or {}).get("reason", "") if (last or {}).get("type") == "failed" \
            else ""
        if state == base.COMPLETED:
            if not last or last.get("type") != "completed":
                return base.FAILED, (trainer_reason or "the trainer exited without reporting "
                                     "completion (no `completed` event)")
            return state, ""
        if state == base.RETRY:
            return state, (f"Slurm job {slurm_id} ended {word} after "
                           f"{_hms(info.elapsed_seconds)}; resubmit to resume from the last "
                           "checkpoint")
        if state == base.CANCELLED:
            return state, f"Slurm job {slurm_id} was cancelled"
        detail = f"Slurm job {slurm_id} ended {word}"
        if info.exit_code:
            detail += f" (exit code {info.exit_code})"
        if word == "OUT_OF_MEMORY":
            detail += "; the node ran out of memory: ask for more memory or a smaller batch"
        return state, f"{trainer_reason} [{detail}]" if trainer_reason else detail

    def _read_events(self, s: SshSession, job, *, read_all: bool) -> tuple[list[dict], int]:
        """Complete lines of the remote events.jsonl from the job's offset (SFTP seek + read),
        parsed by the trainer's own reader."""
        path = f"{self.output_dir(job)}/{EVENTS_NAME}"
        offset = int(job.events_offset or 0)
        events: list[dict] = []
        while True:
            got = s.read_from(path, offset, EVENTS_CHUNK_BYTES)
            if got is None:
                break
            chunk, size = got
            if size < offset:  # the file was started afresh (a new first attempt)
                offset = 0
                continue
            more, new_offset = read_events_from(chunk, offset)
            if new_offset == offset:
                if len(chunk) < EVENTS_CHUNK_BYTES:
                    break  # a line still being written: next time
                # One line longer than a whole chunk: skip it rather than stall forever.
                events.append({"type": "unreadable", "raw": chunk[:200].decode("utf-8",
                                                                               "replace")})
                offset += len(chunk)
                continue
            events += more
            offset = new_offset
            if not read_all or offset >= size:
                break
        return events, offset

    def _last_terminal_event(self, s: SshSession, job) -> dict | None:
        """The trainer's `completed` or `failed` event, from the last 64 KiB of events.jsonl."""
        path = f"{self.output_dir(job)}/{EVENTS_NAME}"
        st = s.stat(path)
        if st is None:
            return None
        start = max(0, (st.st_size or 0) - 65536)
        got = s.read_from(path, start, 65536)
        if not got:
            return None
        return last_terminal_event(read_events_from(got[0], start)[0])

    def _log_tail(self, s: SshSession, job, slurm_id: str) -> str:
        path = f"{self.job_dir(job)}/slurm-{slurm_id}.out"
        st = s.stat(path)
        if st is None:
            return ""
        got = s.read_from(path, max(0, (st.st_size or 0) - LOG_TAIL_BYTES), LOG_TAIL_BYTES)
        text = got[0].decode("utf-8", "replace") if got else ""
        return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])

    # -- cancel -----------------------------------------------------------------------------
    def cancel(self, job) -> None:
        """`scancel`; a job Slurm already finished or forgot is not an error. Raises
        ClusterUnreachable when the login node cannot be reached (the cancel did not happen)."""
        if not job.external_id:
            return
        slurm_id = checked_slurm_id(job.external_id)
        with ssh_session(self.target) as s:
            result = s.run(["scancel", slurm_id], check=False)
        text = (result.stderr + result.stdout).lower()
        if result.rc != 0 and "already completing or completed" not in text \
                and "invalid job id" not in text:
            raise RemoteCommandFailed(["scancel", slurm_id], result.rc, result.stdout,
                                      result.stderr)

    # -- fetch ------------------------------------------------------------------------------
    def fetch(self, job) -> Path:
        """Download output/adapter/ and output/manifest.json and verify every sha256."""
        from training.trainer.manifest import verify_adapter_dir

        checked_job_id(job.id)
        local_root = (Path(job.work_dir) if job.work_dir
                      else Path(settings.TRAINING_WORK_DIR) / job.id)
        local = local_root / "fetched"
        if local.exists():
            shutil.rmtree(local)
        local.mkdir(parents=True)
        out = self.output_dir(job)
        with ssh_session(self.target) as s:
            s.get_file(f"{out}/manifest.json", local / "manifest.json")
            s.get_tree(f"{out}/adapter", local / "adapter")
        verify_adapter_dir(local / "adapter", local / "manifest.json")
        return local


def _local_path(value: str, bundle: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else bundle / path


def _hms(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
