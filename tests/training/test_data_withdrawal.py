"""Data the tenant takes back: a dataset deleted or its training consent revoked, and an end
user's erasure, reach past jobs' data snapshots (rewritten in storage and in the local bundle
copy), flag the versions trained on the rows, and keep the rows out of every later job."""

from __future__ import annotations

import json

import pytest
from django.core.files.storage import default_storage

from tests.training.conftest import LORA_SMALL, add_corrections, corrections
from training.models import TrainingJob

pytestmark = pytest.mark.django_db


def register(ctx, name: str, type: str = "conversations", **data_use) -> int:
    response = ctx.client.post(ctx.url("datasets/register"),
                               {"name": name, "type": type, "data_use": data_use}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def upload(ctx, dataset_id: int, records: list[dict]) -> dict:
    response = ctx.client.post(ctx.url(f"datasets/{dataset_id}/upload/conversations"),
                               {"conversations": records}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def secret_records(n: int, tag: str = "Zorblax", user_id: str = "") -> list[dict]:
    records = []
    for i in range(n):
        record = {"messages": [{"role": "user", "content": f"What is {tag} {i}?"},
                               {"role": "assistant", "content": f"{tag} {i} is a secret."}]}
        if user_id:
            record["user_id"] = user_id
        records.append(record)
    return records


def start_job(ctx) -> TrainingJob:
    response = ctx.client.post(ctx.url("train/lora"), LORA_SMALL, format="json")
    assert response.status_code == 201, response.content
    return TrainingJob.objects.get(pk=response.json()["job_id"])


def snapshot_text(job: TrainingJob) -> str:
    text = ""
    for name in ("train.jsonl", "eval.jsonl"):
        with default_storage.open(f"{job.snapshot_prefix}/{name}", "rb") as handle:
            text += handle.read().decode()
    return text


def snapshot_verifies(job: TrainingJob, tmp_path) -> None:
    """A resumed job downloads the rewritten files against the row's manifest (sha256)."""
    from training.snapshots import snapshot_download

    job.refresh_from_db()
    snapshot_download(prefix=job.snapshot_prefix, manifest=job.snapshot_manifest,
                      dest=tmp_path / f"check-{job.id}")
    stored = json.loads(default_storage.open(f"{job.snapshot_prefix}/manifest.json").read())
    assert stored["files"] == job.snapshot_manifest["files"]


def version_from(tenant, number: int, manifest: dict):
    from adapters.models import AdapterVersion

    return AdapterVersion.objects.create(tenant=tenant, number=number, method="sft",
                                         base_model="x", data_manifest=manifest,
                                         storage_prefix=f"p{number}")


def dry_run_total(ctx) -> int:
    body = ctx.client.post(ctx.url("train/lora"), {**LORA_SMALL, "dry_run": True},
                           format="json").json()
    return body["training_samples"] + body["eval_samples"]


def test_deleting_a_dataset_rewrites_past_snapshots_and_flags_the_versions(owner, outsider,
                                                                            read_only, tmp_path):
    from feedback.models import Dataset, DatasetRecord

    add_corrections(owner, corrections(6))
    dataset_id = register(owner, "secrets")
    upload(owner, dataset_id, secret_records(8))
    job = start_job(owner)
    assert snapshot_text(job).count("Zorblax") == 16  # 8 records, question and answer
    v1 = version_from(owner.tenant, 1, job.snapshot_manifest)
    v2 = version_from(owner.tenant, 2, {"feedback_ids": job.snapshot_manifest["feedback_ids"],
                                        "message_ids": [], "dataset_record_ids": []})

    # Another tenant's key: 404, and nothing changed; a read-only key: 403.
    crossed = outsider.client.delete(f"/v1/tenants/{owner.tenant.slug}/datasets/{dataset_id}")
    assert crossed.status_code == 404
    assert outsider.client.delete(outsider.url(f"datasets/{dataset_id}")).status_code == 404
    assert read_only.client.delete(read_only.url(f"datasets/{dataset_id}")).status_code == 403
    assert DatasetRecord.objects.filter(dataset_id=dataset_id).count() == 8

    response = owner.client.delete(owner.url(f"datasets/{dataset_id}"))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["records_deleted"] == 8
    assert body["snapshots_rewritten"] == [{"job_id": job.id, "examples_removed": 8}]
    assert body["adapter_versions_needing_retraining"] == ["v1"]
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert v1.needs_retraining and not v2.needs_retraining
    assert not Dataset.objects.filter(pk=dataset_id).exists()
    assert not DatasetRecord.objects.filter(dataset_id=dataset_id).exists()
    assert owner.client.get(owner.url(f"datasets/{dataset_id}")).status_code == 404

    text = snapshot_text(job)
    assert "Zorblax" not in text and "Box 3 has code K3." in text
    snapshot_verifies(job, tmp_path)
    job.refresh_from_db()
    counts = job.snapshot_manifest["counts"]
    assert counts["train"] + counts["eval"] == 6
    assert job.snapshot_manifest["scrubbed"][0]["reason"] == "dataset_deleted"
    assert dry_run_total(owner) == 6


def test_revoking_training_consent_stops_training_and_reaches_past_snapshots(owner, tmp_path):
    add_corrections(owner, corrections(6))
    dataset_id = register(owner, "consented")
    upload(owner, dataset_id, secret_records(5))
    assert dry_run_total(owner) == 11
    job = start_job(owner)
    v1 = version_from(owner.tenant, 1, job.snapshot_manifest)

    response = owner.client.patch(owner.url(f"datasets/{dataset_id}"),
                                  {"data_use": {"allow_private_training": False}},
                                  format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["data_use"] == {"allow_rag": False, "allow_private_training": False,
                                "evaluation_only": False}
    assert body["consent_revoked"] is True
    assert body["adapter_versions_needing_retraining"] == ["v1"]
    assert body["snapshots_rewritten"] == [{"job_id": job.id, "examples_removed": 5}]
    assert body["record_count"] == 5  # the records are kept, only their use changed
    v1.refresh_from_db()
    assert v1.needs_retraining
    assert "Zorblax" not in snapshot_text(job)
    snapshot_verifies(job, tmp_path)
    assert dry_run_total(owner) == 6  # the compiler skips the dataset

    # Granting it again makes the records trainable from the next job on.
    again = owner.client.patch(owner.url(f"datasets/{dataset_id}"),
                               {"data_use": {"allow_private_training": True}}, format="json")
    assert again.status_code == 200 and again.json()["consent_revoked"] is False
    assert dry_run_total(owner) == 11


def test_erasure_reaches_snapshots_dataset_records_and_conversation_logs(owner, tmp_path):
    from feedback.models import Conversation, DatasetRecord
    from training.services.bundle import training_job_bundle_write

    add_corrections(owner, corrections(6), prefix="a", user_id="user_789")
    add_corrections(owner, corrections(6, offset=100), prefix="b", user_id="user_111")
    dataset_id = register(owner, "mixed")
    upload(owner, dataset_id, secret_records(3, tag="Quux", user_id="user_789")
           + secret_records(2, tag="Frob", user_id="user_111"))
    listed = owner.client.get(owner.url(f"datasets/{dataset_id}/records")).json()["results"]
    assert sorted(r["user_id"] for r in listed) == ["user_111"] * 2 + ["user_789"] * 3
    job = start_job(owner)
    bundle = training_job_bundle_write(job=job)  # the local worker's copy of the snapshot
    assert "Box 3 has code K3." in snapshot_text(job) and "Quux" in snapshot_text(job)
    v1 = version_from(owner.tenant, 1, job.snapshot_manifest)

    response = owner.client.post(owner.url("erasure"), {"user_id": "user_789"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["feedback_deleted"] == 6 and body["messages_deleted"] == 12
    assert body["conversations_deleted"] == 6
    assert body["dataset_records_deleted"] == 3
    assert body["snapshots_rewritten"] == [{"job_id": job.id, "examples_removed": 9}]
    assert body["adapter_versions_needing_retraining"] == ["v1"]
    v1.refresh_from_db()
    assert v1.needs_retraining

    text = snapshot_text(job)
    for gone in ("Box 3 has code K3.", "What is the code of box 0?", "Quux"):
        assert gone not in text
    assert "Box 100 has code K100." in text and "Frob" in text
    bundle_text = (bundle / "train.jsonl").read_text() + (bundle / "eval.jsonl").read_text()
    assert "Quux" not in bundle_text and "K3." not in bundle_text and "Frob" in bundle_text
    snapshot_verifies(job, tmp_path)
    assert not Conversation.objects.filter(tenant=owner.tenant,
                                           external_id__startswith="a").exists()
    kept = Conversation.objects.filter(tenant=owner.tenant, external_id__startswith="b")
    assert kept.count() == 6
    assert DatasetRecord.objects.filter(dataset_id=dataset_id).count() == 2
    dataset = owner.client.get(owner.url(f"datasets/{dataset_id}")).json()
    assert dataset["record_count"] == 2
    stats = owner.client.get(owner.url("feedback/stats")).json()
    assert stats["corrections"] == 6  # the counters no longer count the erased rows
    assert dry_run_total(owner) == 8


def test_erasure_rewrites_a_snapshot_written_without_a_sources_map(owner):
    """Snapshots written before `sources.json` existed: matched by example id and text."""
    add_corrections(owner, corrections(6), prefix="a", user_id="user_789")
    add_corrections(owner, corrections(6, offset=100), prefix="b", user_id="user_111")
    job = start_job(owner)
    default_storage.delete(f"{job.snapshot_prefix}/sources.json")

    body = owner.client.post(owner.url("erasure"), {"user_id": "user_789"},
                             format="json").json()
    assert body["snapshots_rewritten"] == [{"job_id": job.id, "examples_removed": 6}]
    text = snapshot_text(job)
    assert "K3." not in text and "Box 100 has code K100." in text


@pytest.mark.parametrize(("status", "flagged"), [("running", True), ("queued", False)])
def test_a_version_made_after_its_snapshot_was_rewritten(owner, status, flagged):
    """A job that was already reading its snapshot learned from the rows: its version is
    created flagged. A job still queued reads the rewritten files: its version is not."""
    add_corrections(owner, corrections(6))
    dataset_id = register(owner, "late")
    upload(owner, dataset_id, secret_records(3))
    job = start_job(owner)
    TrainingJob.objects.filter(pk=job.pk).update(status=status)
    assert owner.client.delete(owner.url(f"datasets/{dataset_id}")).status_code == 200
    job.refresh_from_db()
    assert job.snapshot_manifest["scrubbed"][0]["job_status"] == status
    version = version_from(owner.tenant, 1, job.snapshot_manifest)
    version.refresh_from_db()
    assert version.needs_retraining is flagged
