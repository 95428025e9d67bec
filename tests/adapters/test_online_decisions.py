"""Automatic decisions on live traffic, end to end: conversations served per version (logged as
the chat endpoint logs them), feedback through the public API one row at a time, the check after
every row (queued by its on-commit hook, committed for real, and run by an RQ worker), the
rollback / promotion through the real
services, the audit entries with their numbers, the webhook delivered by a real RQ worker to a
loopback HTTP receiver (allowed by WEBHOOK_ALLOWED_HOSTS), and the numbers in
GET .../lora/metrics. Counting is per conversation: a conversation thumbed down twice is one bad
conversation.

These tests look after every feedback row, so they turn the settle window off
(`ONLINE_DECISION_SETTLE_MINUTES = 0`: a conversation counts at once, with its feedback as it
stands); the window, on by default, and the scheduled check that follows it are tested in
`test_settle_window.py`."""

from __future__ import annotations

import json

import pytest

from adapters.models import AdapterVersion
from adapters.sequential import sequential_test
from feedback.services import conversation_log_turns, feedback_submit
from tenants.models import AuditLogEntry
from tests.factories import adapter_version
from tests.training.conftest import run_worker_burst
from tests.webhook_receiver import WebhookReceiver, signature_valid

ALPHA = 0.05
MIN_CONVERSATIONS = 20


@pytest.fixture(autouse=True)
def _no_settle_window(settings):
    settings.ONLINE_DECISION_SETTLE_MINUTES = 0


def _serve(tenant, version, n, prefix, *, answers=1):
    """n conversations served by `version`, each with `answers` assistant messages; returns the
    assistant messages per conversation."""
    out = []
    for i in range(n):
        turns = []
        for j in range(answers):
            turns += [{"role": "user", "content": f"question {j}"},
                      {"role": "assistant", "content": f"answer {j}"}]
        _, rows = conversation_log_turns(tenant=tenant, conversation_id=f"{prefix}-{i}",
                                         messages=turns, served_by_version=version,
                                         source="chat")
        out.append([r for r in rows if r.role == "assistant"])
    return out


def _thumb(ctx, message, kind="thumbs_down"):
    """One feedback row through the API, then the queued decision check run by an RQ worker."""
    response = ctx.client.post(ctx.url("feedback"), {
        "conversation_id": message.conversation.external_id, "message_id": message.external_id,
        "type": kind, "metadata": {"user_id": "end-user-1"}}, format="json")
    assert response.status_code == 201, response.content
    run_worker_burst(queues=("default",))


def _active(tenant) -> str:
    return AdapterVersion.objects.get(tenant=tenant, is_active=True).version


def _first_significant(bad_other: int, n_other: int, n_best: int, *, bad_best_from=0):
    """Smallest k such that k bad of n_best against bad_other of n_other is significant."""
    for k in range(bad_best_from, n_best + 1):
        if sequential_test(k, n_best, bad_other, n_other, alpha=ALPHA,
                           min_per_arm=MIN_CONVERSATIONS)["significant"]:
            return k
    raise AssertionError("never significant")


