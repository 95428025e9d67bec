"""Sharded feedback counters (issue 16): writers of one tenant spread over a few counter rows
instead of queueing on one, the stats read sums them in one query, and the numbers stay exact
under concurrent writers (compared with a recount from the rows)."""

import random
import threading
from collections import Counter

import pytest
from django.db import connection

from feedback.models import Feedback, FeedbackCounterShard
from feedback.selectors import feedback_stats
from feedback.services import (
    FEEDBACK_COUNTER_SHARDS,
    FEEDBACK_FAMILIES,
    conversation_log,
    feedback_counters_rebuild,
    feedback_submit,
)
from feedback.services.counters import excluded_reason, reported_message_ids
from tenants.errors import DomainError


def _stats_without_stamp(tenant) -> dict:
    return feedback_stats(tenant=tenant) | {"updated_at": None}


def _log(tenant, n: int) -> None:
    conversation_log(tenant=tenant, conversation_id=f"c{n}", messages=[
        {"message_id": f"c{n}_u", "role": "user", "content": f"Question {n}?"},
        {"message_id": f"c{n}_a", "role": "assistant", "content": f"Answer {n}."}])


@pytest.mark.django_db
def test_it_spreads_writes_over_shards_and_reads_them_in_one_query(
        owner, django_assert_num_queries):
    _log(owner.tenant, 0)
    for i in range(40):
        feedback_submit(tenant=owner.tenant, conversation_id="c0", message_id="c0_a",
                        type="thumbs_up" if i % 2 else "thumbs_down",
                        metadata={"user_id": f"u{i}"})
    shards = FeedbackCounterShard.objects.filter(tenant=owner.tenant)
    assert shards.count() == FEEDBACK_COUNTER_SHARDS
    assert shards.exclude(counts={}).count() > 1  # not one hot row
    feedback_stats(tenant=owner.tenant)  # training's readiness answer is cached per change
    with django_assert_num_queries(1):
        document = feedback_stats(tenant=owner.tenant)
    assert (document["thumbs_up"], document["thumbs_down"], document["received"]) == (20, 20, 40)


@pytest.mark.django_db
def test_it_rebuilds_into_shard_zero_with_the_same_answer(owner):
    _log(owner.tenant, 0)
    for i in range(10):
        feedback_submit(tenant=owner.tenant, conversation_id="c0", message_id="c0_a",
                        type="rating", rating=1 + i % 5, metadata={"user_id": f"u{i % 3}"})
    maintained = _stats_without_stamp(owner.tenant)
    counts = feedback_counters_rebuild(tenant=owner.tenant)
    assert _stats_without_stamp(owner.tenant) == maintained
    shards = {s.shard: s for s in FeedbackCounterShard.objects.filter(tenant=owner.tenant)}
    assert shards[0].counts == counts and counts["rating_count"] == 3
    assert all(s.counts == {} for n, s in shards.items() if n)
    assert shards[0].last_feedback_id == Feedback.objects.latest("id").pk


