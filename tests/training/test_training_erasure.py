"""Erasure of one end user's data from future training, and the versions it flags."""

from __future__ import annotations

from tests import factories
from tests.training.conftest import (
    LORA_SMALL,
    add_corrections,
    corrections,
)
from training.models import TrainingJob


def test_erasure_removes_a_users_data_from_future_training_and_flags_versions(owner):
    from tenants.models import AuditLogEntry

    add_corrections(owner, corrections(12), prefix="a", user_id="user_789")
    add_corrections(owner, corrections(12, offset=100), prefix="b", user_id="user_111")
    job_id = owner.client.post(owner.url("train/lora"), LORA_SMALL,
                               format="json").json()["job_id"]
    job = TrainingJob.objects.get(pk=job_id)
    used = job.snapshot_manifest
    v1 = factories.adapter_version(owner.tenant, 1, base_model="x", data_manifest=used,
                                   storage_prefix="p")
    v2 = factories.adapter_version(owner.tenant, 2, base_model="x",
                                   data_manifest={"feedback_ids": [], "message_ids": []},
                                   storage_prefix="q")
    response = owner.client.post(owner.url("erasure"), {"user_id": "user_789"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["feedback_deleted"] == 12 and body["messages_deleted"] == 24  # user + reply
    assert body["adapter_versions_needing_retraining"] == ["v1"]
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert v1.needs_retraining and not v2.needs_retraining
    assert AuditLogEntry.objects.filter(action="training.user_data_erased").exists()
    # The next compile no longer sees that user's data.
    dry = owner.client.post(owner.url("train/lora"), {**LORA_SMALL, "dry_run": True},
                            format="json").json()
    assert dry["training_samples"] + dry["eval_samples"] == 12
