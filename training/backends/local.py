"""The local compute backend: the trainer as a child process of the RQ worker.

`submit` starts `python -m training.trainer --config <bundle>/job.json` in its own process group
(so a cancel reaches the trainer and anything it spawned, and a killed worker does not take it
down mid-write), with stdout and stderr in `<bundle>/trainer.log`. The external id is the pid;
`<bundle>/trainer.pid` also holds the process start time so that a recycled pid is never
mistaken for our trainer (the reconciler may look at it long after the worker died).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

from training.backends import base
from training.trainer.events import last_terminal_event, read_events_from

# Popen objects of the trainers this process started: polling them reaps the child (no zombie)
# and gives the real exit status. A process that did not start the trainer (the API cancelling,
# a restarted worker, the reconciler) falls back to /proc.
_CHILDREN: dict[int, subprocess.Popen] = {}

LOG_NAME = "trainer.log"
PID_NAME = "trainer.pid"
EVENTS_NAME = "events.jsonl"
LOG_TAIL_LINES = 40


def bundle_dir(job) -> Path:
    return Path(job.work_dir)


def output_dir(job) -> Path:
    return bundle_dir(job) / "output"


def events_path(job) -> Path:
    return output_dir(job) / EVENTS_NAME


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks); None if there is no process or
    it is a zombie (exited, not yet reaped: as good as gone for us)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces; fields after the last ')' are fixed.
    rest = stat[stat.rfind(")") + 2 :].split()
    if rest[0] in ("Z", "X"):
        return None
    return rest[19]


def process_alive(pid: int, start_time: str | None = None) -> bool:
    """Whether `pid` runs and, when `start_time` is known, is the very process we started."""
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    current = _proc_start_time(pid)
    if current is None:
        return False
    return start_time is None or current == start_time


class LocalBackend:
    """Runs the trainer on this machine. See the module docstring."""

    name = "local"
    # The RQ runner stays with the job and polls it (the Slurm backend is polled by a poller).
    runs_in_worker = True

    def submit(self, job, bundle_dir: Path) -> str:
        bundle = Path(bundle_dir)
        out = bundle / "output"
        out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "training.trainer", "--config", str(bundle / "job.json")]
        if job.attempt > 1:
            cmd.append("--resume")
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        threads = getattr(settings, "TRAINING_LOCAL_THREADS", None)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        with open(bundle / LOG_NAME, "ab") as log:
            proc = subprocess.Popen(
                cmd, cwd=str(settings.BASE_DIR), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        (bundle / PID_NAME).write_text(json.dumps(
            {"pid": proc.pid, "start_time": _proc_start_time(proc.pid), "attempt": job.attempt}
        ))
        return str(proc.pid)

    def _pid(self, job) -> tuple[int | None, str | None]:
        if not job.external_id:
            return None, None
        pid = int(job.external_id)
        start_time = None
        try:
            info = json.loads((bundle_dir(job) / PID_NAME).read_text())
            if info.get("pid") == pid:
                start_time = info.get("start_time")
        except (OSError, ValueError):
            pass
        return pid, start_time

    def poll(self, job) -> base.PollResult:
        path = events_path(job)
        events, offset = read_events_from(path, job.events_offset)
        pid, start_time = self._pid(job)
        if pid is None:
            return base.PollResult(state=base.QUEUED, events=events, new_offset=offset)
        if process_alive(pid, start_time):
            return base.PollResult(state=base.RUNNING, events=events, new_offset=offset)
        # The process is gone: read what is left of the file, then judge by its last words.
        more, offset = read_events_from(path, offset)
        events += more
        exit_code = None
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            exit_code = child.returncode
        terminal = _tail_terminal_event(path)
        tail = log_tail(bundle_dir(job) / LOG_NAME)
        if terminal and terminal.get("type") == "completed" and exit_code in (0, None):
            return base.PollResult(state=base.COMPLETED, events=events, new_offset=offset)
        if terminal and terminal.get("type") == "failed":
            category = terminal.get("category", "")
            state = base.CANCELLED if category == "cancelled" else base.FAILED
            return base.PollResult(state=state, events=events, new_offset=offset,
                                   reason=terminal.get("reason", ""), log_tail=tail)
        if exit_code is not None and exit_code in (-signal.SIGTERM, -signal.SIGKILL, 143, 137) \
                and job.cancel_requested:
            return base.PollResult(state=base.CANCELLED, events=events, new_offset=offset,
                                   reason="cancelled", log_tail=tail)
        if exit_code == 0:
            return base.PollResult(state=base.FAILED, events=events, new_offset=offset,
                                   reason="trainer crash: exited without reporting completion",
                                   log_tail=tail)
        how = f"exit code {exit_code}" if exit_code is not None else "process disappeared"
        if exit_code is not None and exit_code < 0:
            how = f"killed by signal {signal.Signals(-exit_code).name}"
        return base.PollResult(state=base.FAILED, events=events, new_offset=offset,
                               reason=f"trainer crash: {how}", log_tail=tail)

    def cancel(self, job, grace_seconds: float | None = None) -> None:
        """SIGTERM to the trainer's process group, SIGKILL after the grace period. Idempotent."""
        pid, start_time = self._pid(job)
        # process_alive() polls our own child, which also reaps it (no zombie left behind).
        if pid is None or not process_alive(pid, start_time):
            return
        if grace_seconds is None:
            grace_seconds = float(getattr(settings, "TRAINING_CANCEL_GRACE_SECONDS", 10))
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            if not process_alive(pid, start_time):
                return
            time.sleep(0.1)
        _signal_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and process_alive(pid, start_time):
            time.sleep(0.05)

    def fetch(self, job) -> Path:
        return output_dir(job)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the trainer leads its own session: pgid == pid
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _tail_terminal_event(path: Path, window: int = 65536) -> dict | None:
    """The trainer's `completed` or `failed` event, if it wrote one (read from the file's end:
    it may have been consumed by an earlier poll)."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return None
    events, _ = read_events_from(path, max(0, size - window))
    return last_terminal_event(events)
