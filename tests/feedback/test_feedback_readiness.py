"""The seed's readiness rule flips exactly at 50 corrections and at 100 thumbs."""

import pytest

pytestmark = pytest.mark.django_db


def submit(ctx, n: int, start: int, **body):
    for i in range(start, start + n):
        response = ctx.client.post(ctx.url("feedback"), {
            "conversation_id": f"conv_{i}", "message_id": f"msg_{i}", **body,
        }, format="json")
        assert response.status_code == 201, response.content


def stats(ctx):
    return ctx.client.get(ctx.url("feedback/stats")).json()


def test_it_is_ready_at_exactly_50_corrections(owner):
    submit(owner, 49, 0, type="correction", correction="The right answer is 500mg.")
    s = stats(owner)
    assert (s["corrections"], s["ready_for_training"]) == (49, False)
    assert s["missing"]["sft"] == {"corrections_needed": 1}
    assert s["readiness"]["sft"]["ready"] is False
    submit(owner, 1, 49, type="correction", correction="The right answer is 500mg.")
    s = stats(owner)
    assert (s["corrections"], s["ready_for_training"]) == (50, True)
    assert s["missing"]["sft"] == {"corrections_needed": 0}
    assert s["readiness"]["sft"]["ready"] is True and s["readiness"]["dpo"]["ready"] is False


def test_it_is_ready_at_exactly_100_thumbs(owner):
    submit(owner, 60, 0, type="thumbs_up")
    submit(owner, 39, 60, type="thumbs_down")
    s = stats(owner)
    assert (s["thumbs_up"], s["thumbs_down"], s["ready_for_training"]) == (60, 39, False)
    assert s["missing"]["dpo"] == {"thumbs_needed": 1}
    submit(owner, 1, 99, type="thumbs_down")
    s = stats(owner)
    assert (s["thumbs_down"], s["ready_for_training"]) == (40, True)
    assert s["missing"]["dpo"] == {"thumbs_needed": 0} and s["total"] == 100


def test_ratings_and_reports_do_not_make_a_tenant_ready(owner):
    submit(owner, 60, 0, type="rating", rating=5)
    submit(owner, 60, 60, type="report")
    s = stats(owner)
    assert s["total"] == 120 and s["ready_for_training"] is False
    assert s["by_type"] == {"thumbs_up": 0, "thumbs_down": 0, "correction": 0, "rating": 60,
                            "report": 60}
