"""A finished training job becomes the tenant's next adapter version (the job-succeeded seam)."""

import json
import shutil

import pytest
from django.core.files.storage import default_storage

from adapters.models import AdapterVersion
from adapters.services import AdapterIntegrityError, adapter_version_create_from_job
from tenants.models import AuditLogEntry
from tests.factories import sha256_file
from training.signals import training_job_succeeded

pytestmark = pytest.mark.django_db


def _copy(src, tmp_path, name="result"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def test_it_stores_the_first_version_and_activates_it(owner, make_job, untrained_result_dirs,
                                                      tmp_path):
    result = _copy(untrained_result_dirs[0], tmp_path)
    job = make_job(owner.tenant, training_samples=37)

    responses = training_job_succeeded.send(sender=type(job), job=job, result_dir=result)

    [version] = [v for _, v in responses if isinstance(v, AdapterVersion)]
    assert version.version == "v1" and version.is_active and version.activated_at
    assert version.job_id == job.pk and version.training_samples == 37
    assert version.method == "sft" and version.base_model == job.base_model
    assert version.eval_metrics["eval_loss"] == 0.5
    assert version.data_manifest["sha256"] == "cd" * 32
    weights = result / "adapter" / "adapter_model.safetensors"
    assert version.sha256 == sha256_file(weights)
    prefix = f"tenants/{owner.tenant.slug}/adapters/v1"
    assert version.storage_prefix == prefix
    for name in ("adapter_model.safetensors", "adapter_config.json", "manifest.json"):
        assert default_storage.exists(f"{prefix}/{name}")
    with default_storage.open(f"{prefix}/adapter_model.safetensors", "rb") as handle:
        assert handle.read() == weights.read_bytes()
    assert version.size_bytes == weights.stat().st_size + (
        result / "adapter" / "adapter_config.json").stat().st_size
    assert AuditLogEntry.objects.filter(tenant=owner.tenant, action="adapter.activated",
                                        target="v1").exists()


def test_it_numbers_versions_per_tenant_and_leaves_later_ones_inactive(
        owner, outsider, make_version):
    v1 = make_version(owner.tenant)
    v2 = make_version(owner.tenant)
    other = make_version(outsider.tenant)

    assert (v1.version, v2.version, other.version) == ("v1", "v2", "v1")
    v1.refresh_from_db()
    assert v1.is_active and not v2.is_active and other.is_active


def test_it_is_idempotent_per_job(owner, make_job, untrained_result_dirs, tmp_path):
    job = make_job(owner.tenant)
    first = adapter_version_create_from_job(job=job, result_dir=_copy(untrained_result_dirs[0],
                                                                       tmp_path))
    again = adapter_version_create_from_job(job=job, result_dir=_copy(untrained_result_dirs[0],
                                                                       tmp_path, "again"))
    assert first.pk == again.pk
    assert AdapterVersion.objects.filter(tenant=owner.tenant).count() == 1


def test_it_refuses_a_file_that_does_not_match_the_manifest(owner, make_job,
                                                             untrained_result_dirs, tmp_path):
    result = _copy(untrained_result_dirs[0], tmp_path)
    weights = result / "adapter" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))

    with pytest.raises(AdapterIntegrityError) as caught:
        adapter_version_create_from_job(job=make_job(owner.tenant), result_dir=result)

    assert "sha256 mismatch" in caught.value.details["files"]["adapter_model.safetensors"]
    assert not AdapterVersion.objects.exists()
    assert not default_storage.exists(f"tenants/{owner.tenant.slug}/adapters/v1/manifest.json")


def test_it_refuses_pickle_files(owner, make_job, untrained_result_dirs, tmp_path):
    result = _copy(untrained_result_dirs[0], tmp_path)
    (result / "adapter" / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")

    with pytest.raises(AdapterIntegrityError) as caught:
        adapter_version_create_from_job(job=make_job(owner.tenant), result_dir=result)

    assert "pickle" in caught.value.details["files"]["adapter_model.bin"]
    assert not AdapterVersion.objects.exists()


def test_it_refuses_a_manifest_without_the_adapter_files(owner, make_job, untrained_result_dirs,
                                                         tmp_path):
    result = _copy(untrained_result_dirs[0], tmp_path)
    manifest = json.loads((result / "manifest.json").read_text())
    del manifest["adapter"]["files"]["adapter_config.json"]
    (result / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(AdapterIntegrityError) as caught:
        adapter_version_create_from_job(job=make_job(owner.tenant), result_dir=result)

    assert "not listed" in caught.value.details["files"]["adapter_config.json"]


def test_it_records_the_parent_version_for_continued_training(owner, make_job, make_version,
                                                              untrained_result_dirs, tmp_path):
    v1 = make_version(owner.tenant)
    job = make_job(owner.tenant, parent=v1)
    v2 = adapter_version_create_from_job(job=job, result_dir=_copy(untrained_result_dirs[1],
                                                                    tmp_path))
    assert v2.parent_id == v1.pk


def test_a_continued_jobs_bundle_carries_the_parents_scope(owner, make_version, scoped_result_dir,
                                                           untrained_result_dirs, tmp_path):
    """A job that continues a version gets that version's adapter files and, when the version
    has a scope (train.scope_gate), the scope beside them, which the trainer merges into the new
    version's (tests/trainer/test_trainer_scope.py). A version without a scope sends none."""
    from training.services.bundle import _download_adapter
    from training.trainer.scope import PARENT_SCOPE_FILE

    scoped = make_version(owner.tenant, result_dir=scoped_result_dir)
    folder = _download_adapter(scoped, tmp_path / "scoped")
    assert (folder / "adapter_model.safetensors").is_file()
    assert json.loads((folder / PARENT_SCOPE_FILE).read_text()) == scoped.manifest["scope"]

    plain = make_version(owner.tenant, result_dir=untrained_result_dirs[0])
    folder = _download_adapter(plain, tmp_path / "plain")
    assert (folder / "adapter_model.safetensors").is_file()
    assert not (folder / PARENT_SCOPE_FILE).exists()
