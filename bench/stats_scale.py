"""Stats at scale: `GET /v1/tenants/{t}/feedback/stats` with 1,000,000 feedback rows vs 1,000.

Two tenants of the same shape (1,000 logged conversations each, user + assistant message),
one with 1,000 feedback rows and one with 1,000,000 (types in rotation, every row linked to an
assistant message, distinct users so every row is its user's latest). Feedback rows are
bulk-created with psycopg COPY; conversations and messages with the ORM. COPY bypasses the
product's write path, so each tenant's counters are then rebuilt with the product's own repair
function (`feedback.services.feedback_counters_rebuild`), and the stats' `total` is checked
against the rows before anything is timed (a fast wrong answer is not a result).

Figure: latency of sequential GETs over HTTP through gunicorn (p50 and p99), small and large
tenant alternating run by run. Goal: large / small <= 2 (p50), i.e. it does not grow with data.
"""

from __future__ import annotations

import time

from bench import common, env
from bench.common import CannotRun, Comparison, Fact, Report
from bench.loadgen import run_load

TITLE = "5. Feedback stats latency: 1,000,000 feedback rows vs 1,000"
TYPES = ["thumbs_up", "thumbs_down", "correction", "rating"]


def configure(p) -> None:
    p.add_argument("--rows", type=int, default=None, help="large tenant (1,000,000; quick 10,000)")
    p.add_argument("--small", type=int, default=1000, help="small tenant's rows")
    p.add_argument("--requests", type=int, default=None, help="GETs per run (300; quick 30)")


def populate(tenant, rows: int, conversations: int = 1000) -> dict:
    """Conversations + messages (ORM), `rows` feedback rows (COPY), counters rebuilt."""
    from django.utils import timezone

    from bench.pgcopy import copy_rows
    from feedback.models import Conversation, Feedback, Message
    from feedback.services import feedback_counters_rebuild

    now = timezone.now()
    convs = Conversation.objects.bulk_create([
        Conversation(tenant=tenant, external_id=f"conv_{k}", source=Conversation.SOURCE_LOGGED)
        for k in range(conversations)])
    msgs = []
    for conv in convs:
        msgs.append(Message(tenant=tenant, conversation=conv, external_id=f"{conv.external_id}_q",
                            role="user", content="What are the store hours?", position=0))
        msgs.append(Message(tenant=tenant, conversation=conv, external_id=f"{conv.external_id}_a",
                            role="assistant", content="We open at nine.", position=1))
    Message.objects.bulk_create(msgs, batch_size=2000)
    answers = [(m.conversation_id, m.pk, m.conversation.external_id, m.external_id)
               for m in msgs if m.role == "assistant"]

    def feedback_rows():
        for i in range(rows):
            conv_id, msg_id, conv_ext, msg_ext = answers[i % len(answers)]
            kind = TYPES[i % len(TYPES)]
            yield {
                "tenant_id": tenant.pk, "conversation_id": conv_id, "message_id": msg_id,
                "conversation_external_id": conv_ext, "message_external_id": msg_ext,
                "type": kind,
                "correction": "We open at ten." if kind == "correction" else "",
                "rating": 1 + i % 5 if kind == "rating" else None,
                "metadata": {"user_id": f"u{i // len(answers)}"},
                "user_id": f"u{i // len(answers)}", "is_latest": True, "excluded_reason": "",
                "created_at": now,
            }

    started = time.perf_counter()
    with env.pg_connect() as conn:
        copy_rows(conn, Feedback, feedback_rows())
        conn.commit()
        copy_s = time.perf_counter() - started
        with conn.cursor() as cur:
            cur.execute('ANALYZE "feedback_feedback"')
        conn.commit()
    started = time.perf_counter()
    feedback_counters_rebuild(tenant=tenant)
    rebuild_s = time.perf_counter() - started
    return {"copy_s": copy_s, "rebuild_s": rebuild_s}


def body(args, report: Report) -> None:
    env.configure()
    env.require_route("/v1/tenants/x/feedback/stats", "feedback stats")
    try:
        from feedback.services import feedback_counters_rebuild  # noqa: F401
    except ImportError:
        common.log("no feedback_counters_rebuild: stats will be read as the product computes")
    rows = args.rows or (10_000 if args.quick else 1_000_000)
    requests = args.requests or (30 if args.quick else 300)
    report.inputs = {"large_tenant_rows": rows, "small_tenant_rows": args.small,
                     "conversations_per_tenant": 1000, "GETs_per_run": requests,
                     "clients": 1, "gunicorn": "2 workers x 4 threads"}
    small, small_secret = env.tenant_make("bench-stats-small")
    large, large_secret = env.tenant_make("bench-stats-large")
    common.log(f"populating {args.small:,} and {rows:,} feedback rows")
    small_info = populate(small, args.small)
    large_info = populate(large, rows)
    report.facts.append(Fact(f"COPY of {rows:,} feedback rows", round(large_info["copy_s"], 1),
                             "s", f"{rows / large_info['copy_s']:,.0f} rows/s, 5 indexes"))
    report.facts.append(Fact(f"feedback_counters_rebuild over {rows:,} rows",
                             round(large_info["rebuild_s"], 1), "s",
                             "the product's repair path (ORM iteration); not on the request path"))

    with env.Server() as server:
        apis = {"small": env.Api(server, small.slug, small_secret),
                "large": env.Api(server, large.slug, large_secret)}
        for name, expected in (("small", args.small), ("large", rows)):
            _, stats = apis[name].call("GET", "feedback/stats", expect=(200,))
            if not isinstance(stats, dict) or stats.get("total") != expected:
                raise CannotRun(f"{name} tenant: stats total {stats.get('total')!r}, expected "
                                f"{expected} (counters not built?)")
            report.facts.append(Fact(f"{name} tenant stats total", stats["total"],
                                     note=f"ready_for_training={stats.get('ready_for_training')}"))

        def measure(name: str) -> dict:
            api = apis[name]
            result = run_load(server.base_url, method="GET",
                              path_for=lambda i: api.path("feedback/stats"),
                              body_for=lambda i: None, headers=api.headers, concurrency=1,
                              total_requests=requests, warmup_requests=5)
            if result.ok != requests:
                raise CannotRun(f"stats GETs failed: {result.summary()} {result.sample_bodies}")
            return result.summary()

        results = common.rotated(args.runs, {"baseline": lambda i: measure("small"),
                                             "subject": lambda i: measure("large")},
                                 log=common.log)
    for metric, key, goal in (("latency p50", "p50_ms", "<= 2"), ("latency p99", "p99_ms", None)):
        report.comparisons.append(Comparison(
            metric=metric, unit="ms", baseline_label=f"{args.small:,} rows",
            subject_label=f"{rows:,} rows",
            baseline_runs=[r[key] for r in results["baseline"]],
            subject_runs=[r[key] for r in results["subject"]], goal=goal,
            higher_is_better=False))
    report.notes.append(
        f"Small tenant populated in {small_info['copy_s'] + small_info['rebuild_s']:.1f} s.")


def main(argv=None) -> int:
    return common.main("stats_scale", TITLE, body, argv=argv, configure=configure,
                       default_runs=5)


if __name__ == "__main__":
    raise SystemExit(main())
