"""Per-version online metrics from feedback on the messages each version served, the A/B
comparison, and promotion of the winner (by call and automatically).

The A/B comparison counts a conversation once its settle window (30 minutes by default) has
passed; `_age` moves a tenant's answers and feedback an hour back together, as if the traffic
had happened then (test_settle_window.py tests the window itself)."""

from datetime import timedelta

import pytest

from adapters.models import AdapterVersion
from adapters.selectors import ab_test_settings
from feedback.services import conversation_log_turns, feedback_submit
from tenants.models import AuditLogEntry

pytestmark = pytest.mark.django_db


def _served(tenant, version, n, conversation_id):
    """n assistant messages served by `version` (None = base), logged like the chat endpoint."""
    turns = []
    for i in range(n):
        turns += [{"role": "user", "content": f"question {i}"},
                  {"role": "assistant", "content": f"answer {i}"}]
    _, rows = conversation_log_turns(tenant=tenant, conversation_id=conversation_id,
                                     messages=turns, served_by_version=version, source="chat")
    return [r for r in rows if r.role == "assistant"]


def _give(tenant, messages, kinds):
    """One feedback per message: kinds like [("thumbs_up", None), ("rating", 4), ...]."""
    assert len(messages) >= len(kinds)
    for message, (kind, value) in zip(messages, kinds, strict=False):
        feedback_submit(
            tenant=tenant, conversation_id=message.conversation.external_id,
            message_id=message.external_id, type=kind,
            rating=value if kind == "rating" else None,
            correction="A better answer." if kind == "correction" else "",
            metadata={"user_id": "u1"})


def _age(tenant, by=timedelta(hours=1)):
    """Every answer and feedback row of the tenant `by` earlier, their order and gaps kept."""
    from feedback.models import Feedback, Message

    for model in (Message, Feedback):
        for pk, created in model.objects.filter(tenant=tenant).values_list("pk", "created_at"):
            model.objects.filter(pk=pk).update(created_at=created - by)


@pytest.fixture
def two_versions(owner, make_version):
    return make_version(owner.tenant), make_version(owner.tenant)


def test_metrics_count_only_feedback_on_messages_the_version_served(owner, two_versions):
    v1, v2 = two_versions
    _give(owner.tenant, _served(owner.tenant, v1, 13, "c-v1"),
          [("thumbs_up", None)] * 6 + [("thumbs_down", None)] * 2 + [("correction", None)]
          + [("rating", 4), ("rating", 5), ("rating", 5)] + [("report", None)])
    _give(owner.tenant, _served(owner.tenant, v2, 4, "c-v2"),
          [("thumbs_up", None)] + [("thumbs_down", None)] * 3)
    _give(owner.tenant, _served(owner.tenant, None, 5, "c-base"), [("thumbs_up", None)] * 5)

    response = owner.client.get(owner.url("lora/v1/metrics"))

    assert response.status_code == 200
    m = response.json()
    assert m["version"] == "v1" and m["served_messages"] == 13 and m["feedback_count"] == 13
    assert m["counts"] == {"thumbs_up": 6, "thumbs_down": 2, "correction": 1, "rating": 3,
                           "report": 1}
    up = m["thumbs_up_rate"]
    assert (up["value"], up["successes"], up["n"]) == (0.75, 6, 8)
    assert up["ci95"] == pytest.approx([0.4093, 0.9285], abs=1e-4)  # Wilson, 6 of 8
    assert m["correction_rate"]["value"] == pytest.approx(1 / 13)
    assert m["report_rate"]["value"] == pytest.approx(1 / 13)
    rating = m["mean_rating"]
    assert rating["value"] == pytest.approx(14 / 3) and rating["n"] == 3
    # t(2) = 4.303: 4.667 +- 1.434, clipped to the 1..5 scale
    assert rating["ci95"] == pytest.approx([3.2324, 5.0], abs=1e-3)

    v2m = owner.client.get(owner.url("lora/v2/metrics")).json()
    assert v2m["counts"]["thumbs_up"] == 1 and v2m["thumbs_up_rate"]["n"] == 4
    assert v2m["mean_rating"]["value"] is None

    everything = owner.client.get(owner.url("lora/metrics")).json()
    assert [v["version"] for v in everything["versions"]] == ["v2", "v1"]
    assert everything["ab_test"]["enabled"] is False


