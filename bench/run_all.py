"""`make bench`: every benchmark, one after the other, unattended, then BENCHMARKS.md.

Starts from a fresh bench database (dropped and recreated, then migrated) so that figures never
depend on what an earlier run left behind. Each benchmark runs in its own process (a crash or a
leaked thread cannot touch the next one) with a time limit; the whole run is sized to finish in
about 20 minutes on a quiet 2-core machine. Exit code: 0 when every benchmark ran or was skipped
for a missing feature, 1 when one could not run.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, log
from bench.report import ORDER, write

# Per-benchmark wall-clock limits (seconds) in full mode; quick mode uses 120 each.
LIMITS = {
    "training_throughput": 420,
    "gpu_training": 600,
    "ingestion": 300,
    "feedback_post": 240,
    "stats_scale": 300,
    "serving": 1200,  # the real base (SmolLM2-135M), 64 new tokens a request
    "queue_latency": 240,
}


def run_limited(cmd: list[str], limit: float) -> int | str:
    """Run one benchmark in its own process group; on timeout end that group (gunicorn too)."""
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
    try:
        return proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return "timeout"


def _record_failure(name: str, quick: bool, started: float, reason: str) -> None:
    """A benchmark killed at its limit saved nothing: record that, so the report says so."""
    from bench.common import RESULTS_DIR, Report, machine_info
    from bench.report import TITLES

    path = RESULTS_DIR / f"{name}{'-quick' if quick else ''}.json"
    age = time.time() - (time.monotonic() - started)
    if path.exists() and path.stat().st_mtime >= age:
        return  # it ran and saved its own result (status failed, with the reason)
    Report(name=name, title=TITLES.get(name, name), quick=quick, inputs={}, status="failed",
           reason=reason, machine=machine_info()).save()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="*", help="names of benchmarks to run (default: all)")
    p.add_argument("--out", default=None, help="default: BENCHMARKS.md (quick: var/bench/...)")
    p.add_argument("--keep-db", action="store_true", help="do not recreate the bench database")
    args = p.parse_args()

    from bench import env

    if not args.keep_db:
        log(f"==> recreating the bench database ({env.database_url()})")
        env.ensure_database(fresh=True)
    extra = {}
    try:
        env.configure()
        extra["PostgreSQL"] = env.postgres_version()
        import redis

        extra["Redis"] = redis.Redis.from_url(os.environ["REDIS_URL"]).info()["redis_version"]
    except Exception as exc:  # noqa: BLE001 - the benchmarks will say what is missing
        log(f"environment: {exc}")

    failed = []
    started = time.monotonic()
    for name in args.only or ORDER:
        cmd = [sys.executable, "-m", f"bench.{name}"] + (["--quick"] if args.quick else [])
        limit = 300 if args.quick else LIMITS.get(name, 300)
        log(f"==> {' '.join(cmd[1:])} (limit {limit} s)")
        t0 = time.monotonic()
        code = run_limited(cmd, limit)
        log(f"<== {name}: exit {code} after {time.monotonic() - t0:.0f} s")
        if code != 0:
            failed.append(f"{name} ({code})")
            _record_failure(name, args.quick, t0, f"exit {code} after {time.monotonic() - t0:.0f} s"
                            f" (limit {limit} s)")
    default_out = REPO / ("var/bench/BENCHMARKS-quick.md" if args.quick else "BENCHMARKS.md")
    out = write(Path(args.out or default_out), quick=args.quick, extra=extra)
    log(f"==> wrote {out} in {time.monotonic() - started:.0f} s total")
    if failed:
        log(f"could not run: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
