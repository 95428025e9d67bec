"""The settle window of the decisions on live traffic (issue 15, section 5).

The sequential test's guarantee holds for outcomes that are final when counted. A conversation
counts once ONLINE_DECISION_SETTLE_MINUTES (default 30) have passed since the version's first
answer in it, with what was known then: answers and feedback rows created inside the window, and
each user's latest vote *as of* its end. These tests place answers and feedback at chosen times
(rows created through the services, then their `created_at` set) and look at chosen moments
(`now=`), on the real database; the scheduled re-check runs through RQ's scheduler on real Redis.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from adapters.metrics import conversation_outcomes, decisions_next_settle_at
from adapters.models import AdapterVersion
from feedback.models import Feedback, Message
from feedback.services import conversation_log_turns, feedback_submit
from tenants.models import AuditLogEntry
from tests.factories import adapter_version
from tests.training.conftest import run_worker_burst

WINDOW = timedelta(minutes=30)  # the default


def _answer(tenant, version, conversation_id, at, *, text="answer"):
    """One assistant answer served by `version`, created at `at`."""
    _, rows = conversation_log_turns(
        tenant=tenant, conversation_id=conversation_id,
        messages=[{"role": "user", "content": f"question {text}"},
                  {"role": "assistant", "content": text}],
        served_by_version=version, source="chat")
    [answer] = [r for r in rows if r.role == "assistant"]
    Message.objects.filter(pk__in=[r.pk for r in rows]).update(created_at=at)
    return answer


def _feedback(tenant, message, kind, at, *, user="u1", **extra):
    result = feedback_submit(tenant=tenant, conversation_id=message.conversation.external_id,
                             message_id=message.external_id, type=kind,
                             metadata={"user_id": user} if user else {}, **extra)
    Feedback.objects.filter(pk=result.feedback.pk).update(created_at=at)


@pytest.mark.django_db
def test_an_outcome_counts_once_settled_and_never_changes_after(owner, settings):
    """One version per case, one conversation each, all started at t0 (c7 at t0 + 20 min)."""
    assert settings.ONLINE_DECISION_SETTLE_MINUTES == 30  # the default is what is tested
    tenant = owner.tenant
    t0 = timezone.now() - timedelta(hours=10)
    minute = timedelta(minutes=1)
    versions = {name: adapter_version(tenant, n) for n, name in enumerate(
        ["down_in_window", "down_late", "down_then_up", "down_then_up_late",
         "answer_late", "report_anonymous", "starts_later", "correction"], start=1)}

    def serve(name, at=t0):
        return _answer(tenant, versions[name], f"c-{name}", at)

    _feedback(tenant, serve("down_in_window"), "thumbs_down", t0 + 10 * minute)
    _feedback(tenant, serve("down_late"), "thumbs_down", t0 + 40 * minute)
    message = serve("down_then_up")
    _feedback(tenant, message, "thumbs_down", t0 + 5 * minute)
    _feedback(tenant, message, "thumbs_up", t0 + 10 * minute)
    message = serve("down_then_up_late")
    _feedback(tenant, message, "thumbs_down", t0 + 5 * minute)
    _feedback(tenant, message, "thumbs_up", t0 + 50 * minute)
    serve("answer_late")
    late = _answer(tenant, versions["answer_late"], "c-answer_late", t0 + 45 * minute,
                   text="second")
    _feedback(tenant, late, "thumbs_down", t0 + 46 * minute)
    _feedback(tenant, serve("report_anonymous"), "report", t0 + 10 * minute, user="")
    _feedback(tenant, serve("starts_later", t0 + 20 * minute), "thumbs_down", t0 + 25 * minute)
    _feedback(tenant, serve("correction"), "correction", t0 + 29 * minute,
              correction="The right answer.")

    def look(at, window_minutes=None):
        if window_minutes is not None:
            settings.ONLINE_DECISION_SETTLE_MINUTES = window_minutes
        found = conversation_outcomes(tenant, list(versions.values()), now=at)
        return {name: found[v.pk] for name, v in versions.items()}

    before = look(t0 + 29 * minute)
    assert all(o["conversations"] == 0 and o["bad"] == 0 for o in before.values())
    assert all(o["pending"] == 1 for o in before.values())
    assert before["down_in_window"]["next_settled_at"] == t0 + WINDOW
    assert before["starts_later"]["next_settled_at"] == t0 + 20 * minute + WINDOW

    settled = {name: (o["conversations"], o["bad"], o["pending"])
               for name, o in look(t0 + 31 * minute).items()}
    assert settled == {
        "down_in_window": (1, 1, 0), "down_late": (1, 0, 0), "down_then_up": (1, 0, 0),
        "down_then_up_late": (1, 1, 0), "answer_late": (1, 0, 0),
        "report_anonymous": (1, 1, 0), "starts_later": (0, 0, 1), "correction": (1, 1, 0)}
    # Final once counted: later looks see the same outcomes, whatever arrived since.
    for at in (t0 + 51 * minute, t0 + 5 * timedelta(hours=1), timezone.now()):
        later = look(at)
        assert {name: (o["conversations"], o["bad"]) for name, o in later.items()} == {
            name: (1, 1 if name == "starts_later" else bad) for name, (_, bad, _) in
            settled.items()}
        assert all(o["pending"] == 0 for o in later.values())

    # Window off: the feedback as it stands now, late rows included.
    now = {name: o["bad"] for name, o in look(timezone.now(), window_minutes=0).items()}
    assert now == {"down_in_window": 1, "down_late": 1, "down_then_up": 0,
                   "down_then_up_late": 0, "answer_late": 1, "report_anonymous": 1,
                   "starts_later": 1, "correction": 1}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_check_with_unsettled_conversations_schedules_the_next_one(make_tenant,
                                                                      rq_connection):
    """Auto-rollback on: v2 does far worse than v1, but its conversations started 20 minutes
    ago. The check after each feedback row keeps v2 and schedules one re-check for when the
    first of them settles; when that time comes (the rows moved 15 minutes back, the scheduled
    job made due), the re-check, run by RQ's scheduler and a worker, rolls back."""
    import django_rq

    ctx = make_tenant("shop")
    tenant = ctx.tenant
    queue = django_rq.get_queue("default")
    registry = queue.scheduled_job_registry
    assert ctx.client.patch(ctx.url("settings"), {"auto_rollback": True},
                            format="json").status_code == 200
    now = timezone.now()
    v1 = adapter_version(tenant, 1)
    v1_answers = [_answer(tenant, v1, f"v1-{i}", now - timedelta(days=2)) for i in range(40)]
    for message in v1_answers[:4]:
        _feedback(tenant, message, "thumbs_down", now - timedelta(days=2) + timedelta(minutes=5))
    v2 = adapter_version(tenant, 2, active=True)
    AdapterVersion.objects.filter(pk=v1.pk).update(activated_at=now - timedelta(days=3))
    AdapterVersion.objects.filter(pk=v2.pk).update(activated_at=now - timedelta(days=1))
    started = now - timedelta(minutes=20)
    v2_answers = [_answer(tenant, v2, f"v2-{i}", started) for i in range(40)]

    for message in v2_answers[:30]:  # through the API, as users send it; a check after each
        response = ctx.client.post(ctx.url("feedback"), {
            "conversation_id": message.conversation.external_id,
            "message_id": message.external_id, "type": "thumbs_down",
            "metadata": {"user_id": "end-user"}}, format="json")
        assert response.status_code == 201
        run_worker_burst(queues=("default",))

    assert AdapterVersion.objects.get(tenant=tenant, is_active=True).number == 2
    check = ctx.client.get(ctx.url("lora/metrics")).json()["rollback"]
    assert check["decision"] == "keep" and check["settle_minutes"] == 30
    assert (check["active"]["conversations"], check["active"]["pending"]) == (0, 40)
    assert (check["previous"]["conversations"], check["previous"]["bad"]) == (40, 4)
    [job_id] = registry.get_job_ids()  # one re-check, however many rows came
    assert job_id.startswith(f"decision-settle-{tenant.pk}-")
    expected = decisions_next_settle_at(tenant=tenant)
    assert expected == Message.objects.filter(conversation__external_id="v2-0",
                                              role="assistant").get().created_at + WINDOW
    assert abs((registry.get_scheduled_time(job_id) - expected).total_seconds()) < 1

    # 15 minutes later: the answers settled (35 minutes old), the feedback was inside.
    shift = timedelta(minutes=15)
    for model, rows in ((Message, Message.objects.filter(tenant=tenant,
                                                         served_by_version=v2)),
                        (Feedback, Feedback.objects.filter(tenant=tenant,
                                                           message__served_by_version=v2))):
        for pk, created in rows.values_list("pk", "created_at"):
            model.objects.filter(pk=pk).update(created_at=created - shift)
    registry.schedule(queue.fetch_job(job_id), timezone.now() - timedelta(seconds=1))
    run_worker_burst(queues=("default",))

    assert AdapterVersion.objects.get(tenant=tenant, is_active=True).number == 1
    [decision] = AuditLogEntry.objects.filter(tenant=tenant, action="adapter.auto_rolled_back")
    assert decision.details["active"] == {"conversations": 40, "bad": 30, "bad_rate": 0.75}
    assert decision.details["previous"] == {"conversations": 40, "bad": 4, "bad_rate": 0.1}
    assert registry.get_job_ids() == []  # nothing left inside a window: no further re-check
