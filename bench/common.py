"""The harness every benchmark shares: interleaved runs, ratios, tables, results on disk.

Every figure is a RATIO against a baseline measured in the same run, side by side: the machine
this runs on is shared and noisy, and a ratio of two things measured under the same noise is far
steadier than either figure alone. Baseline and subject runs are interleaved in mirrored rounds
(A B, B A, B A, A B, ...) so that slow drift (another process warming up, a cache filling)
hits both sides alike.

A benchmark module builds a `Report` of `Comparison` rows (and plain `Fact` rows), prints it as
a Markdown table, and saves it as JSON under `bench/results/` (`BENCH_RESULTS_DIR`), from which
`bench.report` writes BENCHMARKS.md. A benchmark exits non-zero only when it could not run;
a slow figure is a result, not an error. When a product feature it measures is missing it prints
`skipped: <what is missing>` and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(os.environ.get("BENCH_RESULTS_DIR", REPO / "bench" / "results"))


class Skip(Exception):
    """A product feature the benchmark measures is not there (yet): skip, exit 0."""


class CannotRun(Exception):
    """The benchmark could not run (a service down, the product erroring): exit non-zero."""


# --- statistics ---------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (no interpolation: with p99 of 2,000 samples that is sample 1980)."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, min(len(ordered), int(round(pct / 100.0 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def interleaved(
    runs: int,
    baseline: Callable[[int], Any],
    subject: Callable[[int], Any],
    *,
    log: Callable[[str], None] | None = None,
) -> tuple[list[Any], list[Any]]:
    """Run baseline and subject `runs` times each in ABBA order; returns both lists of results.

    Pair i is (baseline[i], subject[i]); the rounds run A B, B A, B A, A B, ... (`round_order`),
    so a steady drift adds the same on average to both sides.
    """
    results = rotated(runs, {"baseline": baseline, "subject": subject}, log=log)
    return results["baseline"], results["subject"]


def round_order(round_index: int, names: Sequence[str]) -> list[str]:
    """The order of the sides in one round: ABBA for two sides, its generalisation for more.

    Rounds come in mirrored pairs (forward, then reversed), so a steady drift adds the same on
    average to every side; each pair starts from the next side (rotation by round // 2), so with
    more than two sides no side is always first or last. Two sides: A B | B A | B A | A B ...
    """
    names = list(names)
    k = (round_index // 2) % len(names)
    order = names[k:] + names[:k]
    if round_index % 2:
        order.reverse()
    return order


def rotated(
    runs: int,
    sides: dict[str, Callable[[int], Any]],
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[Any]]:
    """Like `interleaved` for any number of sides: round i runs every side once, in
    `round_order(i)` (mirrored pairs of rounds), so that no side always goes first or last."""
    results: dict[str, list[Any]] = {name: [] for name in sides}
    for i in range(runs):
        for name in round_order(i, list(sides)):
            started = time.monotonic()
            result = sides[name](i)
            if log:
                took = time.monotonic() - started
                log(f"  run {i + 1}/{runs} {name}: {_short(result)} ({took:.1f} s)")
            results[name].append(result)
    return results


def _short(result: Any) -> str:
    if isinstance(result, float):
        return f"{result:.4g}"
    if isinstance(result, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in list(result.items())[:5])
    return str(result)


# --- results ------------------------------------------------------------------------------------


@dataclass
class Comparison:
    """One figure measured for the baseline and for the subject, run after run.

    `ratio` is subject / baseline: the median of the per-pair ratios (pairs ran back to back, so
    their ratio cancels the drift between pairs). Each side's spread (min, max of its runs) and
    the range of the per-pair ratios are kept with it.

    A goal is judged on every pair, not only on the median: `goal_verdict` is "met" when every
    pair's ratio meets it, "not met" when none does, and "not shown" when the pairs straddle it
    (the noise between runs is larger than the margin, so the run shows neither). `goal_met` is
    True / False for the first two and None otherwise (and without a goal).
    """

    metric: str
    unit: str
    baseline_label: str
    subject_label: str
    baseline_runs: list[float]
    subject_runs: list[float]
    goal: str | None = None  # ">= 0.95", "<= 2"; None: informational
    higher_is_better: bool = True
    note: str = ""
    ratio: float | None = None
    baseline_median: float | None = None
    subject_median: float | None = None
    pair_ratios: list[float] = field(default_factory=list)
    baseline_spread: list[float] | None = None  # [min, max] of the baseline's runs
    subject_spread: list[float] | None = None
    ratio_spread: list[float] | None = None  # [min, max] of the per-pair ratios
    goal_verdict: str | None = None  # "met" | "not met" | "not shown"; None: no goal
    goal_met: bool | None = None

    def __post_init__(self) -> None:
        self.baseline_median = median(self.baseline_runs)
        self.subject_median = median(self.subject_runs)
        self.pair_ratios = [
            s / b for b, s in zip(self.baseline_runs, self.subject_runs, strict=False) if b
        ]
        self.ratio = median(self.pair_ratios)
        self.baseline_spread = spread(self.baseline_runs)
        self.subject_spread = spread(self.subject_runs)
        self.ratio_spread = spread(self.pair_ratios)
        self.goal_verdict = goal_verdict(self.goal, self.pair_ratios)
        self.goal_met = {"met": True, "not met": False}.get(self.goal_verdict)


def spread(values: Sequence[float]) -> list[float] | None:
    """[min, max] of the values (None when there are none)."""
    values = [v for v in values if v is not None]
    return [min(values), max(values)] if values else None


def goal_meets(goal: str, ratio: float) -> bool:
    op, value = goal.split()
    checks = {">=": ratio >= float(value), "<=": ratio <= float(value),
              ">": ratio > float(value), "<": ratio < float(value)}
    if op not in checks:
        raise ValueError(f"goal {goal!r}: the operator must be one of {sorted(checks)}")
    return checks[op]


def goal_verdict(goal: str | None, pair_ratios: Sequence[float]) -> str | None:
    """"met" when every pair's ratio meets the goal, "not met" when none does, "not shown"
    when they straddle it; None without a goal or without pairs."""
    if not goal or not pair_ratios:
        return None
    meets = [goal_meets(goal, r) for r in pair_ratios]
    if all(meets):
        return "met"
    return "not met" if not any(meets) else "not shown"


def verdict_cell(comparison: dict[str, Any]) -> str:
    """The table's "met" cell; results saved before verdicts existed fall back to goal_met."""
    verdict = comparison.get("goal_verdict")
    if verdict is None:
        met = comparison.get("goal_met")
        return "-" if met is None else ("yes" if met else "**no**")
    return {"met": "yes", "not met": "**no**"}.get(verdict, "not shown (runs straddle it)")


def range_text(values: Sequence[float] | None, digits: int = 3) -> str:
    return f"{fmt(values[0], digits)}–{fmt(values[1], digits)}" if values else "-"


@dataclass
class Fact:
    """A single figure that is not a ratio (the real-token fraction, MB per adapter, ...)."""

    name: str
    value: Any
    unit: str = ""
    note: str = ""


@dataclass
class Report:
    name: str
    title: str
    quick: bool
    inputs: dict[str, Any]
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    comparisons: list[Comparison] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runs: int = 0
    elapsed_s: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        suffix = "-quick" if self.quick else ""
        path = RESULTS_DIR / f"{self.name}{suffix}.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
        return path

    def markdown(self) -> str:
        return render_report(self.to_dict())


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_report(data: dict[str, Any]) -> str:
    """A report (as saved JSON) as Markdown: inputs, comparison table, facts, notes."""
    lines = [f"### {data['title']}", ""]
    if data["status"] == "skipped":
        lines += [f"skipped: {data['reason']}", ""]
        return "\n".join(lines)
    if data["status"] == "failed":
        lines += [f"**could not run**: {data['reason']}", ""]
        return "\n".join(lines)
    inputs = ", ".join(f"{k}={fmt(v)}" for k, v in data["inputs"].items())
    lines += [f"Inputs: {inputs}. Runs per side: {data['runs']} (interleaved), "
              f"elapsed {data['elapsed_s']:.0f} s.", ""]
    if data["comparisons"]:
        lines += [
            "| metric | baseline | baseline (median) | subject | subject (median) | ratio "
            "subject/baseline | goal | met | runs (baseline / subject) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        with_spread = any("ratio_spread" in c for c in data["comparisons"])
        for c in data["comparisons"]:
            runs = (", ".join(fmt(v, 3) for v in c["baseline_runs"]) + " / "
                    + ", ".join(fmt(v, 3) for v in c["subject_runs"]))
            baseline, subject, ratio = (fmt(c["baseline_median"]), fmt(c["subject_median"]),
                                        fmt(c["ratio"], 3))
            if with_spread and len(c["pair_ratios"]) > 1:
                baseline += f" ({range_text(c.get('baseline_spread'))})"
                subject += f" ({range_text(c.get('subject_spread'))})"
                ratio += f" (pairs {range_text(c.get('ratio_spread'))})"
            lines.append(
                f"| {c['metric']} ({c['unit']}) | {c['baseline_label']} | {baseline} | "
                f"{c['subject_label']} | {subject} | {ratio} | {c['goal'] or '-'} | "
                f"{verdict_cell(c)} | {runs} |"
            )
        if with_spread:
            lines += ["", "Medians with each side's (min–max) over its runs; the ratio with the "
                      "range of its per-pair ratios. A goal is met only when every pair meets "
                      "it; when the pairs straddle it the run does not show it."]
        lines.append("")
    if data["facts"]:
        lines += ["| figure | value | note |", "|---|---|---|"]
        for f in data["facts"]:
            unit = f" {f['unit']}" if f["unit"] else ""
            lines.append(f"| {f['name']} | {fmt(f['value'])}{unit} | {f['note']} |")
        lines.append("")
    for note in data["notes"]:
        lines.append(f"- {note}")
    if data["notes"]:
        lines.append("")
    return "\n".join(lines)


# --- the machine --------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(module: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "django",
             "djangorestframework", "psycopg", "gunicorn", "rq", "redis")


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: cores, CPU, RAM, load, Python and library versions."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "ram_gib": _ram_gib(),
        "load_average_at_start": load,
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in LIBRARIES},
    }


