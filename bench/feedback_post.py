"""Feedback POST under concurrency, through gunicorn on PostgreSQL, vs a trivial DRF endpoint.

Subject: `POST /v1/tenants/{t}/feedback` with the seed's body (conversation_id, message_id,
type, correction/rating, metadata.user_id), on messages logged beforehand through
`POST .../conversations` (so feedback links, as in production), types in rotation, user ids
repeating so that some feedback supersedes earlier feedback of the same user.

Baseline: `POST /bench/tenants/{t}/noop` (bench/bench_urls.py, never routed by the product): the
same server and DRF stack (API-key auth, tenant scoping, throttle, JSON parse and render) and
the same bodies, no work. Both driven by the same closed-loop generator (`bench.loadgen`:
C keep-alive clients) for a fixed time per run. Figures: requests/s, p50 and p99 latency.
Goal: feedback requests/s / trivial requests/s >= 0.5.

Informational: feedback spread over 4 tenants vs 1 tenant. Until issue 16 one counters row per
tenant serialised that tenant's feedback writes (4 tenants ran 1.7x faster); with sharded
counters and per-message locks the ratio should stay near 1.
"""

from __future__ import annotations

import json

from bench import common, env
from bench.common import CannotRun, Comparison, Fact, Report
from bench.loadgen import run_load

TITLE = "4. Feedback POST under concurrency vs a trivial DRF endpoint (gunicorn, PostgreSQL)"
TYPES = ["thumbs_up", "thumbs_down", "correction", "rating", "thumbs_up", "thumbs_down"]


def configure(p) -> None:
    p.add_argument("--seconds", type=float, default=None, help="per run (10; quick 2)")
    p.add_argument("--concurrency", type=int, default=None, help="clients (16; quick 4)")
    p.add_argument("--conversations", type=int, default=None, help="logged first (400; quick 40)")


def feedback_body(i: int, conversations: int) -> bytes:
    k = i % conversations
    kind = TYPES[i % len(TYPES)]
    body = {"conversation_id": f"conv_{k}", "message_id": f"msg_{k}_a", "type": kind,
            "metadata": {"user_id": f"user_{(i // conversations) % 50}", "category": "dosage"}}
    if kind == "correction":
        body["correction"] = f"The correct answer is {100 + i % 900}mg, not 250mg."
    if kind == "rating":
        body["rating"] = 1 + i % 5
    return json.dumps(body).encode()


def body(args, report: Report) -> None:
    env.configure()
    env.require_route("/v1/tenants/x/feedback", "feedback POST")
    env.require_route("/v1/tenants/x/conversations", "conversation logging")
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    concurrency = args.concurrency or (4 if args.quick else 16)
    conversations = args.conversations or (40 if args.quick else 400)
    tenants = [env.tenant_make(f"bench-fb-{n}") for n in range(4)]
    report.inputs = {"seconds_per_run": seconds, "clients": concurrency,
                     "logged_conversations": conversations, "gunicorn": "2 workers x 4 threads",
                     "database": "PostgreSQL"}

    with env.Server() as server:
        for tenant, secret in tenants:
            api = env.Api(server, tenant.slug, secret)
            logged = run_load(
                server.base_url, method="POST", path_for=lambda i, a=api: a.path("conversations"),
                body_for=lambda i: json.dumps({"conversation_id": f"conv_{i}", "messages": [
                    {"message_id": f"msg_{i}_q", "role": "user",
                     "content": f"What is the dosage for item {i}?"},
                    {"message_id": f"msg_{i}_a", "role": "assistant",
                     "content": "The typical dosage is 250mg every 6 hours."}]}).encode(),
                headers=api.headers, concurrency=4, total_requests=conversations)
            if logged.ok != conversations:
                raise CannotRun(f"logging conversations failed: {logged.summary()} "
                                f"{logged.sample_bodies}")
        (t0, s0) = tenants[0]
        main_api = env.Api(server, t0.slug, s0)
        statuses: dict[str, dict] = {}

        def drive(path_for, headers, name, headers_for=None) -> dict:
            result = run_load(server.base_url, method="POST", path_for=path_for,
                              body_for=lambda i: feedback_body(i, conversations),
                              headers=headers, headers_for=headers_for,
                              concurrency=concurrency, duration_s=seconds,
                              warmup_requests=2)
            summary = result.summary()
            bad = sum(n for s, n in result.statuses.items() if not 200 <= s < 300)
            if result.ok == 0 or bad > 0.01 * max(1, result.ok):
                raise CannotRun(f"{name}: {summary} {result.sample_bodies} {result.errors}")
            for status, n in result.statuses.items():
                statuses.setdefault(name, {}).setdefault(status, 0)
                statuses[name][status] += n
            return summary

        def trivial(i: int) -> dict:
            return drive(lambda i: f"/bench/tenants/{t0.slug}/noop", main_api.headers, "trivial")

        def feedback(i: int) -> dict:
            return drive(lambda i: main_api.path("feedback"), main_api.headers, "feedback")

        results = common.rotated(args.runs, {"baseline": trivial, "subject": feedback},
                                 log=common.log)
        base, subj = results["baseline"], results["subject"]
        for metric, key, unit, goal, higher in (
            ("throughput", "rps", "requests/s", ">= 0.5", True),
            ("latency p50", "p50_ms", "ms", None, False),
            ("latency p99", "p99_ms", "ms", None, False),
        ):
            report.comparisons.append(Comparison(
                metric=metric, unit=unit, baseline_label="trivial DRF endpoint (auth, no work)",
                subject_label="POST feedback, 1 tenant",
                baseline_runs=[r[key] for r in base], subject_runs=[r[key] for r in subj],
                goal=goal, higher_is_better=higher))

        if not args.quick:
            apis = [env.Api(server, t.slug, s) for t, s in tenants]

            def one_tenant(i: int) -> dict:
                return feedback(i)

            def four_tenants(i: int) -> dict:
                return drive(lambda i: apis[i % 4].path("feedback"), {}, "feedback-4",
                             headers_for=lambda i: apis[i % 4].headers)

            spread = common.rotated(max(2, args.runs // 2),
                                    {"baseline": one_tenant, "subject": four_tenants},
                                    log=common.log)
            report.comparisons.append(Comparison(
                metric="throughput", unit="requests/s", baseline_label="POST feedback, 1 tenant",
                subject_label="POST feedback, 4 tenants in rotation",
                baseline_runs=[r["rps"] for r in spread["baseline"]],
                subject_runs=[r["rps"] for r in spread["subject"]],
                note="informational: per-tenant serialisation (sharded counters since issue 16)"))

    from feedback.models import Feedback

    stored = Feedback.objects.filter(tenant=t0).count()
    report.facts.append(Fact("feedback rows stored for the 1-tenant runs", stored))
    report.facts.append(Fact("response statuses", json.dumps(statuses)))


def main(argv=None) -> int:
    return common.main("feedback_post", TITLE, body, argv=argv, configure=configure,
                       default_runs=5)


if __name__ == "__main__":
    raise SystemExit(main())
