"""The database unreachable for a request: the API answers 503 with `Retry-After` and the error
envelope (`database_unavailable`), the dashboard a plain 503 with `Retry-After`, never a 500; the
next request after the database is back is ordinary.

Real, not mocked: for the requests under test the connection settings point at a TCP port on
127.0.0.1 that is bound but not listening, so psycopg's real connect is refused by the kernel
(the same OperationalError a stopped PostgreSQL gives). The PostgreSQL server itself is never
touched; the settings are restored for the next request.
"""

from __future__ import annotations

import contextlib
import socket

import pytest
from django.test import Client

from tests.security.helpers import assert_envelope

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@contextlib.contextmanager
def database_unreachable():
    """The default connection points at a refused port until the block ends."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("needs DATABASE_URL on PostgreSQL (the connection is pointed elsewhere)")
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))  # bound, never listening: connects are refused
    saved = {k: connection.settings_dict[k] for k in ("HOST", "PORT")}
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(blocker.getsockname()[1]))
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(saved)
        blocker.close()


def _assert_refused_for_real():
    """The outage was real: connecting now fails with the driver's own error."""
    from django.db import OperationalError, connection

    with pytest.raises(OperationalError):
        connection.ensure_connection()


def test_the_api_answers_503_with_retry_after_while_the_database_is_unreachable(owner, settings):
    from feedback.models import Feedback

    settings.DATABASE_RETRY_AFTER_SECONDS = 7
    assert owner.client.get(owner.url("feedback")).status_code == 200
    body = {"conversation_id": "c1", "message_id": "m1", "type": "rating", "rating": 5}
    with database_unreachable():
        _assert_refused_for_real()
        answers = [owner.client.get(owner.url("feedback")),
                   owner.client.get(owner.url("train/usage")),
                   owner.client.post(owner.url("feedback"), body, format="json")]
    for response in answers:
        error = assert_envelope(response, 503, "database_unavailable")
        assert response["Retry-After"] == "7"
        assert error["details"] == {"retry_after_seconds": 7}
    # Back: the same request is an ordinary answer and nothing was half-written meanwhile.
    assert not Feedback.objects.exists()
    assert owner.client.get(owner.url("feedback")).status_code == 200


def test_a_dashboard_page_answers_503_with_retry_after(make_tenant):
    from django.contrib.auth import get_user_model

    from tenants.models import Membership

    ctx = make_tenant("down")
    user = get_user_model().objects.create_user("dora", password="x")
    Membership.objects.create(user=user, tenant=ctx.tenant, role=Membership.ADMIN)
    client = Client()
    client.force_login(user)
    url = f"/t/{ctx.tenant.slug}/"
    assert client.get(url).status_code == 200
    with database_unreachable():
        response = client.get(url)
    assert response.status_code == 503, response.content[:300]
    assert response["Retry-After"] == "5"
    assert b"database is unavailable" in response.content
    assert client.get(url).status_code == 200
