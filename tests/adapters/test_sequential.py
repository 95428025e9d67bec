"""The sequential test of two Bernoulli rates (adapters.sequential): its false positive rate
when looked at after every conversation, by simulation with fixed seeds, against the
fixed-sample z-test re-run at every look; its power on a real difference; the statistic checked
against an independent computation. Pure Python, no database."""

import math
import random

import pytest

from adapters.metrics import two_proportion_z_test
from adapters.sequential import (
    PRIOR_A,
    PRIOR_B,
    log_e_value,
    sequential_test,
    simulate_false_positive_rate,
)

ALPHA = 0.05
MARGIN = 0.02  # allowed above alpha in 500 streams (the binomial sd at 5% is about 0.01)


def test_an_aa_stream_looked_at_after_every_conversation_stays_under_alpha():
    rate = simulate_false_positive_rate(streams=500, steps=400, rate=0.2, alpha=ALPHA,
                                        seed=15)
    print(f"A/A, 500 streams x 400 conversations, a look after each: {rate:.3f} rejected")
    assert rate <= ALPHA + MARGIN


def test_a_rare_outcome_stays_under_alpha_too():
    rate = simulate_false_positive_rate(streams=500, steps=400, rate=0.03, alpha=ALPHA,
                                        seed=16)
    assert rate <= ALPHA + MARGIN


def test_the_one_sided_null_holds_when_a_is_truly_better():
    # H0 is "A's bad rate is not above B's": A at 0.15 and B at 0.25 is inside it.
    rate = simulate_false_positive_rate(streams=500, steps=400, rate=0.15, rate_b=0.25,
                                        alpha=ALPHA, seed=17)
    assert rate <= ALPHA + MARGIN


def test_the_z_test_rerun_at_every_look_would_not():
    """The rule it replaces: the same kind of streams, p < 0.05 at any look with 20 per arm."""
    rng = random.Random(15)
    rejected = 0
    for _ in range(500):
        x = [0, 0]
        n = [0, 0]
        for _ in range(400):
            arm = int(rng.random() < 0.5)
            n[arm] += 1
            x[arm] += rng.random() < 0.2
            if min(n) >= 20:
                p = two_proportion_z_test(x[0], n[0], x[1], n[1])["p_value"]
                if p is not None and p < ALPHA:
                    rejected += 1
                    break
    print(f"z-test with peeking: {rejected / 500:.3f} rejected")
    assert rejected / 500 > 2 * ALPHA


def test_a_real_difference_is_detected():
    power = simulate_false_positive_rate(streams=200, steps=600, rate=0.3, rate_b=0.1,
                                         alpha=ALPHA, seed=18, min_per_arm=20)
    print(f"power, 0.30 vs 0.10 within 600 conversations: {power:.3f}")
    assert power >= 0.9


def _predictive_log_likelihood(outcomes):
    """log of the Beta(a, b) mixture likelihood as a product of one-step predictions."""
    total, events = 0.0, 0
    for i, outcome in enumerate(outcomes):
        p_event = (PRIOR_A + events) / (PRIOR_A + PRIOR_B + i)
        total += math.log(p_event if outcome else 1 - p_event)
        events += outcome
    return total


def test_the_statistic_matches_an_independent_computation():
    a = [1] * 16 + [0] * 24
    b = [1] * 2 + [0] * 38
    pooled = 18 / 80
    null = 18 * math.log(pooled) + 62 * math.log(1 - pooled)
    expected = _predictive_log_likelihood(a) + _predictive_log_likelihood(b) - null
    assert log_e_value(16, 40, 2, 40) == pytest.approx(expected, rel=1e-9)
    result = sequential_test(16, 40, 2, 40, alpha=ALPHA, min_per_arm=20)
    assert result["significant"] is True and result["threshold"] == 20
    assert result["p_value"] == pytest.approx(1 / result["e_value"])


def test_no_evidence_when_a_is_not_above_b():
    assert log_e_value(2, 40, 16, 40) <= 0
    assert log_e_value(5, 50, 5, 50) <= 0
    assert sequential_test(0, 0, 3, 10, alpha=ALPHA)["e_value"] == 1.0


def test_too_few_trials_are_never_significant():
    result = sequential_test(20, 20, 0, 20, alpha=ALPHA, min_per_arm=21)
    assert result["e_value"] > 1e6 and result["enough_data"] is False
    assert result["significant"] is False


@pytest.mark.parametrize("counts", [(-1, 3, 0, 3), (4, 3, 0, 3), (0, 3, 2, 1)])
def test_impossible_counts_are_refused(counts):
    with pytest.raises(ValueError):
        log_e_value(*counts)
