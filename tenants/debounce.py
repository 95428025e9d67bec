"""Debounced per-tenant RQ checks: at most one waiting job per tenant and check.

Checks that follow every feedback row (automatic training, A/B auto-promotion, auto-rollback)
must not run in the request, nor run once per row. A Redis key per tenant and check (SET NX,
with a time to live) holds the id of the job waiting in the queue; while it waits, later rows
queue nothing, because that job will see them. The job deletes the key (`debounce_release`)
before it reads anything, so rows committed while it runs queue the next check and every row is
seen by a check that started after it. A key whose job is no longer waiting (it ran, failed, or
was lost with its queue) is stale and replaced.

Whether a tenant wants a check at all (its settings) is asked on every feedback row, so the
answer is kept in the shared cache (`tenant_setting_cached`) and forgotten by a post_save
receiver of the settings model (`tenant_setting_forget`: at once and again on commit, so a read
racing the change cannot keep the old answer past the commit; the time to live bounds it for
writes that bypass save()). A check that was queued anyway reads the settings again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

# Bounds how long a settings change made without save() (a queryset update) goes unnoticed.
SETTING_CACHE_SECONDS = 60


def tenant_check_enqueue_debounced(*, key: str, func: str, tenant_id: int, ttl: int,
                                   job_id_prefix: str, queue_name: str = "default") -> bool:
    """Queue `func(tenant_id)` (job id `<job_id_prefix>-<tenant>-<hex>`) unless a job for this
    key is already waiting. True when one was queued now."""
    import django_rq
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    queue = django_rq.get_queue(queue_name, commit_mode="auto")
    connection = queue.connection
    for _ in range(2):
        job_id = f"{job_id_prefix}-{tenant_id}-{uuid.uuid4().hex}"
        if connection.set(key, job_id, nx=True, ex=ttl):
            queue.enqueue(func, tenant_id, job_id=job_id, result_ttl=3600, failure_ttl=86400)
            return True
        waiting = connection.get(key)
        try:
            status = Job.fetch(waiting.decode(), connection=connection).get_status() \
                if waiting else None
        except NoSuchJobError:
            status = None
        if status in ("queued", "deferred", "scheduled"):
            return False  # a check is already waiting; it will see this row
        connection.delete(key)
    return False


def tenant_check_schedule(*, key: str, func: str, tenant_id: int, at, job_id_prefix: str,
                          queue_name: str = "default") -> bool:
    """Run `func(tenant_id)` at `at` (RQ's scheduler: a worker started `--with-scheduler`),
    unless the job that `key` names is already scheduled no later than `at` (it will look then,
    and schedule the next one). Each scheduled run has its own job id (`<prefix>-<tenant>-<hex>`),
    so a run that schedules its successor never writes over its own job. True when scheduled
    now."""
    import django_rq
    from rq.exceptions import NoSuchJobError

    queue = django_rq.get_queue(queue_name)
    connection = queue.connection
    registry = queue.scheduled_job_registry
    waiting = connection.get(key)
    if waiting:
        try:
            when = registry.get_scheduled_time(waiting.decode())
        except NoSuchJobError:
            when = None  # it ran, or was lost: schedule anew
        if when is not None and when <= at:
            return False
        if when is not None:
            scheduled_job_remove(queue=queue, job_id=waiting.decode())
    job_id = f"{job_id_prefix}-{tenant_id}-{uuid.uuid4().hex}"
    queue.enqueue_at(at, func, tenant_id, job_id=job_id, result_ttl=3600, failure_ttl=86400)
    ttl = max(60, int((at - datetime.now(UTC)).total_seconds()) + 3600)
    connection.set(key, job_id, ex=ttl)
    return True


def scheduled_job_remove(*, queue, job_id: str) -> None:
    """Take a job off `queue`'s scheduled registry and delete it (its hash may already be gone:
    it expired, or another process deleted it)."""
    queue.scheduled_job_registry.remove(job_id)
    job = queue.fetch_job(job_id)
    if job is not None:
        job.delete()


def debounce_release(*, key: str, queue_name: str = "default") -> None:
    """Called first by the queued job: rows committed from now on queue the next check."""
    import django_rq

    django_rq.get_queue(queue_name).connection.delete(key)


def tenant_setting_cached(*, key: str, read: Callable[[], bool]) -> bool:
    """`read()` (a settings query), answered from the shared cache while it holds the answer."""
    from django.core.cache import cache

    found = cache.get(key)
    if found is not None:
        return bool(found)
    answer = bool(read())
    cache.set(key, int(answer), SETTING_CACHE_SECONDS)
    return answer


def tenant_setting_forget(*, key: str) -> None:
    """Forget a cached settings answer now and again once the caller's transaction commits."""
    from django.core.cache import cache
    from django.db import transaction

    cache.delete(key)
    transaction.on_commit(lambda: cache.delete(key))
