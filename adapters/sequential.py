"""A sequential test of two Bernoulli rates that stays valid however often it is looked at.

The decisions on live traffic (A/B auto-promotion, auto-rollback after an activation) look at
the data after every conversation. A fixed-sample test (the two-proportion z-test) re-run at
every look rejects a true null far more often than its nominal alpha; here the evidence is an
*e-process* instead, and Ville's inequality bounds the chance that it *ever* crosses 1/alpha.

The statistic (a mixture sequential probability ratio test, Robbins 1970, with the composite
null handled by universal inference, Wasserman, Ramdas & Balakrishnan 2020):

    M_n = [ B(a + x_A, b + n_A - x_A) / B(a, b) ] * [ B(a + x_B, b + n_B - x_B) / B(a, b) ]
          / sup_{(p_A, p_B) in H0} p_A^x_A (1 - p_A)^(n_A - x_A) p_B^x_B (1 - p_B)^(n_B - x_B)

with x events in n trials per arm and Beta(a, b) mixing priors (a = b = 1/2, Jeffreys). The
numerator is the likelihood of the data under independent Beta priors on each rate, a product
of one-step-ahead predictive probabilities; for every fixed null point theta0 it divided by
L(theta0) is a non-negative martingale with mean 1 under theta0, and the supremum over H0 in
the denominator only makes M_n smaller. So, for every null point, P(sup_n M_n >= 1/alpha) <=
alpha (Ville 1939), whatever the looks, the stopping rule or the arm each trial goes to. The
always-valid p-value is p_n = min(1, 1 / max_{k <= n} M_k) (Johari, Koomen, Pekelis & Walsh,
"Always valid inference: continuous monitoring of A/B tests", Operations Research 70(3), 2022);
since M only depends on the counts, callers that do not keep the running maximum report
min(1, 1/M_n), which is never smaller (conservative).

H0 here is one-sided, "A's rate is not above B's" (p_A <= p_B): its maximum-likelihood point
is the two arms' own rates when x_A/n_A <= x_B/n_B (then M_n <= 1, no evidence) and the pooled
rate otherwise. Rejecting it says "A's rate is above B's". Testing one arm against k-1 others
at alpha / (k-1) each keeps the chance of naming a wrong winner under alpha (Bonferroni over
the k-1 arms that could wrongly beat the true best).

References:
* H. Robbins, "Statistical methods related to the law of the iterated logarithm", Ann. Math.
  Statist. 41(5), 1970.
* L. Wasserman, A. Ramdas, S. Balakrishnan, "Universal inference", PNAS 117(29), 2020
  (section 7, sequential / anytime-valid tests with a mixture numerator).
* R. Johari, P. Koomen, L. Pekelis, D. Walsh, "Always valid inference: continuous monitoring
  of A/B tests", Operations Research 70(3), 2022.
* J. Ville, "Etude critique de la notion de collectif", 1939 (the maximal inequality).

Late feedback: the proof needs each trial's outcome to be final when it is counted. A
conversation's feedback can arrive later, so the callers count a conversation only once its
settle window has passed, with what was known at its end (`adapters.metrics.
conversation_outcomes`); feedback after the window never changes a count. With the window
turned off (0) the counts at a look are a snapshot that late feedback can still change, which
treats both arms alike under the null but is not covered by the proof.
"""

from __future__ import annotations

import math
from typing import Any

PRIOR_A = 0.5
PRIOR_B = 0.5


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _log_mixture(x: int, n: int, a: float = PRIOR_A, b: float = PRIOR_B) -> float:
    """log of the Beta(a, b)-mixture likelihood of x events in n Bernoulli trials."""
    return _log_beta(a + x, b + n - x) - _log_beta(a, b)


def _log_bernoulli(x: int, n: int, p: float) -> float:
    """log p^x (1-p)^(n-x), with 0 log 0 = 0."""
    out = 0.0
    if x:
        out += x * math.log(p)
    if n - x:
        out += (n - x) * math.log1p(-p)
    return out


def log_e_value(x_a: int, n_a: int, x_b: int, n_b: int) -> float:
    """log M_n against H0: p_A <= p_B (see the module docstring). 0 when an arm is empty."""
    for x, n in ((x_a, n_a), (x_b, n_b)):
        if n < 0 or x < 0 or x > n:
            raise ValueError(f"need 0 <= x <= n, got x={x}, n={n}")
    if n_a == 0 or n_b == 0:
        return 0.0
    numerator = _log_mixture(x_a, n_a) + _log_mixture(x_b, n_b)
    if x_a / n_a <= x_b / n_b:  # the null's MLE is the arms' own rates
        denominator = _log_bernoulli(x_a, n_a, x_a / n_a) + _log_bernoulli(x_b, n_b, x_b / n_b)
    else:  # on the boundary p_A = p_B: the pooled rate
        pooled = (x_a + x_b) / (n_a + n_b)
        denominator = _log_bernoulli(x_a + x_b, n_a + n_b, pooled)
    return numerator - denominator


def sequential_test(x_a: int, n_a: int, x_b: int, n_b: int, *, alpha: float,
                    min_per_arm: int = 0) -> dict[str, Any]:
    """Is A's rate above B's? Valid under any number of looks.

    Returns the counts, both rates, `e_value` (M_n), `threshold` (1/alpha), the always-valid
    `p_value` (min(1, 1/M_n)), `enough_data` (both arms have `min_per_arm` trials; a guard for
    the reader, the error bound holds without it) and `significant` (M_n >= 1/alpha and
    enough data).
    """
    log_e = log_e_value(x_a, n_a, x_b, n_b)
    e_value = math.exp(min(log_e, 700.0))
    enough = n_a >= min_per_arm and n_b >= min_per_arm
    return {
        "x_a": x_a, "n_a": n_a, "x_b": x_b, "n_b": n_b,
        "rate_a": x_a / n_a if n_a else None, "rate_b": x_b / n_b if n_b else None,
        "e_value": e_value, "threshold": 1.0 / alpha, "alpha": alpha,
        "p_value": min(1.0, 1.0 / e_value),
        "enough_data": enough,
        "significant": bool(enough and log_e >= math.log(1.0 / alpha)),
    }


def simulate_false_positive_rate(*, streams: int, steps: int, rate: float, alpha: float,
                                 seed: int, rate_b: float | None = None,
                                 min_per_arm: int = 0) -> float:
    """Share of simulated streams in which the test *ever* rejects, looking after every trial.

    Each step sends one trial to arm A or B (a fair coin) with outcome ~ Bernoulli(rate) (arm B:
    `rate_b`, default the same rate: an A/A stream). With rate_b < rate this measures power.
    """
    import random

    rng = random.Random(seed)
    threshold = math.log(1.0 / alpha)
    b_rate = rate if rate_b is None else rate_b
    rejected = 0
    for _ in range(streams):
        x_a = n_a = x_b = n_b = 0
        for _ in range(steps):
            if rng.random() < 0.5:
                n_a += 1
                x_a += rng.random() < rate
            else:
                n_b += 1
                x_b += rng.random() < b_rate
            if (n_a >= min_per_arm and n_b >= min_per_arm
                    and log_e_value(x_a, n_a, x_b, n_b) >= threshold):
                rejected += 1
                break
    return rejected / streams