def test_a_users_changed_mind_counts_once(owner, two_versions):
    v1, _ = two_versions
    [message] = _served(owner.tenant, v1, 1, "c-mind")
    _give(owner.tenant, [message], [("thumbs_down", None)])
    _give(owner.tenant, [message], [("thumbs_up", None)])

    m = owner.client.get(owner.url("lora/v1/metrics")).json()

    assert m["counts"]["thumbs_up"] == 1 and m["counts"]["thumbs_down"] == 0


def _conversations(tenant, version, n, prefix):
    """n conversations of one assistant message each, served by `version`."""
    return [_served(tenant, version, 1, f"{prefix}-{i}")[0] for i in range(n)]


def _run_ab_test(owner, v1, v2, *, v1_bad, v1_n, v2_bad, v2_n):
    """Per arm: n conversations, the first `bad` of them thumbed down, the others thumbed up."""
    owner.client.patch(owner.url("settings"), {"lora_ab_test": {
        "enabled": True, "versions": {"v1": 0.5, "v2": 0.5}}}, format="json")
    for version, bad, n, prefix in ((v1, v1_bad, v1_n, "ab-v1"), (v2, v2_bad, v2_n, "ab-v2")):
        _give(owner.tenant, _conversations(owner.tenant, version, n, prefix),
              [("thumbs_down", None)] * bad + [("thumbs_up", None)] * (n - bad))
    _age(owner.tenant)


def test_the_ab_comparison_finds_a_significant_winner_and_promotes_it(owner, two_versions):
    v1, v2 = two_versions
    _run_ab_test(owner, v1, v2, v1_bad=16, v1_n=40, v2_bad=2, v2_n=40)

    comparison = owner.client.get(owner.url("lora/metrics")).json()["ab_test"]

    assert comparison["enabled"] is True
    assert [a["version"] for a in comparison["arms"]] == ["v1", "v2"]
    assert comparison["arms"][0]["outcome"]["conversations"] == 40
    assert comparison["arms"][0]["outcome"]["bad"] == 16
    [pair] = comparison["comparisons"]
    assert (pair["a"], pair["b"]) == ("v2", "v1")
    assert pair["bad_rate_a"] == 0.05 and pair["bad_rate_b"] == 0.4
    assert (pair["bad_a"], pair["conversations_a"]) == (2, 40)
    # The sequential e-value (tests/adapters/test_sequential.py checks the formula): 37.4 >= 20
    assert pair["e_value"] == pytest.approx(37.39, abs=0.01) and pair["threshold"] == 20
    assert pair["p_value"] == pytest.approx(1 / 37.39, rel=1e-3)
    assert comparison["significant"] is True and comparison["winner"] == "v2"

    promoted = owner.client.post(owner.url("lora/ab-test/promote"))

    assert promoted.status_code == 200
    assert promoted.json()["promoted"]["version"] == "v2"
    assert promoted.json()["lora_ab_test"] == {"enabled": False, "versions": {}}
    assert AdapterVersion.objects.get(tenant=owner.tenant, is_active=True).version == "v2"
    assert ab_test_settings(owner.tenant)["enabled"] is False
    entry = AuditLogEntry.objects.get(tenant=owner.tenant, action="adapter.ab_test_promoted")
    assert entry.target == "v2" and entry.actor.startswith("key:")
    assert entry.details["comparison"][0]["e_value"] == pytest.approx(37.39, abs=0.01)


