"""What each training method can really train on now: the answer to the feedback app's
`feedback_readiness_requested` (the per-method part of `GET .../feedback/stats`).

The seed's rule (`ready_for_training`: 50 corrections or 100 thumbs) counts feedback rows; a job
counts what the compiler makes of them, so 100 lone thumbs are "ready" yet a DPO job refuses them
(no two answers to the same prompt, no pair). This compiles the tenant's data once and reports,
per method, the number a job's readiness check compares with its threshold (the default one
here; a request may lower it), with the same words.
"""

from __future__ import annotations

from typing import Any

from django.core.cache import cache

from training import compiler
from training.parameters import DPO, KTO, SFT, training_params_defaults

# A stats read compiles at most once per change of the tenant's feedback counters; dataset
# edits do not move the counters, so the answer may lag them by this long.
CACHE_SECONDS = 30

_WHAT = {
    SFT: ("min_feedback_count", "SFT examples (corrections, answers rated 4-5, dataset "
                                "conversations)"),
    DPO: ("min_preference_pairs", "preference pairs (corrections, thumbs up and down on answers "
                                  "to the same prompt, dataset preferences)"),
    KTO: ("min_feedback_count", "KTO examples (thumbs up/down, ratings 4-5 or 1-2, corrections, "
                                "datasets)"),
}


def training_readiness(*, tenant) -> dict[str, dict[str, Any]]:
    """Per method: usable examples, the default threshold, ready or not, how many are missing."""
    compiled = compiler.training_data_compile(tenant=tenant, method=SFT)
    usable = {SFT: compiled.sft_examples, DPO: compiled.dpo_pairs, KTO: compiled.kto_examples}
    out: dict[str, dict[str, Any]] = {}
    for method, (parameter, what) in _WHAT.items():
        required = int(training_params_defaults(method=method)[parameter])
        out[method] = {"usable": usable[method], "required": required,
                       "ready": usable[method] >= required,
                       "missing": max(0, required - usable[method]),
                       "threshold_parameter": parameter, "counts": what}
    out[KTO].update(desirable=compiled.kto_desirable, undesirable=compiled.kto_undesirable)
    return out


def feedback_readiness_received(sender, *, tenant, stamp: str = "", **kwargs) -> dict:
    """Receiver of feedback.signals.feedback_readiness_requested (connected in apps.py)."""
    key = f"training-readiness:{tenant.pk}:{stamp}"
    methods = cache.get(key) if stamp else None
    if methods is None:
        methods = training_readiness(tenant=tenant)
        if stamp:
            cache.set(key, methods, CACHE_SECONDS)
    return methods
