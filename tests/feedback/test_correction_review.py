"""The corrections review queue (tenant setting `review_corrections`) and the per-user cap
(`max_examples_per_user`): settings through PATCH /settings, the queue with the original answer,
approve / edit / reject one or many, and what a training job would then use (its dry run)."""

import pytest

from feedback.models import Feedback
from tenants.models import AuditLogEntry
from tests.training.conftest import LORA_SMALL, add_corrections, corrections

pytestmark = pytest.mark.django_db


def sft_total(ctx) -> int:
    response = ctx.client.post(ctx.url("train/lora"), {**LORA_SMALL, "min_feedback_count": 1,
                                                       "dry_run": True}, format="json")
    if response.status_code == 409:  # not_ready: nothing to train on
        return 0
    body = response.json()
    return body["training_samples"] + body["eval_samples"]


def set_settings(ctx, **changes) -> dict:
    response = ctx.client.patch(ctx.url("settings"), changes, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_with_review_on_only_approved_corrections_train(owner):
    add_corrections(owner, corrections(6))
    assert sft_total(owner) == 6
    document = set_settings(owner, review_corrections=True)
    assert document["review_corrections"] is True and document["max_examples_per_user"] is None
    assert owner.client.get(owner.url("settings")).json()["review_corrections"] is True
    assert sft_total(owner) == 0

    queue = owner.client.get(owner.url("feedback/review")).json()
    assert queue["count"] == 6
    first = queue["results"][0]
    assert first["correction"] == "Box 0 has code K0." and first["original_answer"] == "No idea."
    ids = [row["id"] for row in queue["results"]]

    bulk = owner.client.post(owner.url("feedback/review"),
                             {"ids": ids[:3], "action": "approve"}, format="json")
    assert bulk.status_code == 200, bulk.content
    assert bulk.json()["reviewed"] == 3
    assert sft_total(owner) == 3
    edit = owner.client.post(owner.url(f"feedback/review/{ids[3]}"),
                             {"action": "edit", "correction": "Box 3: code K3, call a@b.fi"},
                             format="json")
    assert edit.status_code == 200, edit.content
    edited = edit.json()["corrections"][0]
    assert edited["review_status"] == "approved" and "a@b.fi" not in edited["correction"]
    rejected = owner.client.post(owner.url("feedback/review"),
                                 {"ids": ids[4:], "action": "reject"}, format="json")
    assert rejected.json()["reviewed"] == 2
    assert sft_total(owner) == 4
    assert owner.client.get(owner.url("feedback/review")).json()["count"] == 0
    listed = owner.client.get(owner.url("feedback/review"), {"status": "rejected"}).json()
    assert sorted(r["id"] for r in listed["results"]) == ids[4:]
    # Review off: every correction trains again, except the rejected ones.
    set_settings(owner, review_corrections=False)
    assert sft_total(owner) == 4
    assert AuditLogEntry.objects.filter(action="feedback.correction_approve").count() == 1
    assert AuditLogEntry.objects.filter(action="feedback.correction_edit").count() == 1


def test_review_refusals_get_the_envelope_and_change_nothing(owner, outsider, read_only,
                                                             assert_envelope):
    add_corrections(owner, corrections(2))
    ids = list(Feedback.objects.filter(tenant=owner.tenant).order_by("id")
               .values_list("id", flat=True))
    url = owner.url("feedback/review")
    for bad in ({"ids": ids, "action": "approve", "extra": 1}, {"ids": ids, "action": "keep"},
                {"action": "approve"}, {"ids": [], "action": "reject"},
                {"ids": ids, "action": "edit", "correction": "x"}):
        assert_envelope(owner.client.post(url, bad, format="json"), 400, "validation_error")
    assert_envelope(owner.client.post(owner.url(f"feedback/review/{ids[0]}"), {"action": "edit"},
                                      format="json"), 400, "validation_error")
    assert_envelope(owner.client.get(url, {"status": "odd"}), 400, "validation_error")
    # One unknown id: 404 and none of the others are reviewed.
    missing = owner.client.post(url, {"ids": [ids[0], 99999], "action": "approve"},
                                format="json")
    assert_envelope(missing, 404, "not_found")
    # Another tenant: 404 on the owner's URL and with the owner's ids on its own URL.
    assert_envelope(outsider.client.post(url, {"ids": ids, "action": "approve"}, format="json"),
                    404)
    assert_envelope(outsider.client.post(outsider.url("feedback/review"),
                                         {"ids": ids, "action": "approve"}, format="json"), 404)
    assert_envelope(outsider.client.post(outsider.url(f"feedback/review/{ids[0]}"),
                                         {"action": "approve"}, format="json"), 404)
    assert_envelope(outsider.client.get(url), 404)
    assert outsider.client.get(outsider.url("feedback/review")).json()["count"] == 0
    assert_envelope(read_only.client.post(url, {"ids": ids, "action": "approve"},
                                          format="json"), 403)
    assert set(Feedback.objects.values_list("review_status", flat=True)) == {""}


def test_the_per_user_cap_limits_one_users_rows_in_a_job(owner, assert_envelope):
    add_corrections(owner, corrections(6), prefix="loud", user_id="loud_user")
    add_corrections(owner, corrections(2, offset=50), prefix="q", user_id="quiet_user")
    add_corrections(owner, corrections(2, offset=80), prefix="anon")
    assert sft_total(owner) == 10
    set_settings(owner, max_examples_per_user=2)
    assert sft_total(owner) == 6  # 2 of the loud user, 2 quiet, 2 without a user id (uncapped)
    set_settings(owner, max_examples_per_user=None)
    assert sft_total(owner) == 10
    for bad in (0, -1, 1.5, "many", 1_000_001, [2]):
        response = owner.client.patch(owner.url("settings"), {"max_examples_per_user": bad},
                                      format="json")
        assert_envelope(response, 400, "validation_error")
    assert_envelope(owner.client.patch(owner.url("settings"), {"review_corrections": "perhaps"},
                                       format="json"), 400, "validation_error")


def test_the_settings_service_refuses_bad_values_for_every_caller(owner):
    """Callers other than the API's serializer (the dashboard, scripts) get the same checks."""
    from feedback.models import FeedbackSettings
    from feedback.services import feedback_settings_update
    from tenants.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        feedback_settings_update(tenant=owner.tenant, changes={
            "review_corrections": "yes", "max_examples_per_user": True, "typo": 1})
    assert set(refused.value.details) == {"review_corrections", "max_examples_per_user", "typo"}
    assert not FeedbackSettings.objects.filter(tenant=owner.tenant).exists()
    row = feedback_settings_update(tenant=owner.tenant, changes={"max_examples_per_user": 3})
    assert row.max_examples_per_user == 3 and row.review_corrections is False
