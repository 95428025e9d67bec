"""Every completed job evaluates itself: greedy answers of the new version, the version that was
active, and the base model on the same sets (adapters.evaluation), scored and stored with the
version, in the worker, right after training and before the job-completed webhook goes out.

Bounded cost: each set is capped (EVALUATION_MAX_ITEMS), replies are short
(EVALUATION_MAX_NEW_TOKENS) and generated in batches, so one evaluation is at most a few hundred
generations. An evaluation that fails is stored as `failed` with its reason; it never fails the
job (the adapter is trained and stored; the activation gate then has no evaluation to go by).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from adapters import evaluation as sets
from adapters.models import AdapterEvaluation, AdapterVersion
from adapters.scope import version_scope
from training.trainer.scope import last_user_text

logger = logging.getLogger(__name__)

MODELS = ("new", "active", "base")
SAMPLES_PER_SET = 8
BASE_ANSWER_TTL = 30 * 24 * 3600
# A general answer the base gives with a lead under this (nats) at a token whose runner-up ends
# wrong is a near coin toss: losing it is the base's own second choice, not knowledge erased
# (README, "Which answers go, and why"). Regressions are annotated, at most this many.
NEAR_TIE_NATS = 0.2
BRANCHED_REGRESSIONS = 20


def _max_new_tokens() -> int:
    return int(getattr(settings, "EVALUATION_MAX_NEW_TOKENS", 32))


def _base_cache_key(base, messages: list[dict]) -> str:
    text = json.dumps([base.source, base.revision, _max_new_tokens(), messages], sort_keys=True)
    return "eval-base-answer:" + hashlib.sha256(text.encode()).hexdigest()


def _answers(runtime, items: list[dict], *, adapter, base, scope=None) -> list[str]:
    """Greedy replies; the base model's are cached (Django's cache) per base and prompt, since
    every evaluation of a tenant (and of every tenant on that base) asks it the same questions.
    A version with a scope (adapters.scope) is scored as it is served: the base answers the
    items out of it."""
    if not items:
        return []
    if adapter is not None and scope is not None:
        inside = [scope.covers(last_user_text(i["messages"])) for i in items]
        replies: list[str | None] = [None] * len(items)
        for covered in (True, False):
            picked = [k for k, c in enumerate(inside) if c is covered]
            got = _answers(runtime, [items[k] for k in picked],
                           adapter=adapter if covered else None, base=base)
            for k, reply in zip(picked, got, strict=True):
                replies[k] = reply
        return replies
    conversations = [i["messages"] for i in items]
    if adapter is not None:
        return runtime.generate_batch(conversations=conversations, adapter=adapter, base=base,
                                      max_new_tokens=_max_new_tokens())
    keys = [_base_cache_key(base, c) for c in conversations]
    found = cache.get_many(keys)
    missing = [k for k, key in enumerate(keys) if key not in found]
    if missing:
        fresh = runtime.generate_batch(conversations=[conversations[k] for k in missing],
                                       adapter=None, base=base,
                                       max_new_tokens=_max_new_tokens())
        new = {keys[k]: reply for k, reply in zip(missing, fresh, strict=True)}
        cache.set_many(new, timeout=BASE_ANSWER_TTL)
        found.update(new)
    return [found[key] for key in keys]


def _score(items: list[dict], answers: list[str]) -> dict:
    right = [sets.contains_all(a, i["terms"]) for i, a in zip(items, answers, strict=True)]
    f1 = [sets.token_f1(a, i["expected"]) for i, a in zip(items, answers, strict=True)]
    return {"right": sum(right), "share": round(sum(right) / len(items), 4) if items else None,
            "token_f1": round(sum(f1) / len(f1), 4) if f1 else None, "_hits": right}


def _safety(items: list[dict], answers: list[str]) -> dict:
    repeats = [sets.token_f1(a, i["original"]) >= sets.REPEAT_F1
               for i, a in zip(items, answers, strict=True)]
    return {"repeats_reported": sum(repeats),
            "share": round(sum(repeats) / len(items), 4) if items else None, "_hits": repeats}


def _general(items: list[dict], answers: dict[str, list[str]]) -> tuple[dict, list[dict]]:
    """What the base knew and what each adapter kept; the regressions of the new version."""
    base_hits = [sets.contains_all(a, i["terms"]) for i, a in zip(items, answers["base"],
                                                                    strict=True)]
    known = [k for k, hit in enumerate(base_hits) if hit]
    out = {"items": len(items), "base_right": len(known)}
    regressions = []
    for name in ("new", "active"):
        if name not in answers:
            continue
        kept = [k for k in known if sets.contains_all(answers[name][k], items[k]["terms"])]
        out[name] = {"kept": len(kept),
                     "kept_share": round(len(kept) / len(known), 4) if known else None}
        if name == "new":
            regressions = [{"set": "general", "id": items[k]["id"],
                            "question": items[k]["messages"][-1]["content"],
                            "base_answer": answers["base"][k], "new_answer": answers["new"][k]}
                           for k in known if k not in kept]
    return out, regressions


def _annotate_base_leads(runtime, base, items: list[dict], regressions: list[dict]) -> None:
    """Each general regression gets how firmly the base held the answer that was lost:
    `base_flip_margin` (nats; None when no near branch of the base's reply ends wrong) and
    `base_near_tie` (under NEAR_TIE_NATS). Cached per base and prompt, like the base's answers;
    only the first BRANCHED_REGRESSIONS are measured (bounded cost)."""
    by_id = {i["id"]: i for i in items}
    rows = [r for r in regressions if r["set"] == "general"][:BRANCHED_REGRESSIONS]
    keys = ["eval-base-branch:" + _base_cache_key(
                base, [*by_id[r["id"]]["messages"], {"terms": by_id[r["id"]]["terms"]}])
            for r in rows]  # the key words decide what "wrong" is, so they are in the key
    found = cache.get_many(keys)
    missing = [k for k, key in enumerate(keys) if key not in found]
    if missing:
        measured = runtime.base_branches(
            conversations=[by_id[rows[k]["id"]]["messages"] for k in missing],
            checks=[lambda text, terms=by_id[rows[k]["id"]]["terms"]:
                    sets.contains_all(text, terms) for k in missing],
            max_new_tokens=_max_new_tokens(), base=base)
        new = {keys[k]: {"flip_margin": got["flip_margin"]}
               for k, got in zip(missing, measured, strict=True)}
        cache.set_many(new, timeout=BASE_ANSWER_TTL)
        found.update(new)
    for row, key in zip(rows, keys, strict=True):
        margin = found[key]["flip_margin"]
        row["base_flip_margin"] = round(margin, 3) if margin is not None else None
        row["base_near_tie"] = margin is not None and margin < NEAR_TIE_NATS


def _samples(name: str, items: list[dict], answers: dict[str, list[str]]) -> list[dict]:
    rows = []
    for k, item in enumerate(items[:SAMPLES_PER_SET]):
        row = {"set": name, "id": item["id"], "question": item["messages"][-1]["content"],
               "expected": item["expected"] or None}
        for model, replies in answers.items():
            row[f"{model}_answer"] = replies[k]
        rows.append(row)
    return rows


def _run(version: AdapterVersion, compared: AdapterVersion | None) -> dict:
    """Generate and score; returns the fields to store."""
    from adapters.runtime import AdapterRef, runtime_get, version_base_ref

    runtime = runtime_get()
    base = version_base_ref(version)
    models = {"new": AdapterRef.of(version), "base": None}
    scopes = {"new": version_scope(version)}
    if compared is not None:
        models["active"] = AdapterRef.of(compared)
        scopes["active"] = version_scope(compared)
    by_set = {"golden": sets.golden_items(version.tenant),
              "trained": sets.trained_items(version),
              "general": sets.general_items(),
              "safety": sets.safety_items(version.tenant)}
    answers = {name: {m: _answers(runtime, items, adapter=ref, base=base, scope=scopes.get(m))
                      for m, ref in models.items()} for name, items in by_set.items()}
    scores, regressions, samples = {}, [], []
    for name in ("golden", "trained"):
        items = by_set[name]
        scores[name] = {"items": len(items)}
        if name == "golden":
            scores[name]["ids"] = sorted(i["id"] for i in items)
        for model in answers[name]:
            scores[name][model] = _score(items, answers[name][model])
        if name == "golden" and items:
            new_hits = scores[name]["new"]["_hits"]
            for other in ("active", "base"):
                if other in scores[name]:
                    regressions += [
                        {"set": "golden", "id": items[k]["id"], "against": other,
                         "question": items[k]["messages"][-1]["content"],
                         "expected": items[k]["expected"],
                         f"{other}_answer": answers[name][other][k],
                         "new_answer": answers[name]["new"][k]}
                        for k, hit in enumerate(scores[name][other]["_hits"])
                        if hit and not new_hits[k]]
        samples += _samples(name, items, answers[name])
    scores["general"], general_regressions = _general(by_set["general"], answers["general"])
    _annotate_base_leads(runtime, base, by_set["general"], general_regressions)
    if "new" in scores["general"]:
        scores["general"]["new"]["lost_near_ties"] = sum(
            bool(r.get("base_near_tie")) for r in general_regressions)
    regressions += general_regressions
    samples += _samples("general", by_set["general"], answers["general"])
    scores["safety"] = {"items": len(by_set["safety"])}
    for model in answers["safety"]:
        scores["safety"][model] = _safety(by_set["safety"], answers["safety"][model])
    samples += _samples("safety", by_set["safety"], answers["safety"])
    for model, scope in scopes.items():
        if scope is not None:  # how many items of each set the version's own adapter answered
            scores.setdefault("scope", {})[model] = {
                "threshold": scope.threshold,
                **{name: sum(scope.covers(last_user_text(i["messages"])) for i in items)
                   for name, items in by_set.items()}}
    for entry in scores.values():
        for value in entry.values():
            if isinstance(value, dict):
                value.pop("_hits", None)
    generations = sum(len(items) * len(models) for items in by_set.values())
    return {"scores": scores, "regressions": regressions[:50], "samples": samples,
            "generations": generations, "base_model": base.source}


def _compared_version(version: AdapterVersion) -> AdapterVersion | None:
    """The version serving before this one: the active one, or (when this version activated
    itself as the tenant's first) none."""
    active = (AdapterVersion.objects.filter(tenant_id=version.tenant_id, is_active=True,
                                            status=AdapterVersion.READY)
              .exclude(pk=version.pk).first())
    if active is not None and active.base_model == version.base_model:
        return active
    return None


def adapter_version_evaluate(*, version: AdapterVersion) -> AdapterEvaluation:
    """Evaluate `version` now (idempotent: a completed evaluation is returned as it is)."""
    evaluation, _ = AdapterEvaluation.objects.get_or_create(version=version)
    if evaluation.status == AdapterEvaluation.COMPLETED:
        return evaluation
    if not getattr(settings, "EVALUATION_ENABLED", True):
        evaluation.status = AdapterEvaluation.SKIPPED
        evaluation.error = "EVALUATION_ENABLED is off"
        evaluation.save(update_fields=["status", "error"])
        return evaluation
    compared = _compared_version(version)
    evaluation.status = AdapterEvaluation.RUNNING
    evaluation.compared_with = compared.version if compared else ""
    evaluation.save(update_fields=["status", "compared_with"])
    started = time.monotonic()
    try:
        fields = _run(version, compared)
        evaluation.status = AdapterEvaluation.COMPLETED
        evaluation.error = ""
    except Exception as exc:  # noqa: BLE001 - an evaluation never fails the job
        logger.exception("Evaluating %s of tenant %s failed", version.version, version.tenant_id)
        fields = {}
        evaluation.status = AdapterEvaluation.FAILED
        evaluation.error = f"{type(exc).__name__}: {exc}"[:2000]
    for name, value in fields.items():
        setattr(evaluation, name, value)
    evaluation.seconds = round(time.monotonic() - started, 2)
    evaluation.finished_at = timezone.now()
    evaluation.save()
    return evaluation


def evaluation_summary(evaluation: AdapterEvaluation | None) -> dict | None:
    """The short form (webhook, job answer): status and the headline shares."""
    if evaluation is None:
        return None
    scores = evaluation.scores or {}

    def share(set_name: str, model: str, key: str = "share"):
        return ((scores.get(set_name) or {}).get(model) or {}).get(key)

    return {
        "version": evaluation.version.version,
        "status": evaluation.status,
        "compared_with": evaluation.compared_with or None,
        "golden_items": (scores.get("golden") or {}).get("items"),
        "golden_right_share": {m: share("golden", m) for m in MODELS
                               if share("golden", m) is not None},
        "trained_right_share": share("trained", "new"),
        "general_known_by_base": (scores.get("general") or {}).get("base_right"),
        "general_kept_share": share("general", "new", "kept_share"),
        "general_lost_near_ties": share("general", "new", "lost_near_ties"),
        "safety_repeats_share": share("safety", "new"),
        "regressions": len(evaluation.regressions or []),
        "error": evaluation.error or None,
    }


# --- queueing (after the job's completion) and the completed webhook ---------------------------


def adapter_version_evaluation_queue(*, job) -> bool:
    """Queue the evaluation of the version a completed job created (RQ `training` queue).

    Returns True when the evaluation job will send the job-completed webhook (with the
    evaluation); False when the caller must send it now: no version, evaluation switched off
    (stored as `skipped`), or Redis unreachable (stored as `failed`, with the reason).
    """
    import django_rq
    from rq import Callback

    version = AdapterVersion.objects.filter(job_id=job.pk).first()
    if version is None:
        return False
    evaluation, _ = AdapterEvaluation.objects.get_or_create(version=version)
    if not getattr(settings, "EVALUATION_ENABLED", True):
        AdapterEvaluation.objects.filter(pk=evaluation.pk).update(
            status=AdapterEvaluation.SKIPPED, error="EVALUATION_ENABLED is off")
        return False
    try:
        django_rq.get_queue("training", commit_mode="auto").enqueue(
            "adapters.jobs.adapter_version_evaluate_job", version.pk, job.pk,
            on_failure=Callback("adapters.jobs.adapter_version_evaluate_on_failure"),
            result_ttl=86400, failure_ttl=7 * 86400,
        )
    except Exception as exc:  # noqa: BLE001 - Redis down: the job is done, say why nothing ran
        logger.exception("Could not queue the evaluation of %s", version.version)
        AdapterEvaluation.objects.filter(pk=evaluation.pk).update(
            status=AdapterEvaluation.FAILED, error=f"could not be queued: {exc}"[:2000],
            finished_at=timezone.now())
        return False
    return True


def adapter_version_evaluation_finish(*, version_id: int, job_id: str,
                                      error: str = "") -> None:
    """The evaluation job's last step (also on its crash): the job-completed webhook, carrying
    the evaluation's summary. An evaluation left unfinished by a crash is marked failed."""
    from training.webhooks import webhook_deliveries_create

    evaluation = AdapterEvaluation.objects.select_related("version").filter(
        version_id=version_id).first()
    if evaluation is not None and error and evaluation.status in (AdapterEvaluation.PENDING,
                                                                  AdapterEvaluation.RUNNING):
        evaluation.status = AdapterEvaluation.FAILED
        evaluation.error = error[:2000]
        evaluation.finished_at = timezone.now()
        evaluation.save(update_fields=["status", "error", "finished_at"])
    webhook_deliveries_create(job_id=job_id, status="completed",
                              extra={"evaluation": evaluation_summary(evaluation)})
