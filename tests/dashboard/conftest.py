"""Dashboard fixtures: users with memberships, data rows the pages draw, and one headless
Chromium per test session (Playwright's sync API) against pytest-django's live server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread; Django's ORM would refuse to run in a
# thread with a running loop, although the calls here are plain synchronous test code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix,
                                 tmp_path_factory):
    """On SQLite, a file test database instead of the shared in-memory one.

    With the in-memory database the live server thread and this thread share one SQLite
    connection, so a real RQ worker writing metric rows here while the browser's polls read
    them in the live server trips "database table is locked". A file database gives each
    thread its own connection and SQLite's ordinary locking with the busy timeout. (Takes
    effect when the session's first database test is one of this folder; PostgreSQL is
    unaffected.)
    """
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        path = tmp_path_factory.mktemp("dashboard-db") / "test.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(path)


def sqlite_in_memory() -> bool:
    from django.db import connection

    return connection.vendor == "sqlite" and connection.is_in_memory_db()


@pytest.fixture
def make_user(db):
    from django.contrib.auth import get_user_model

    def _make(username: str, *, tenant=None, role: str = "admin", is_staff: bool = False):
        from tenants.models import Membership

        user = get_user_model().objects.create_user(username=username, password=PASSWORD,
                                                    is_staff=is_staff)
        if tenant is not None:
            Membership.objects.create(user=user, tenant=tenant, role=role)
        return user

    return _make


@pytest.fixture
def tenant_a(make_tenant):
    return make_tenant("acme").tenant


@pytest.fixture
def tenant_b(make_tenant):
    return make_tenant("globex").tenant


@pytest.fixture
def admin_a(make_user, tenant_a):
    return make_user("alice", tenant=tenant_a, role="admin")


@pytest.fixture
def viewer_a(make_user, tenant_a):
    return make_user("victor", tenant=tenant_a, role="viewer")


@pytest.fixture
def admin_b(make_user, tenant_b):
    return make_user("bob", tenant=tenant_b, role="admin")


@pytest.fixture
def client_for(client):
    """A Django test client logged in as the given user (a fresh one per call)."""
    from django.test import Client

    def _login(user) -> Client:
        c = Client()
        c.force_login(user)
        return c

    return _login


# --- browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.js_errors = errors
    yield pg
    context.close()


@pytest.fixture
def login(live_server):
    """Log a page in through the real login form."""

    def _login(page, username: str, password: str = PASSWORD) -> None:
        page.goto(f"{live_server.url}/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_load_state("networkidle")

    return _login


@pytest.fixture
def screenshot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def _shot(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return _shot