# --- running a benchmark ------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    p.add_argument("--runs", type=int, default=None, help="runs per side (default: 5, quick: 1)")
    return p


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(
    name: str,
    title: str,
    body: Callable[[argparse.Namespace, Report], None],
    *,
    argv: list[str] | None = None,
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
    default_runs: int = 5,
) -> int:
    """Parse the CLI, run `body(args, report)`, print the table, save the JSON; the exit code.

    0: ran (whatever the figures) or skipped for a missing feature; 2: could not run.
    """
    p = parser(title)
    if configure:
        configure(p)
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else default_runs
    report = Report(name=name, title=title, quick=args.quick, inputs={}, runs=args.runs,
                    machine=machine_info())

    def _terminated(signum, frame):
        # `make bench` ends a benchmark past its limit with SIGTERM: unwind, so the servers and
        # workers it started are stopped by their context managers instead of left running.
        raise CannotRun(f"terminated by signal {signum} (time limit)")

    signal.signal(signal.SIGTERM, _terminated)
    started = time.monotonic()
    code = 0
    try:
        body(args, report)
    except Skip as exc:
        report.status, report.reason = "skipped", str(exc)
    except CannotRun as exc:
        report.status, report.reason = "failed", str(exc)
        code = 2
    except Exception as exc:  # noqa: BLE001 - any crash is "could not run", with its reason
        import traceback

        traceback.print_exc()
        report.status, report.reason = "failed", f"{type(exc).__name__}: {exc}"
        code = 2
    report.elapsed_s = round(time.monotonic() - started, 1)
    report.save()
    if report.status == "skipped":
        print(f"skipped: {report.reason}")
    else:
        print(report.markdown())
    return code
