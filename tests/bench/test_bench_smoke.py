"""Smoke test of the benchmark harness: every benchmark runs in its tiny `--quick` configuration
and prints its table (or `skipped: <what is missing>`), exit status 0.

Real services, as `make bench` uses them: PostgreSQL (a database of its own, `bench_smoke`,
created when missing) and Redis db 15. Skipped, with the reason, when they are not reachable.
The figures themselves are not checked (the machine is shared and noisy); the table's shape,
the saved result and the sanity checks each benchmark makes on the product's answers are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("BENCH_SMOKE_DATABASE_URL",
                        "postgres://postgres@127.0.0.1:5432/bench_smoke")
REDIS_URL = os.environ.get("BENCH_SMOKE_REDIS_URL", "redis://127.0.0.1:6379/15")

# name -> extra arguments that keep the quick run within the smoke test's time budget
BENCHMARKS = {
    "ingestion": ["--count", "300", "--batch", "100", "--no-jsonl"],
    "feedback_post": ["--seconds", "1", "--conversations", "12"],
    "stats_scale": ["--rows", "3000", "--small", "300", "--requests", "10"],
    "training_throughput": ["--no-padded"],
    "gpu_training": [],
    "serving": ["--requests", "2", "--seconds", "1", "--tenants", "3"],
    "queue_latency": [],
}


def _services_up() -> str | None:
    try:
        import psycopg
        import redis

        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                             connect_timeout=2):
            pass
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL/Redis not reachable: {exc}"
    return None


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory):
    reason = _services_up()
    if reason:
        pytest.skip(reason)
    results = tmp_path_factory.mktemp("bench-results")
    env = dict(os.environ)
    env.update(BENCH_DATABASE_URL=PG_URL, BENCH_REDIS_URL=REDIS_URL,
               BENCH_RESULTS_DIR=str(results))
    env.pop("DATABASE_URL", None)
    return env, results


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_benchmark_runs_quick_and_prints_its_table(bench_env, name):
    env, results = bench_env
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--quick", "--runs", "1", *BENCHMARKS[name]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    out = proc.stdout
    saved = json.loads((results / f"{name}-quick.json").read_text())
    if out.startswith("skipped:"):
        # Only allowed for a missing feature (or no GPU), and said in one line.
        assert saved["status"] == "skipped" and saved["reason"] in out
        if name != "gpu_training":
            pytest.fail(f"{name} skipped although every feature has landed: {out}")
        pytest.skip(out.strip())  # no GPU here: reported as skipped, not as passed
    assert saved["status"] == "ok", saved
    assert f"### {saved['title']}" in out
    assert "| metric | baseline | baseline (median) | subject |" in out
    for comparison in saved["comparisons"]:
        assert comparison["baseline_runs"] and comparison["subject_runs"]
        assert comparison["ratio"] is not None and comparison["ratio"] > 0


def test_report_collects_the_results_into_benchmarks_md(bench_env, tmp_path):
    env, results = bench_env
    out = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run([sys.executable, "-m", "bench.report", "--quick", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "## Machine" in text and "## Summary" in text
    assert "cores" in text and "Python" in text
