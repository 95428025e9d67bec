"""The LoRA versions API: list, detail, activate/rollback, eval guard, delete, export, plans."""

import hashlib
import io
import zipfile

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from adapters.models import AdapterVersion
from tenants.models import AuditLogEntry

pytestmark = pytest.mark.django_db


def _tamper(version: AdapterVersion, name: str = "adapter_model.safetensors") -> None:
    path = f"{version.storage_prefix}/{name}"
    with default_storage.open(path, "rb") as handle:
        data = bytearray(handle.read())
    data[-1] ^= 0xFF
    default_storage.delete(path)
    default_storage.save(path, ContentFile(bytes(data)))


def test_it_lists_versions_with_the_seed_fields_newest_first(owner, make_version):
    make_version(owner.tenant, training_samples=10)
    make_version(owner.tenant, training_samples=20)

    response = owner.client.get(owner.url("lora"))

    assert response.status_code == 200
    body = response.json()
    assert [v["version"] for v in body["versions"]] == ["v2", "v1"]
    v2, v1 = body["versions"]
    assert (v1["is_active"], v2["is_active"]) == (True, False)
    assert (v1["training_samples"], v2["training_samples"]) == (10, 20)
    assert v2["created_at"] and v2["job_id"].startswith("train_")
    assert v2["method"] == "sft" and v2["status"] == "ready" and v2["needs_retraining"] is False
    assert v2["eval_metrics"]["eval_loss"] == 0.5 and len(v2["sha256"]) == 64
    assert v2["size_bytes"] > 0 and v2["ab_weight"] is None
    assert v2["lineage"]["data_manifest"]["sha256"] == "cd" * 32
    assert body["active_version"] == "v1"


def test_it_shows_one_version_and_404s_unknown_ones(owner, make_version):
    make_version(owner.tenant)
    assert owner.client.get(owner.url("lora/v1")).json()["version"] == "v1"
    for bad in ("v9", "latest", "v0"):
        response = owner.client.get(owner.url(f"lora/{bad}"))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "version_not_found"


def test_it_activates_and_rolls_back_with_an_audit_trail(owner, make_version):
    make_version(owner.tenant)
    make_version(owner.tenant)

    activated = owner.client.post(owner.url("lora/v2/activate"))
    assert activated.status_code == 200
    assert activated.json()["version"] == "v2" and activated.json()["is_active"] is True
    rolled_back = owner.client.post(owner.url("lora/v1/activate"))
    assert rolled_back.status_code == 200

    listed = {v["version"]: v["is_active"] for v in owner.client.get(owner.url("lora")).json()[
        "versions"]}
    assert listed == {"v1": True, "v2": False}
    entries = list(AuditLogEntry.objects.filter(tenant=owner.tenant, action="adapter.activated")
                   .order_by("created_at", "id").values_list("target", "details"))
    assert [t for t, _ in entries] == ["v1", "v2", "v1"]
    assert entries[-1][1]["previous"] == "v2"
    assert AuditLogEntry.objects.filter(action="adapter.activated", target="v2",
                                        actor__startswith="key:").exists()


def test_it_refuses_an_eval_regression_without_force(owner, make_version):
    make_version(owner.tenant, eval_loss=0.5)
    make_version(owner.tenant, eval_loss=0.9)

    refused = owner.client.post(owner.url("lora/v2/activate"))
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "eval_regression"
    assert error["details"] == {"version": "v2", "eval_loss": 0.9, "active_version": "v1",
                                "active_eval_loss": 0.5}
    assert AdapterVersion.objects.get(tenant=owner.tenant, is_active=True).version == "v1"

    forced = owner.client.post(owner.url("lora/v2/activate"), {"force": True}, format="json")
    assert forced.status_code == 200 and forced.json()["is_active"] is True
    entry = AuditLogEntry.objects.filter(action="adapter.activated", target="v2").get()
    assert entry.details["forced"] is True
    assert entry.details["eval_regression"] == {"eval_loss": 0.9, "previous": 0.5}


def test_a_rollback_needs_no_force_even_when_the_older_eval_loss_is_worse(owner, make_version):
    make_version(owner.tenant, eval_loss=0.9)
    make_version(owner.tenant, eval_loss=0.5)
    assert owner.client.post(owner.url("lora/v2/activate")).status_code == 200

    rollback = owner.client.post(owner.url("lora/v1/activate"))

    assert rollback.status_code == 200 and rollback.json()["is_active"] is True
    entry = AuditLogEntry.objects.filter(action="adapter.activated", target="v1",
                                         actor__startswith="key:").get()
    assert entry.details["rollback"] is True and entry.details["previous"] == "v2"


