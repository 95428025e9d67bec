"""The order in which benchmark sides run: mirrored rounds, so neither side always goes first."""

import importlib.util
import sys
from pathlib import Path

import pytest

# tests/bench shadows the top-level `bench` package on sys.path here: load the harness by path.
_spec = importlib.util.spec_from_file_location(
    "bench_common", Path(__file__).resolve().parents[2] / "bench" / "common.py")
_common = importlib.util.module_from_spec(_spec)
sys.modules["bench_common"] = _common  # dataclasses look their module up
_spec.loader.exec_module(_common)
rotated, round_order = _common.rotated, _common.round_order


def test_it_runs_two_sides_in_abba_order():
    calls = []
    rotated(4, {"A": lambda i: calls.append("A"), "B": lambda i: calls.append("B")})
    assert "".join(calls) == "ABBABAAB"


def test_it_pairs_results_by_round():
    results = rotated(3, {"A": lambda i: ("A", i), "B": lambda i: ("B", i)})
    assert results == {"A": [("A", 0), ("A", 1), ("A", 2)], "B": [("B", 0), ("B", 1), ("B", 2)]}


def test_it_balances_first_and_last_places_for_three_sides():
    names = ["A", "B", "C"]
    rounds = [round_order(i, names) for i in range(6)]
    assert [r[0] for r in rounds] == ["A", "C", "B", "A", "C", "B"]
    assert sorted(r[0] for r in rounds) == sorted(r[-1] for r in rounds) == sorted(names * 2)
    assert all(sorted(r) == names for r in rounds)


def test_a_goal_is_met_only_when_every_pair_meets_it():
    """Per-pair ratios that straddle the goal show neither "met" nor "not met", even when
    their median meets it; each side's spread and the ratios' range are kept."""
    comparison = _common.Comparison
    straddling = comparison(metric="latency p50", unit="ms", baseline_label="base",
                            subject_label="adapter", baseline_runs=[100, 100, 100],
                            subject_runs=[105, 110, 130], goal="<= 1.15",
                            higher_is_better=False)
    assert round(straddling.ratio, 3) == 1.1  # the median meets the goal ...
    assert straddling.goal_verdict == "not shown" and straddling.goal_met is None  # ... pairs not
    assert straddling.subject_spread == [105, 130] and straddling.baseline_spread == [100, 100]
    assert [round(r, 2) for r in straddling.ratio_spread] == [1.05, 1.3]

    met = comparison(metric="m", unit="", baseline_label="a", subject_label="b",
                     baseline_runs=[10, 10], subject_runs=[11, 11.4], goal="<= 1.15")
    missed = comparison(metric="m", unit="", baseline_label="a", subject_label="b",
                        baseline_runs=[10, 10], subject_runs=[9, 8], goal=">= 0.95")
    assert (met.goal_verdict, met.goal_met) == ("met", True)
    assert (missed.goal_verdict, missed.goal_met) == ("not met", False)
    assert _common.verdict_cell(straddling.__dict__) == "not shown (runs straddle it)"
    assert _common.verdict_cell({"goal_met": True}) == "yes"  # results saved before verdicts

    table = _common.render_report({
        "title": "t", "status": "ok", "inputs": {}, "runs": 3, "elapsed_s": 1.0,
        "comparisons": [straddling.__dict__], "facts": [], "notes": []})
    assert "| 110 (105–130) |" in table and "1.1 (pairs 1.05–1.3)" in table
    assert "not shown (runs straddle it)" in table


def test_strict_goals_are_strict_and_unknown_operators_refused():
    """"> 1.3" (issue 16's goal against TRL's default) is not met by a pair at exactly 1.3;
    an operator the parser does not know is an error, not silently read as "<="."""
    at_bound = _common.Comparison(metric="m", unit="", baseline_label="a", subject_label="b",
                                  baseline_runs=[10, 10], subject_runs=[13, 13], goal="> 1.3")
    above = _common.Comparison(metric="m", unit="", baseline_label="a", subject_label="b",
                               baseline_runs=[10, 10], subject_runs=[14, 15], goal="> 1.3")
    assert at_bound.goal_verdict == "not met" and above.goal_verdict == "met"
    assert _common.goal_meets("< 2", 1.5) and not _common.goal_meets("< 2", 2.0)
    with pytest.raises(ValueError, match="operator"):
        _common.goal_meets("== 1", 1.0)
