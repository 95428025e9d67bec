"""Automatic training: a job queued by itself once enough new feedback arrived, within the quota
and the switch, and by the reconcile command."""

from __future__ import annotations

from tests.training.conftest import (
    add_corrections,
    corrections,
    run_worker_burst,
)
from training.models import TrainingJob


def _waiting_checks() -> list[str]:
    import django_rq

    return [job_id for job_id in django_rq.get_queue("default").job_ids
            if job_id.startswith("auto-training-check-")]


def test_automatic_training_queues_a_job_once_enough_new_feedback_arrived(
        owner, django_capture_on_commit_callbacks, rq_connection):
    from training.services.settings import training_settings_update

    training_settings_update(tenant=owner.tenant, changes={
        "auto_training": {"enabled": True, "method": "sft", "min_new_feedback": 50}})
    with django_capture_on_commit_callbacks(execute=True):
        add_corrections(owner, corrections(49))
    # The check left the request: one debounced check waits on the default queue for 49 rows.
    assert not TrainingJob.objects.exists()
    assert len(_waiting_checks()) == 1
    run_worker_burst(("default",))
    assert not TrainingJob.objects.exists()  # not ready (49 corrections < 50)
    with django_capture_on_commit_callbacks(execute=True):
        add_corrections(owner, corrections(1, offset=49), prefix="late")
    assert not TrainingJob.objects.exists()
    run_worker_burst(("default",))
    job = TrainingJob.objects.get()
    assert job.triggered_by == "auto" and job.status == "queued"
    created = job.events.get(type="created")
    assert created.data["triggered_by"] == "auto"
    body = owner.client.get(owner.url(f"train/{job.id}")).json()
    # 50 corrections: the golden set (by id hash, at least one) is held out of training.
    assert body["triggered_by"] == "auto"
    assert body["training_samples"] + body["eval_samples"] == 50 and body["eval_samples"] >= 1
    # One at a time, and only with enough *new* feedback since the last job.
    with django_capture_on_commit_callbacks(execute=True):
        add_corrections(owner, corrections(3, offset=200), prefix="more")
    run_worker_burst(("default",))
    assert TrainingJob.objects.count() == 1


def test_automatic_training_respects_the_quota_and_the_switch(
        make_tenant, django_capture_on_commit_callbacks, rq_connection):
    from training.services.settings import training_settings_update

    off = make_tenant("off")
    with django_capture_on_commit_callbacks(execute=True):
        add_corrections(off, corrections(50))
    free = make_tenant("free-auto", plan="free")
    training_settings_update(tenant=free.tenant, changes={
        "auto_training": {"enabled": True, "min_new_feedback": 1}})
    with django_capture_on_commit_callbacks(execute=True):
        add_corrections(free, corrections(50))
    assert [job_id.split("-")[3] for job_id in _waiting_checks()] == [str(free.tenant.pk)]
    run_worker_burst(("default",))
    assert not TrainingJob.objects.exists()


def test_the_reconcile_command_reports_and_starts_due_automatic_jobs(owner, rq_connection):
    from io import StringIO

    from django.core.management import call_command

    from feedback.models import Feedback
    from training.services.settings import training_settings_update

    add_corrections(owner, corrections(50))
    assert not TrainingJob.objects.exists()  # the switch was off while the feedback arrived
    training_settings_update(tenant=owner.tenant, changes={
        "auto_training": {"enabled": True, "min_new_feedback": 10}})
    assert Feedback.objects.filter(tenant=owner.tenant).count() == 50
    out = StringIO()
    call_command("reconcile_training_jobs", stdout=out)
    job = TrainingJob.objects.get()
    assert job.triggered_by == "auto"
    assert "auto_started=1" in out.getvalue() and job.id in out.getvalue()


def test_the_next_feedback_row_sees_automatic_training_turned_on(
        owner, django_capture_on_commit_callbacks, rq_connection):
    """The feedback hook caches "automatic training on?" per tenant; saving the settings forgets
    it, so the first row after the change queues the check."""
    from training.services.settings import training_settings_update

    with django_capture_on_commit_callbacks(execute=True):
        add_corrections(owner, corrections(1))
    assert _waiting_checks() == []  # off, and the answer is now cached
    training_settings_update(tenant=owner.tenant, changes={
        "auto_training": {"enabled": True, "min_new_feedback": 1}})
    with django_capture_on_commit_callbacks(execute=True):
        add_corrections(owner, corrections(1, offset=1), prefix="on")
    assert len(_waiting_checks()) == 1
