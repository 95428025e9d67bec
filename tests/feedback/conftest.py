"""Feedback test helpers: the error-envelope check and row counts for "nothing was written"."""

import pytest


def _assert_envelope(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, getattr(response, "content", b"")[:2000]
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if code:
        assert error["code"] == code, error
    return error


@pytest.fixture
def assert_envelope():
    return _assert_envelope


def _row_counts() -> dict:
    from feedback.models import (
        Conversation,
        Dataset,
        DatasetRecord,
        Feedback,
        FeedbackCounterShard,
        Message,
    )
    from feedback.services import counters_sum
    from tenants.models import IdempotencyRecord

    counts = {model.__name__: model.objects.count()
              for model in (Conversation, Message, Feedback, Dataset, DatasetRecord,
                            IdempotencyRecord)}
    counts["counters"] = sorted(
        (tenant_id, sorted((k, n) for k, n in counters_sum(
            FeedbackCounterShard.objects.filter(tenant_id=tenant_id)).items() if n))
        for tenant_id in set(FeedbackCounterShard.objects.values_list("tenant_id", flat=True)))
    return counts


@pytest.fixture
def row_counts():
    """A snapshot of every table this app writes (and the counters' contents)."""
    return _row_counts


@pytest.fixture
def log_conversation(owner):
    """Log a conversation for the owner: user turn `msg_<n>_u`, assistant turn `msg_<n>_a`."""

    def _log(conversation_id: str, n: int = 1, *, ctx=None, answer: str = "An answer."):
        ctx = ctx or owner
        response = ctx.client.post(ctx.url("conversations"), {
            "conversation_id": conversation_id,
            "messages": [
                {"message_id": f"{conversation_id}_u{n}", "role": "user", "content": "Question?"},
                {"message_id": f"{conversation_id}_a{n}", "role": "assistant", "content": answer},
            ],
        }, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    return _log