@pytest.mark.django_db
def test_a_write_after_rows_loaded_around_the_services_recounts_first(owner):
    _log(owner.tenant, 0)
    feedback_submit(tenant=owner.tenant, conversation_id="c0", message_id="c0_a",
                    type="thumbs_up", metadata={"user_id": "a"})
    Feedback.objects.bulk_create([
        Feedback(tenant=owner.tenant, conversation_external_id="bulk", message_external_id=f"m{i}",
                 type="thumbs_down", excluded_reason="unlinked") for i in range(30)])
    feedback_submit(tenant=owner.tenant, conversation_id="c0", message_id="c0_a",
                    type="thumbs_down", metadata={"user_id": "a"})  # supersedes the thumbs up
    document = feedback_stats(tenant=owner.tenant)
    assert (document["thumbs_up"], document["thumbs_down"], document["received"]) == (0, 31, 32)
    feedback_counters_rebuild(tenant=owner.tenant)
    assert feedback_stats(tenant=owner.tenant) | {"updated_at": None} == \
        document | {"updated_at": None}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_it_stays_exact_under_concurrent_writers_on_shared_messages(make_tenant):
    """Eight writers submit feedback on the same few messages as the same few users (so they
    supersede each other's rows and report messages), while a ninth logs the conversations some
    of that feedback waits for. Afterwards the maintained stats equal a recount, each user has
    one latest row per message and family, and every row's exclusion is what it should be."""
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need a server database (SQLite serialises writers)")
    ctx = make_tenant("shards")
    tenant = ctx.tenant
    for n in range(3):
        _log(tenant, n)  # c3..c5 are logged while the feedback comes in
    writers, per_writer = 8, 30
    barrier = threading.Barrier(writers + 1)
    errors: list[BaseException] = []

    def write(seed: int) -> None:
        rng = random.Random(seed)
        try:
            barrier.wait()
            for _ in range(per_writer):
                n = rng.randrange(6)
                kind = rng.choice(["thumbs_up", "thumbs_down", "correction", "rating",
                                   "thumbs_up", "thumbs_down", "report"])
                try:
                    feedback_submit(tenant=tenant, conversation_id=f"c{n}", message_id=f"c{n}_a",
                                    type=kind, correction="Better: 42." if kind == "correction"
                                    else "", rating=rng.randint(1, 5) if kind == "rating" else None,
                                    metadata={"user_id": f"u{rng.randrange(3)}"})
                except DomainError as exc:  # pragma: no cover - would be a test bug
                    errors.append(exc)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    def log_later() -> None:
        try:
            barrier.wait()
            for n in range(3, 6):
                _log(tenant, n)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    threads.append(threading.Thread(target=log_later))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]

    rows = list(Feedback.objects.filter(tenant=tenant).select_related("message"))
    assert len(rows) == writers * per_writer
    latest = Counter((r.user_id, r.message_external_id, FEEDBACK_FAMILIES[r.type])
                     for r in rows if r.is_latest)
    every = {(r.user_id, r.message_external_id, FEEDBACK_FAMILIES[r.type]) for r in rows}
    assert set(latest) == every and set(latest.values()) == {1}
    assert all(r.message_id is not None for r in rows)  # all six conversations were logged
    reported = reported_message_ids(tenant, {r.message_external_id for r in rows})
    wrong = [(r.pk, r.excluded_reason) for r in rows
             if r.excluded_reason != excluded_reason(r, reported=reported)]
    assert not wrong, wrong[:5]

    maintained = _stats_without_stamp(tenant)
    assert maintained["received"] == writers * per_writer
    assert FeedbackCounterShard.objects.filter(tenant=tenant).exclude(counts={}).count() > 1
    feedback_counters_rebuild(tenant=tenant)
    assert _stats_without_stamp(tenant) == maintained


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_migration_carries_each_tenants_counts_over(make_tenant):
    """0006 moves each tenant's one counters row into its shard 0 (and back when reversed)."""
    from django.db.migrations.executor import MigrationExecutor

    ctx = make_tenant("migrated")
    before = ("feedback", "0005_dataset_evaluation_only")
    counts = {"received": 7, "latest": 5, "type.thumbs_up": 5, "usable": 5,
              "usable.thumbs_up": 5, "excluded.superseded": 2}
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    try:
        old_apps = executor.loader.project_state([before]).apps
        old_apps.get_model("feedback", "FeedbackCounters").objects.create(
            tenant_id=ctx.tenant.pk, counts=counts, last_feedback_id=0)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())  # 0006 and whatever follows it
    shard = FeedbackCounterShard.objects.get(tenant=ctx.tenant)
    assert (shard.shard, shard.counts) == (0, counts)
    document = feedback_stats(tenant=ctx.tenant)
    assert (document["thumbs_up"], document["received"], document["excluded"]["superseded"]) \
        == (5, 7, 2)