def test_feedback_rows_in_one_conversation_count_once(owner, two_versions):
    """Many thumbs-down in one conversation are one bad conversation, not many."""
    v1, v2 = two_versions
    owner.client.patch(owner.url("settings"), {"lora_ab_test": {
        "enabled": True, "versions": {"v1": 0.5, "v2": 0.5}}}, format="json")
    _give(owner.tenant, _served(owner.tenant, v1, 30, "one-long-conversation"),
          [("thumbs_down", None)] * 20 + [("correction", None)] * 5 + [("report", None)] * 5)
    _give(owner.tenant, _conversations(owner.tenant, v2, 30, "v2"), [("thumbs_up", None)] * 30)
    _age(owner.tenant)

    comparison = owner.client.get(owner.url("lora/metrics")).json()["ab_test"]

    v1_outcome = comparison["arms"][0]["outcome"]
    assert (v1_outcome["conversations"], v1_outcome["bad"]) == (1, 1)
    assert comparison["arms"][0]["metrics"]["counts"]["thumbs_down"] == 20  # rows, as before
    assert comparison["significant"] is False


def test_no_promotion_without_significance(owner, two_versions):
    v1, v2 = two_versions
    _run_ab_test(owner, v1, v2, v1_bad=5, v1_n=40, v2_bad=3, v2_n=40)

    response = owner.client.post(owner.url("lora/ab-test/promote"))

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "ab_test_not_significant"
    assert AdapterVersion.objects.get(tenant=owner.tenant, is_active=True).version == "v1"


def test_too_little_data_is_never_significant(owner, two_versions):
    v1, v2 = two_versions
    _run_ab_test(owner, v1, v2, v1_bad=6, v1_n=6, v2_bad=0, v2_n=6)

    comparison = owner.client.get(owner.url("lora/metrics")).json()["ab_test"]

    assert comparison["comparisons"][0]["e_value"] > 20
    assert comparison["comparisons"][0]["enough_data"] is False
    assert comparison["significant"] is False and comparison["winner"] is None


def test_promote_without_a_running_test_is_409(owner, two_versions):
    response = owner.client.post(owner.url("lora/ab-test/promote"))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "ab_test_not_running"


def test_auto_promotion_after_the_feedback_that_reaches_significance(
        owner, two_versions, django_capture_on_commit_callbacks, rq_connection, settings):
    """The 80th conversation decides at once: the settle window is off here (0), so that the
    check after that row is the look that reaches significance (with the window, the check
    that decides is the one scheduled for when it settles: test_settle_window.py)."""
    from tests.training.conftest import run_worker_burst

    settings.ONLINE_DECISION_SETTLE_MINUTES = 0

    v1, v2 = two_versions
    owner.client.patch(owner.url("settings"), {"auto_promote_ab_winner": True}, format="json")
    _run_ab_test(owner, v1, v2, v1_bad=16, v1_n=40, v2_bad=2, v2_n=39)
    # Callbacks of the feedback above were not executed (no commit inside the test's
    # transaction); the next one, through the public API, queues the check on commit.
    assert AdapterVersion.objects.get(tenant=owner.tenant, is_active=True).version == "v1"
    [last] = _served(owner.tenant, v2, 1, "ab-v2-last")

    with django_capture_on_commit_callbacks(execute=True):
        response = owner.client.post(owner.url("feedback"), {
            "conversation_id": "ab-v2-last", "message_id": last.external_id,
            "type": "thumbs_up"}, format="json")
    assert response.status_code == 201
    run_worker_burst(queues=("default",))  # the check it queued (same connection, same data)

    assert AdapterVersion.objects.get(tenant=owner.tenant, is_active=True).version == "v2"
    assert ab_test_settings(owner.tenant)["enabled"] is False
    entry = AuditLogEntry.objects.get(tenant=owner.tenant, action="adapter.ab_test_promoted")
    assert entry.actor == "system" and entry.details["reason"] == "auto_promote_ab_winner"