def test_it_deletes_only_inactive_versions_outside_an_ab_test(owner, make_version):
    make_version(owner.tenant)
    v2 = make_version(owner.tenant)
    make_version(owner.tenant)

    active = owner.client.delete(owner.url("lora/v1"))
    assert active.status_code == 409 and active.json()["error"]["code"] == "version_active"

    owner.client.patch(owner.url("settings"), {"lora_ab_test": {
        "enabled": True, "versions": {"v1": 0.5, "v2": 0.5}}}, format="json")
    in_test = owner.client.delete(owner.url("lora/v2"))
    assert in_test.status_code == 409 and in_test.json()["error"]["code"] == "version_in_ab_test"

    deleted = owner.client.delete(owner.url("lora/v3"))
    assert deleted.status_code == 200 and deleted.json()["status"] == "archived"
    assert not default_storage.exists(f"tenants/{owner.tenant.slug}/adapters/v3/"
                                      "adapter_model.safetensors")
    assert default_storage.exists(f"{v2.storage_prefix}/adapter_model.safetensors")
    again = owner.client.post(owner.url("lora/v3/activate"))
    assert again.status_code == 409 and again.json()["error"]["code"] == "version_archived"
    gone = owner.client.get(owner.url("lora/v3/download"))
    assert gone.status_code == 410


def test_it_exports_a_verified_zip_and_single_files(owner, make_version):
    version = make_version(owner.tenant)

    response = owner.client.get(owner.url("lora/v1/download"))

    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response["X-Adapter-SHA256"] == version.sha256
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = sorted(archive.namelist())
    assert names == ["v1/adapter_config.json", "v1/adapter_model.safetensors",
                     "v1/manifest.json"]
    weights = archive.read("v1/adapter_model.safetensors")
    assert hashlib.sha256(weights).hexdigest() == version.sha256

    single = owner.client.get(owner.url("lora/v1/download") + "?file=adapter_model.safetensors")
    assert single.status_code == 200 and single.content == weights
    bad = owner.client.get(owner.url("lora/v1/download") + "?file=../../secret")
    assert bad.status_code == 400 and "file" in bad.json()["error"]["details"]


def test_it_refuses_to_export_a_tampered_adapter(owner, make_version):
    version = make_version(owner.tenant)
    _tamper(version)

    response = owner.client.get(owner.url("lora/v1/download"))

    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "adapter_integrity_error"
    assert "sha256 mismatch" in error["details"]["files"]["adapter_model.safetensors"]


def test_pro_plan_keeps_the_active_version_and_archives_it_after_the_next_activation(
        make_tenant, make_version):
    pro = make_tenant("pro-tenant", plan="pro")
    make_version(pro.tenant)
    make_version(pro.tenant)

    # Limit 1, v1 active, v2 just trained: nothing may go silently, so both stay and it is logged.
    stored = AdapterVersion.objects.filter(tenant=pro.tenant, status="ready")
    assert stored.count() == 2
    assert AuditLogEntry.objects.filter(tenant=pro.tenant,
                                        action="adapter.plan_limit_exceeded").exists()

    assert pro.client.post(pro.url("lora/v2/activate")).status_code == 200
    statuses = dict(AdapterVersion.objects.filter(tenant=pro.tenant)
                    .values_list("number", "status"))
    assert statuses == {1: "archived", 2: "ready"}
    assert not default_storage.exists(f"tenants/{pro.tenant.slug}/adapters/v1/"
                                      "adapter_model.safetensors")


def test_hybrid_plan_archives_the_oldest_removable_version(make_tenant, make_version):
    hybrid = make_tenant("hybrid-tenant", plan="hybrid")
    for _ in range(5):
        make_version(hybrid.tenant)
    hybrid.client.patch(hybrid.url("settings"), {"lora_ab_test": {
        "enabled": True, "versions": {"v2": 0.5, "v3": 0.5}}}, format="json")

    make_version(hybrid.tenant)  # v6: one too many

    statuses = dict(AdapterVersion.objects.filter(tenant=hybrid.tenant)
                    .values_list("number", "status"))
    # v1 is active, v2 and v3 are A/B arms: v4 is the oldest that may go.
    assert statuses == {1: "ready", 2: "ready", 3: "ready", 4: "archived", 5: "ready",
                        6: "ready"}
    entry = AuditLogEntry.objects.get(tenant=hybrid.tenant, action="adapter.archived")
    assert entry.target == "v4" and entry.details["reason"] == "plan_limit"


def test_enterprise_keeps_every_version(owner, make_version):
    for _ in range(7):
        make_version(owner.tenant)
    assert AdapterVersion.objects.filter(tenant=owner.tenant, status="ready").count() == 7
