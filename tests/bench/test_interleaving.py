"""The order in which benchmark sides run: mirrored rounds, so neither side always goes first."""

import importlib.util
import sys
from pathlib import Path

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