def _register_webhook(ctx, url, events=None) -> str:
    body = {"url": url, **({"events": events} if events is not None else {})}
    response = ctx.client.post(ctx.url("webhooks"), body, format="json")
    assert response.status_code == 201, response.content
    return response.json()["signing_secret"]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_version_that_does_significantly_worse_is_rolled_back_by_itself(
        make_tenant, rq_connection, settings):
    from training.models import WebhookDelivery

    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    ctx, other = make_tenant("shop"), make_tenant("other-shop")
    receiver, other_receiver = WebhookReceiver(), WebhookReceiver()
    try:
        secret = _register_webhook(ctx, receiver.url, events=["adapter.auto_rolled_back"])
        _register_webhook(other, other_receiver.url)
        response = ctx.client.patch(ctx.url("settings"), {"auto_rollback": True},
                                    format="json")
        assert response.status_code == 200 and response.json()["auto_rollback"] is True

        v1 = adapter_version(ctx.tenant, 1, active=True)
        v2 = adapter_version(ctx.tenant, 2)
        # v1's own served period: 40 conversations, 4 thumbed down.
        for [message] in _serve(ctx.tenant, v1, 40, "v1")[:4]:
            _thumb(ctx, message)
        assert ctx.client.post(ctx.url("lora/v2/activate")).status_code == 200
        served = _serve(ctx.tenant, v2, 40, "v2", answers=2)
        expected = _first_significant(4, 40, 40)  # 19 of 40 against 4 of 40

        rolled_back_at = None
        for k, (first, second) in enumerate(served, start=1):
            for message in (first, second):  # two rows, one bad conversation
                _thumb(ctx, message)
                if rolled_back_at is None and _active(ctx.tenant) == "v1":
                    rolled_back_at = k
            if k == expected + 3:
                break

        assert rolled_back_at == expected
        assert expected > 10  # counted per row, 20 rows would have crossed at conversation 10
        [decision] = AuditLogEntry.objects.filter(tenant=ctx.tenant,
                                                  action="adapter.auto_rolled_back")
        assert decision.actor == "system" and decision.target == "v1"
        numbers = decision.details
        assert (numbers["from_version"], numbers["to_version"]) == ("v2", "v1")
        assert numbers["active"] == {"conversations": 40, "bad": expected,
                                     "bad_rate": expected / 40}
        assert numbers["previous"] == {"conversations": 40, "bad": 4, "bad_rate": 0.1}
        assert numbers["e_value"] >= numbers["threshold"] == 20
        assert numbers["p_value"] <= ALPHA and numbers["reason"] == "auto-rollback"
        activation = AuditLogEntry.objects.filter(tenant=ctx.tenant, action="adapter.activated",
                                                  target="v1").latest("created_at")
        assert activation.actor == "system"
        assert activation.details["rollback"] is True
        assert activation.details["reason"] == "auto-rollback"

        run_worker_burst(queues=("default",))

        [call] = receiver.calls
        assert call["headers"]["X-SynapseX-Event"] == "adapter.auto_rolled_back"
        assert signature_valid(secret, call)
        payload = json.loads(call["body"])
        assert payload["event"] == "adapter.auto_rolled_back" and payload["tenant"] == "shop"
        assert payload["data"]["active"]["bad"] == expected
        assert payload["data"]["e_value"] == pytest.approx(numbers["e_value"])
        assert other_receiver.calls == []  # the other tenant hears nothing
        assert WebhookDelivery.objects.get(tenant=ctx.tenant).status == "delivered"

        body = ctx.client.get(ctx.url("lora/metrics")).json()
        [shown] = body["decisions"]
        assert shown["decision"] == "auto_rolled_back" and shown["version"] == "v1"
        assert shown["numbers"]["active"]["bad"] == expected
        # v1 is active again; the version before it is newer: nothing to roll back to.
        assert body["rollback"]["decision"] == "not_applicable"
        assert other.client.get(other.url("lora/metrics")).json()["decisions"] == []
    finally:
        receiver.close()
        other_receiver.close()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_ab_winner_is_promoted_at_the_first_significant_look(make_tenant, rq_connection,
                                                                  settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    ctx = make_tenant("shop")
    receiver = WebhookReceiver()
    try:
        secret = _register_webhook(ctx, receiver.url)  # no filter: every event
        v1 = adapter_version(ctx.tenant, 1, active=True)
        v2 = adapter_version(ctx.tenant, 2)
        assert ctx.client.patch(ctx.url("settings"), {
            "auto_promote_ab_winner": True,
            "lora_ab_test": {"enabled": True, "versions": {"v1": 0.5, "v2": 0.5}}},
            format="json").status_code == 200
        v1_served = _serve(ctx.tenant, v1, 40, "a")
        v2_served = _serve(ctx.tenant, v2, 40, "b")
        for [message] in v2_served[:2]:
            _thumb(ctx, message)
        expected = _first_significant(2, 40, 40)  # v1's bad count that makes v2 the winner

        promoted_at = None
        for k, [message] in enumerate(v1_served, start=1):
            _thumb(ctx, message)
            if _active(ctx.tenant) == "v2":
                promoted_at = k
                break

        assert promoted_at == expected
        entry = AuditLogEntry.objects.get(tenant=ctx.tenant, action="adapter.ab_test_promoted")
        assert entry.actor == "system" and entry.target == "v2"
        [pair] = entry.details["comparison"]
        assert (pair["bad_a"], pair["bad_b"]) == (2, expected)
        assert pair["e_value"] >= pair["threshold"] == 20

        run_worker_burst(queues=("default",))

        events = [c["headers"]["X-SynapseX-Event"] for c in receiver.calls]
        assert events == ["adapter.ab_promoted"]
        assert signature_valid(secret, receiver.calls[0])
        data = json.loads(receiver.calls[0]["body"])["data"]
        assert data["version"] == "v2" and data["comparison"][0]["bad_b"] == expected
        shown = ctx.client.get(ctx.url("lora/metrics")).json()["decisions"]
        assert [d["decision"] for d in shown] == ["ab_promoted"]
    finally:
        receiver.close()


@pytest.mark.django_db
def test_auto_rollback_is_off_by_default_and_the_check_is_shown(owner):
    from adapters.services.decisions import adapter_online_decisions_check

    v1 = adapter_version(owner.tenant, 1, active=True)
    for [message] in _serve(owner.tenant, v1, 30, "v1")[:1]:
        feedback_submit(tenant=owner.tenant, conversation_id=message.conversation.external_id,
                        message_id=message.external_id, type="report")
    v2 = adapter_version(owner.tenant, 2, active=False)
    owner.client.post(owner.url("lora/v2/activate"))
    for [message] in _serve(owner.tenant, v2, 30, "v2")[:20]:
        feedback_submit(tenant=owner.tenant, conversation_id=message.conversation.external_id,
                        message_id=message.external_id, type="correction",
                        correction="Better.")

    check = owner.client.get(owner.url("lora/metrics")).json()["rollback"]
    assert owner.client.get(owner.url("settings")).json()["auto_rollback"] is False

    assert check["decision"] == "rollback" and check["significant"] is True
    assert (check["active_version"], check["previous_version"]) == ("v2", "v1")
    assert (check["active"]["bad"], check["active"]["conversations"]) == (20, 30)
    assert (check["previous"]["bad"], check["previous"]["conversations"]) == (1, 30)
    assert adapter_online_decisions_check(tenant_id=owner.tenant.pk)["rolled_back_to"] is None
    assert _active(owner.tenant) == "v2"


@pytest.mark.django_db
def test_too_few_conversations_keep_the_version(owner):
    v1 = adapter_version(owner.tenant, 1, active=True)
    _serve(owner.tenant, v1, 30, "v1")
    v2 = adapter_version(owner.tenant, 2)
    owner.client.post(owner.url("lora/v2/activate"))
    for [message] in _serve(owner.tenant, v2, 8, "v2"):
        feedback_submit(tenant=owner.tenant, conversation_id=message.conversation.external_id,
                        message_id=message.external_id, type="thumbs_down")

    check = owner.client.get(owner.url("lora/metrics")).json()["rollback"]

    assert check["e_value"] > 20 and check["enough_data"] is False
    assert check["decision"] == "keep"


@pytest.mark.django_db
@pytest.mark.parametrize("body", [{"auto_rollback": "maybe"}, {"auto_rollback": None}])
def test_a_bad_auto_rollback_setting_gets_the_error_envelope(owner, body):
    response = owner.client.patch(owner.url("settings"), body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error" and "auto_rollback" in error["details"]
    assert owner.client.get(owner.url("settings")).json()["auto_rollback"] is False


@pytest.mark.django_db
def test_webhooks_can_subscribe_to_decisions_only(owner, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    ok = owner.client.post(owner.url("webhooks"), {
        "url": "http://127.0.0.1:9/hook",
        "events": ["adapter.ab_promoted", "adapter.auto_rolled_back"]}, format="json")
    refused = owner.client.post(owner.url("webhooks"), {
        "url": "http://127.0.0.1:9/hook", "events": ["adapter.deleted"]}, format="json")

    assert ok.status_code == 201
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "validation_error"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_check_is_queued_once_per_tenant_until_a_worker_runs_it(make_tenant,
                                                                     rq_connection):
    import django_rq

    queue = django_rq.get_queue("default")
    quiet, busy = make_tenant("quiet"), make_tenant("busy")
    v1 = adapter_version(quiet.tenant, 1, active=True)
    [[m1], [m2]] = _serve(quiet.tenant, v1, 2, "q")
    w1 = adapter_version(busy.tenant, 1, active=True)
    served = _serve(busy.tenant, w1, 3, "b")
    busy.client.patch(busy.url("settings"), {"auto_rollback": True}, format="json")

    for message in (m1, m2):  # neither setting on: nothing queued
        quiet.client.post(quiet.url("feedback"), {
            "conversation_id": message.conversation.external_id,
            "message_id": message.external_id, "type": "thumbs_down"}, format="json")
    assert queue.count == 0
    for [message] in served[:2]:  # two rows, one waiting check
        busy.client.post(busy.url("feedback"), {
            "conversation_id": message.conversation.external_id,
            "message_id": message.external_id, "type": "thumbs_down"}, format="json")
    assert [job.args for job in queue.jobs] == [(busy.tenant.pk,)]

    run_worker_burst(queues=("default",))
    assert queue.count == 0
    busy.client.post(busy.url("feedback"), {
        "conversation_id": served[2][0].conversation.external_id,
        "message_id": served[2][0].external_id, "type": "thumbs_down"}, format="json")
    assert queue.count == 1  # after the check ran, the next row queues the next one
