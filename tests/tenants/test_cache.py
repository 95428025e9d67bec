"""The Redis cache (synapsex_site.cache), on the real Redis the suite runs with: what the
throttle and the idempotency keys rely on still works, from several threads, and each thread's
cache builds one client per pool instead of one per call."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.conf import settings
from django.core.cache import caches


@pytest.fixture
def redis_cache():
    if "Redis" not in settings.CACHES["default"]["BACKEND"]:
        pytest.skip("the suite runs without REDIS_URL: the cache is in-process")
    return caches["default"]


def test_the_redis_cache_serves_every_operation_with_one_client(redis_cache):
    from synapsex_site.cache import RedisCache

    assert isinstance(redis_cache, RedisCache)
    key = f"test-cache-{uuid.uuid4().hex}"
    assert redis_cache.get(key) is None
    assert redis_cache.add(key, {"n": 1}, 30) and not redis_cache.add(key, {"n": 2}, 30)
    assert redis_cache.get(key) == {"n": 1}
    redis_cache.set(key, 5, 30)
    assert redis_cache.incr(key) == 6
    assert redis_cache.get_many([key, key + "-none"]) == {key: 6}
    assert redis_cache.delete(key) and redis_cache.get(key, "gone") == "gone"
    client = redis_cache._cache.get_client()
    assert redis_cache._cache.get_client(write=True) is client  # one server: one pool, one client
    assert len(redis_cache._cache._clients) == 1


def test_threads_share_nothing_and_lose_nothing(redis_cache):
    """Each thread has its own cache object (Django's per-thread handler) and so its own client;
    concurrent increments of one key all land."""
    key = f"test-cache-{uuid.uuid4().hex}"
    redis_cache.set(key, 0, 60)
    clients, errors = set(), []

    def work():
        try:
            mine = caches["default"]
            for _ in range(50):
                mine.incr(key)
            clients.add(id(mine._cache.get_client()))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert redis_cache.get(key) == 200
    assert len(clients) == 4
    redis_cache.delete(key)
