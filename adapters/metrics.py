"""Per-version online metrics from user feedback, and the A/B comparison between versions.

Only feedback on messages a version *served* counts for it (`Feedback.message.served_by_version`),
and only each user's latest reaction to a message (`is_latest`), so a user who changes their mind
is counted once. Definitions:

* thumbs-up rate = up / (up + down), 95% Wilson score interval (well-behaved near 0 and 1 and
  for small n, unlike the normal approximation);
* correction rate and report rate = corrections (reports) / all feedback rows on the version's
  messages, Wilson intervals; `served_messages` (assistant turns served) is given alongside;
* mean rating (1-5) with a 95% Student-t interval (Cornish-Fisher t quantile beyond 30
  ratings), clipped to the 1..5 scale;
* A/B comparison: two-sided two-proportion z-test (pooled) on the thumbs-up rate between arms;
  `significant` when p < 0.05 and every compared arm has at least `AB_MIN_FEEDBACK_PER_ARM`
  thumbs (default 20) - a guard against declaring a winner from a handful of clicks. With more
  than two arms the best arm must beat each other arm significantly to be the winner.
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.db.models import Count, F, Q, Sum

from adapters.models import AdapterVersion, parse_version_label
from adapters.selectors import ab_test_settings
from tenants.models import Tenant

Z_95 = 1.959963984540054
RATING_MIN, RATING_MAX = 1.0, 5.0
ALPHA = 0.05
# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom.
_T_975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
          2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
          2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def ab_min_feedback_per_arm() -> int:
    return int(getattr(settings, "AB_MIN_FEEDBACK_PER_ARM", 20))


def t_quantile_975(df: int) -> float:
    if df < 1:
        return float("nan")
    if df <= len(_T_975):
        return _T_975[df - 1]
    z = Z_95  # Cornish-Fisher expansion: accurate to ~1e-4 beyond 30 degrees of freedom
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def wilson_interval(successes: int, n: int, z: float = Z_95) -> list[float] | None:
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def proportion(successes: int, n: int) -> dict[str, Any]:
    return {"value": (successes / n) if n else None, "successes": successes, "n": n,
            "ci95": wilson_interval(successes, n)}


def mean_with_interval(count: int, total: float, total_sq: float) -> dict[str, Any]:
    if count <= 0:
        return {"value": None, "n": 0, "std": None, "ci95": None}
    mean = total / count
    if count == 1:
        return {"value": mean, "n": 1, "std": None, "ci95": None}
    variance = max(0.0, (total_sq - count * mean * mean) / (count - 1))
    std = math.sqrt(variance)
    half = t_quantile_975(count - 1) * std / math.sqrt(count)
    # Ratings live on 1..5: an interval reaching past the scale is clipped to it.
    low, high = max(RATING_MIN, mean - half), min(RATING_MAX, mean + half)
    return {"value": mean, "n": count, "std": std, "ci95": [low, high]}


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> dict[str, Any]:
    """Two-sided pooled z-test of p1 == p2. p_value None when it cannot be computed."""
    if n1 == 0 or n2 == 0:
        return {"z": None, "p_value": None}
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return {"z": 0.0, "p_value": 1.0}
    z = (x1 / n1 - x2 / n2) / se
    return {"z": z, "p_value": math.erfc(abs(z) / math.sqrt(2))}


def _aggregate(tenant: Tenant, versions: list[AdapterVersion]) -> dict[int, dict[str, Any]]:
    from feedback.models import Feedback, Message

    ids = [v.pk for v in versions]
    rows = (Feedback.objects
            .filter(tenant=tenant, is_latest=True, message__served_by_version_id__in=ids)
            .values("message__served_by_version_id")
            .annotate(
                total=Count("id"),
                up=Count("id", filter=Q(type=Feedback.THUMBS_UP)),
                down=Count("id", filter=Q(type=Feedback.THUMBS_DOWN)),
                corrections=Count("id", filter=Q(type=Feedback.CORRECTION)),
                reports=Count("id", filter=Q(type=Feedback.REPORT)),
                ratings=Count("id", filter=Q(type=Feedback.RATING, rating__isnull=False)),
                rating_sum=Sum("rating", filter=Q(type=Feedback.RATING)),
                rating_sq=Sum(F("rating") * F("rating"), filter=Q(type=Feedback.RATING)),
            ))
    by_version = {row["message__served_by_version_id"]: row for row in rows}
    served = dict(Message.objects.filter(tenant=tenant, served_by_version_id__in=ids,
                                         role="assistant")
                  .values("served_by_version_id").annotate(n=Count("id"))
                  .values_list("served_by_version_id", "n"))
    out = {}
    for version in versions:
        row = by_version.get(version.pk, {})
        up, down = row.get("up", 0), row.get("down", 0)
        total = row.get("total", 0)
        out[version.pk] = {
            "version": version.version,
            "served_messages": served.get(version.pk, 0),
            "feedback_count": total,
            "counts": {"thumbs_up": up, "thumbs_down": down,
                       "correction": row.get("corrections", 0),
                       "rating": row.get("ratings", 0), "report": row.get("reports", 0)},
            "thumbs_up_rate": proportion(up, up + down),
            "correction_rate": proportion(row.get("corrections", 0), total),
            "report_rate": proportion(row.get("reports", 0), total),
            "mean_rating": mean_with_interval(row.get("ratings", 0),
                                              float(row.get("rating_sum") or 0),
                                              float(row.get("rating_sq") or 0)),
        }
    return out


def version_online_metrics(*, version: AdapterVersion) -> dict[str, Any]:
    """Online metrics of one version, from feedback on the messages it served."""
    return _aggregate(version.tenant, [version])[version.pk]


def versions_online_metrics(*, tenant: Tenant) -> list[dict[str, Any]]:
    """Online metrics of every version of the tenant (newest first), in two queries."""
    versions = list(AdapterVersion.objects.filter(tenant=tenant).order_by("-number"))
    metrics = _aggregate(tenant, versions)
    return [metrics[v.pk] for v in versions]


def ab_test_comparison(*, tenant: Tenant) -> dict[str, Any]:
    """The tenant's A/B arms side by side, with the z-test on thumbs-up rate and the winner."""
    ab = ab_test_settings(tenant)
    labels = sorted(ab["versions"], key=lambda label: parse_version_label(label) or 0)
    numbers = [parse_version_label(label) for label in labels]
    versions = list(AdapterVersion.objects.filter(tenant=tenant, number__in=numbers))
    by_label = {v.version: v for v in versions}
    metrics = _aggregate(tenant, versions)
    minimum = ab_min_feedback_per_arm()
    arms = []
    for label in labels:
        version = by_label.get(label)
        arm = {"version": label, "weight": ab["versions"][label]}
        if version is not None:
            arm["metrics"] = metrics[version.pk]
        arms.append(arm)
    result: dict[str, Any] = {
        "enabled": ab["enabled"], "arms": arms, "comparisons": [], "significant": False,
        "winner": None, "p_value": None, "alpha": ALPHA, "min_feedback_per_arm": minimum,
        "test": "two-proportion z-test on thumbs_up_rate (two-sided, pooled)",
    }
    measured = [a for a in arms if "metrics" in a]
    if len(measured) < 2:
        return result

    def rate_of(arm):
        return arm["metrics"]["thumbs_up_rate"]

    best = max(measured, key=lambda a: (rate_of(a)["value"] is not None,
                                        rate_of(a)["value"] or 0.0))
    all_beaten = True
    worst_p = None
    for other in measured:
        if other is best:
            continue
        a, b = rate_of(best), rate_of(other)
        test = two_proportion_z_test(a["successes"], a["n"], b["successes"], b["n"])
        enough = a["n"] >= minimum and b["n"] >= minimum
        significant = bool(enough and test["p_value"] is not None and test["p_value"] < ALPHA
                           and (a["value"] or 0) > (b["value"] or 0))
        result["comparisons"].append({
            "a": best["version"], "b": other["version"],
            "thumbs_up_rate_a": a["value"], "thumbs_up_rate_b": b["value"],
            "difference": (a["value"] - b["value"]) if a["n"] and b["n"] else None,
            "z": test["z"], "p_value": test["p_value"], "enough_data": enough,
            "significant": significant,
        })
        if test["p_value"] is not None:
            worst_p = test["p_value"] if worst_p is None else max(worst_p, test["p_value"])
        all_beaten = all_beaten and significant
    result["p_value"] = worst_p
    if all_beaten:
        result["significant"] = True
        result["winner"] = best["version"]
    return result
