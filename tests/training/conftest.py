"""Training test fixtures: the tiny base model (built once, cached), isolated storage and work
folders, helpers that log conversations and feedback through the API, and RQ workers (in-process
SimpleWorker in burst mode, or a real `manage.py rqworker` subprocess that a test can kill)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from tests.conftest import wait_for  # noqa: F401 - re-exported to the tests here

REPO = Path(__file__).resolve().parents[2]

# A worker subprocess must reach the test database. pytest-django's SQLite test database is in
# memory by default (invisible to other processes), so with SQLite it is put in a file of its own
# (a fresh temporary folder per session: no clash with other sessions). PostgreSQL needs nothing.
if django_settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    _test = django_settings.DATABASES["default"].setdefault("TEST", {})
    if not _test.get("NAME"):
        _test["NAME"] = str(Path(tempfile.mkdtemp(prefix="synapsex-test-db-")) / "test.sqlite3")


@pytest.fixture(autouse=True)
def training_paths(settings, tmp_path, media_root) -> dict:
    """Storage (tests/conftest.py's `media_root`) and job folders of this test (nothing shared
    with other runs). The base model is a folder that does not exist unless the test asks for
    `base_model` (the API does not load it; token estimates fall back to characters / 4)."""
    media = media_root
    work = tmp_path / "jobs"
    settings.TRAINING_WORK_DIR = work
    settings.BASE_MODEL_PATH = str(tmp_path / "no-base-model")
    settings.BASE_MODEL_HF_ID = ""
    settings.TRAINING_BACKEND = "local"
    settings.TRAINING_POLL_SECONDS = 0.5
    settings.TRAINING_CANCEL_GRACE_SECONDS = 5
    settings.WEBHOOK_RETRY_INTERVALS = [1, 1]
    return {"media": media, "work": work, "base": tmp_path / "no-base-model"}


@pytest.fixture
def base_model(settings, training_paths, tiny_base_path) -> Path:
    """Point BASE_MODEL_PATH at the tiny base model (for tests that train)."""
    settings.BASE_MODEL_PATH = str(tiny_base_path)
    training_paths["base"] = tiny_base_path
    return tiny_base_path


# --- data through the API ------------------------------------------------------------------

def log_conversation(ctx, conversation_id: str, turns: list[tuple[str, str]],
                     user_id: str = "") -> list[str]:
    """POST /conversations (the feedback app's endpoint); returns the message ids."""
    messages = []
    for i, (role, content) in enumerate(turns):
        message = {"message_id": f"{conversation_id}-m{i}", "role": role, "content": content}
        if user_id:
            message["user_id"] = user_id
        messages.append(message)
    response = ctx.client.post(ctx.url("conversations"),
                               {"conversation_id": conversation_id, "messages": messages},
                               format="json")
    assert response.status_code in (200, 201), response.content
    return [m["message_id"] for m in messages]


def give_feedback(ctx, conversation_id: str, message_id: str, type: str, **fields):
    body = {"conversation_id": conversation_id, "message_id": message_id, "type": type, **fields}
    response = ctx.client.post(ctx.url("feedback"), body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def add_corrections(ctx, pairs: list[tuple[str, str, str]], prefix: str = "c",
                    user_id: str = "") -> None:
    """For each (question, wrong answer, correction): log the exchange, then correct it."""
    for i, (question, wrong, right) in enumerate(pairs):
        conv = f"{prefix}{i}"
        ids = log_conversation(ctx, conv, [("user", question), ("assistant", wrong)],
                               user_id=user_id)
        meta = {"user_id": user_id} if user_id else {}
        give_feedback(ctx, conv, ids[1], "correction", correction=right, metadata=meta)


def add_thumb_pairs(ctx, triples: list[tuple[str, str, str]], prefix: str = "t") -> None:
    """For each (prompt, good, bad): two conversations with the same prompt, one answer up,
    one answer down."""
    for i, (prompt, good, bad) in enumerate(triples):
        up = log_conversation(ctx, f"{prefix}{i}u", [("user", prompt), ("assistant", good)])
        down = log_conversation(ctx, f"{prefix}{i}d", [("user", prompt), ("assistant", bad)])
        give_feedback(ctx, f"{prefix}{i}u", up[1], "thumbs_up")
        give_feedback(ctx, f"{prefix}{i}d", down[1], "thumbs_down")


LORA_SMALL = {"min_feedback_count": 5, "epochs": 1}


def corrections(n: int, offset: int = 0) -> list[tuple[str, str, str]]:
    return [(f"What is the code of box {i}?", "No idea.", f"Box {i} has code K{i}.")
            for i in range(offset, offset + n)]


@pytest.fixture
def ready(owner):
    """A tenant with 12 corrections: ready for an SFT job with LORA_SMALL."""
    add_corrections(owner, corrections(12))
    return owner


# --- workers -------------------------------------------------------------------------------

def run_worker_burst(queues=("training", "default"), *, rounds: int = 1,
                     wait_scheduled: float = 0.0, until=None) -> None:
    """Drain the queues with an in-process SimpleWorker (burst). With `wait_scheduled`, keep
    draining while retries are scheduled (webhook backoff), up to that many seconds after the
    first drain; with `until` (a callable), keep draining until it answers True instead of until
    nothing is scheduled (a test that waits for a retry says which outcome it waits for)."""
    import django_rq
    from rq import SimpleWorker

    qs = [django_rq.get_queue(name) for name in queues]
    deadline = None
    while True:
        _enqueue_due(qs)
        worker = SimpleWorker(qs, connection=qs[0].connection)
        worker.work(burst=True)
        # Waiting for scheduled retries starts once the first drain (the training) is over.
        deadline = deadline or time.monotonic() + wait_scheduled
        done = until() if until is not None else \
            sum(q.scheduled_job_registry.count for q in qs) == 0
        rounds -= 1
        if (done and rounds <= 0) or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def _enqueue_due(qs) -> None:
    """Scheduled jobs whose time has come (webhook retries with backoff) into their queues, in
    this process, as RQ's own scheduler does.

    Not `work(burst=True, with_scheduler=True)`: after a job that runs longer than the worker's
    maintenance interval (the real-base training, about 10 minutes) RQ 3.0 forks a scheduler
    process even in burst mode, and the burst's teardown SIGTERMs it at once; when the signal
    lands before the child has installed its own handlers, the child keeps the worker's
    inherited one, ignores it, and the teardown's join waits forever (a CI run hung so).

    Nor behind RQ's scheduler locks: the test's queues have no other consumer (`rq_connection`
    emptied them), and a lock still held by anyone else (up to 61 s) would skip due retries
    silently, which is one way a CI run saw a webhook retry never sent."""
    from rq.scheduler import RQScheduler

    scheduler = RQScheduler(qs, connection=qs[0].connection)
    scheduler.prepare_registries([q.name for q in qs])
    scheduler.enqueue_scheduled_jobs()


def worker_env(redis_url: str, paths: dict) -> dict:
    """Environment for a worker subprocess: same database, Redis, storage, base model."""
    env = dict(os.environ)
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        user = db.get("USER") or "postgres"
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        env["DATABASE_URL"] = (f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:"
                               f"{db.get('PORT') or 5432}/{db['NAME']}")
    env.update({
        "REDIS_URL": redis_url,
        "MEDIA_ROOT": str(paths["media"]),
        "TRAINING_WORK_DIR": str(paths["work"]),
        "BASE_MODEL_PATH": str(paths["base"]),
        "BASE_MODEL_HF_ID": "",
        "TRAINING_BACKEND": "local",
        "SYNAPSEX_EMBEDDED": "1",
        "SECRET_KEY": django_settings.SECRET_KEY,
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def start_worker_process(redis_url: str, paths: dict, log_path: Path,
                         burst: bool = True) -> subprocess.Popen:
    """A real `manage.py rqworker training` (non-forking SimpleWorker, so SIGKILL to it kills
    the runner as it would in production with one process per worker)."""
    cmd = [sys.executable, "manage.py", "rqworker", "training",
           "--worker-class", "rq.worker.SimpleWorker"]
    if burst:
        cmd.append("--burst")
    log = open(log_path, "ab")  # noqa: SIM115 - closed when the process ends
    return subprocess.Popen(cmd, cwd=str(REPO), env=worker_env(redis_url, paths), stdout=log,
                            stderr=subprocess.STDOUT)


