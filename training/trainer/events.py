"""events.jsonl (seam 2): the append-only record the platform reads from its last offset.

One JSON object per line, written whole and flushed at once, so a reader polling the file (the
local backend, or the Slurm poller over SSH) never sees half a line it would have to re-read.
Only rank 0 writes: in a distributed run the other ranks' writers are disabled.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EventHook = Callable[[dict[str, Any]], None]


def utc_timestamp() -> str:
    """ISO 8601 UTC with milliseconds: sortable as text and unambiguous across machines."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_safe(value: Any) -> Any:
    # json.dumps would write NaN/Infinity, which is not JSON: a NaN loss must not break the reader.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_safe(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


class EventWriter:
    """Appends events to `path`; `hook`, if given, sees every event too (in-process observers)."""

    def __init__(self, path: str | Path, *, enabled: bool = True, hook: EventHook | None = None):
        self.path = Path(path)
        self.enabled = enabled
        self.hook = hook
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event_type: str, **fields: Any) -> dict[str, Any]:
        event = _json_safe({"ts": utc_timestamp(), "type": event_type, **fields})
        if not self.enabled:
            return event
        line = json.dumps(event, separators=(",", ":"), sort_keys=False) + "\n"
        # One write() of the whole line to a file opened in append mode: O_APPEND makes it land
        # after whatever is there, even if an earlier run of the same job wrote to it.
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            if event_type in {"completed", "failed"}:
                os.fsync(handle.fileno())
        if self.hook is not None:
            self.hook(event)
        return event


# --- the reader: the one place that parses events.jsonl ------------------------------------
# The local backend reads the file, the Slurm backend reads chunks of it over SFTP, the runner
# looks for the terminal event: all through the functions below.

TERMINAL_EVENT_TYPES = ("completed", "failed")


def read_events_from(source: str | Path | bytes, offset: int = 0) -> tuple[list[dict], int]:
    """The complete events of `source` from byte `offset`; returns them and the new offset.

    `source` is a path (read from `offset` to its end) or the bytes of the file that start at
    `offset` (a chunk a remote reader fetched). Only complete lines are returned: a line the
    trainer is still writing (no newline yet) is left for the next read, so a reader polling a
    growing file never sees half an event, and the new offset points at its start. A line that
    is not a JSON object is returned as `{"type": "unreadable", "raw": ...}` rather than lost.
    A missing file reads as no events at the same offset.
    """
    if isinstance(source, bytes | bytearray):
        chunk = bytes(source)
    else:
        try:
            with open(source, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            return [], offset
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    events = []
    for raw in chunk[: end + 1].splitlines():
        raw = raw.strip()
        if not raw:
            continue
        try:
            event = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            event = {"type": "unreadable", "raw": raw[:200].decode("utf-8", "replace")}
        if isinstance(event, dict):
            events.append(event)
    return events, offset + end + 1


def last_terminal_event(events: list[dict]) -> dict | None:
    """The last `completed` or `failed` event among `events`, if the trainer wrote one."""
    return next((e for e in reversed(events) if e.get("type") in TERMINAL_EVENT_TYPES), None)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All complete events in an events.jsonl (a torn or unreadable line is skipped)."""
    events, _ = read_events_from(path)
    return [e for e in events if e.get("type") != "unreadable"]


def memory_snapshot(gpus: int = 0) -> dict[str, Any]:
    """Resident memory of this process and, on a GPU, the memory the caching allocator holds."""
    rss_gb = None
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    rss_gb = int(line.split()[1]) * 1024 / 1e9
                    break
    except OSError:
        import resource

        rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    gpu_gb = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu_gb = torch.cuda.memory_reserved() / 1e9
    except Exception:  # noqa: BLE001 - memory reporting must never fail a run
        gpu_gb = None
    return {
        "rss_gb": round(rss_gb, 3) if rss_gb is not None else None,
        "gpu_memory_used_gb": round(gpu_gb, 3) if gpu_gb is not None else None,
        "gpus": gpus,
    }


class Stopwatch:
    """Monotonic time since construction; for durations that survive wall-clock adjustments."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def seconds(self) -> float:
        return time.monotonic() - self.start
