"""Artifact safety: adapters only as safetensors (pickle-capable files refused when storing and
never present when loading), sha256 verified on load and on download, and storage paths that
tenant input cannot steer outside the tenant's prefix."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.core.management.base import CommandError

from tests import factories
from tests.factories import safetensors_bytes
from tests.security.helpers import assert_envelope, seed_tenant

pytestmark = pytest.mark.django_db

PICKLE = pickle.dumps({"payload": "os.system"})  # a pickle stream is what a .bin/.pt holds


def _result_dir(root: Path, extra: dict[str, bytes] | None = None,
                weights: bytes | None = None) -> Path:
    """A trainer result folder: adapter/ files + manifest.json listing their sha256."""
    adapter = root / "adapter"
    adapter.mkdir(parents=True)
    files = {"adapter_model.safetensors": weights if weights is not None else safetensors_bytes(),
             "adapter_config.json": json.dumps({"r": 4, "peft_type": "LORA"}).encode(),
             **(extra or {})}
    for name, data in files.items():
        (adapter / name).write_bytes(data)
    manifest = {"format": "synapsex-adapter-manifest/1", "adapter": {"files": {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        for name, data in files.items()}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _job(tenant, job_id: str):
    return factories.job(tenant, id=job_id, status="running")


def _stored_names(media: Path) -> list[str]:
    return sorted(str(p.relative_to(media)) for p in media.rglob("*") if p.is_file())


@pytest.mark.parametrize("name", ["adapter_model.bin", "pytorch_model.pt", "weights.pth",
                                  "state.pkl", "optimizer.ckpt", "extra.pickle"])
def test_it_refuses_to_store_an_adapter_with_a_pickle_file(owner, tmp_path, name,
                                                           isolated_storage):
    from adapters.models import AdapterVersion
    from adapters.services import AdapterIntegrityError, adapter_version_create_from_job

    result = _result_dir(tmp_path / "result", extra={name: PICKLE})
    with pytest.raises(AdapterIntegrityError) as caught:
        adapter_version_create_from_job(job=_job(owner.tenant, "train_pickle0001"),
                                        result_dir=result)
    assert name in caught.value.details["files"]
    assert not AdapterVersion.objects.exists()
    assert _stored_names(isolated_storage) == []


def test_it_refuses_a_pickle_disguised_as_safetensors(owner, tmp_path, isolated_storage):
    from adapters.models import AdapterVersion
    from adapters.services import AdapterIntegrityError, adapter_version_create_from_job

    result = _result_dir(tmp_path / "result", weights=PICKLE)  # right sha256, wrong format
    with pytest.raises(AdapterIntegrityError, match="not a safetensors file"):
        adapter_version_create_from_job(job=_job(owner.tenant, "train_disguise01"),
                                        result_dir=result)
    assert not AdapterVersion.objects.exists()
    assert _stored_names(isolated_storage) == []


def test_the_trainer_side_check_refuses_pickles_in_an_adapter_dir(tmp_path):
    from training.trainer.manifest import AdapterVerificationError, verify_adapter_dir

    result = _result_dir(tmp_path / "result", extra={"adapter_model.bin": PICKLE})
    with pytest.raises(AdapterVerificationError):
        verify_adapter_dir(result / "adapter", result / "manifest.json")


def test_it_stores_only_under_the_tenants_prefix_with_verified_hashes(owner, tmp_path,
                                                                       isolated_storage):
    from adapters.services import adapter_version_create_from_job

    result = _result_dir(tmp_path / "result", extra={"README.md": b"# not stored"})
    version = adapter_version_create_from_job(job=_job(owner.tenant, "train_store00001"),
                                              result_dir=result)
    stored = _stored_names(isolated_storage)
    assert stored == [f"tenants/{owner.tenant.slug}/adapters/v1/{n}" for n in
                      ("adapter_config.json", "adapter_model.safetensors", "manifest.json")]
    for name, digest in version.files.items():
        data = (isolated_storage / version.storage_prefix / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest


def _tamper(version, name: str = "adapter_model.safetensors", data: bytes | None = None):
    path = f"{version.storage_prefix}/{name}"
    default_storage.delete(path)
    default_storage.save(path, ContentFile(data if data is not None else safetensors_bytes(2)))


def test_download_verifies_sha256_and_refuses_tampered_files(make_tenant):
    from adapters.models import AdapterVersion

    seeded = seed_tenant(make_tenant, "acme", "ACMEART", job_hex="dddd4444dddd",
                         version_number=2, username="art-user")
    client, url = seeded.ctx.client, seeded.ctx.url(f"lora/{seeded.version}/download")
    response = client.get(url)
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    version = AdapterVersion.objects.get(tenant=seeded.ctx.tenant, number=2)
    for name, digest in version.files.items():
        assert hashlib.sha256(archive.read(f"v2/{name}")).hexdigest() == digest
    assert response["X-Adapter-SHA256"] == version.files["adapter_model.safetensors"]

    evil = safetensors_bytes(3)
    _tamper(version, data=evil)
    for query in ("", "?file=adapter_model.safetensors"):
        response = client.get(url + query)
        assert response.status_code >= 400
        error = assert_envelope(response, response.status_code, "adapter_integrity_error")
        assert "adapter_model.safetensors" in error["details"]["files"]
        assert evil not in response.content


def test_loading_verifies_sha256_and_the_safetensors_header(make_tenant, tmp_path):
    from adapters.models import AdapterVersion
    from adapters.runtime import AdapterRef, ModelRuntime
    from adapters.services import AdapterIntegrityError

    seeded = seed_tenant(make_tenant, "acme", "ACMELOAD", job_hex="eeee5555eeee",
                         version_number=2, username="load-user")
    version = AdapterVersion.objects.get(tenant=seeded.ctx.tenant, number=2)
    cache = tmp_path / "adapter-cache"
    runtime = ModelRuntime(source="unused", revision=None, cache_size=2, cache_dir=cache)
    loaded = runtime._materialize(AdapterRef.of(version))
    assert sorted(p.name for p in loaded.iterdir()) == ["adapter_config.json",
                                                        "adapter_model.safetensors"]

    # Tampered in storage after it was recorded: refused, nothing left in the cache.
    other = AdapterVersion.objects.get(tenant=seeded.ctx.tenant, number=1)
    _tamper(other)
    with pytest.raises(AdapterIntegrityError):
        runtime._materialize(AdapterRef.of(other))
    assert runtime.stats["integrity_errors"] == 1
    # A pickle whose sha256 was recorded (say, by a compromised writer) fails the format check.
    _tamper(other, data=PICKLE)
    AdapterVersion.objects.filter(pk=other.pk).update(files={
        **other.files, "adapter_model.safetensors": hashlib.sha256(PICKLE).hexdigest()})
    other.refresh_from_db()
    with pytest.raises(AdapterIntegrityError, match="not a safetensors file"):
        runtime._materialize(AdapterRef.of(other))
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == [
        "adapter_config.json", "adapter_model.safetensors"]  # only the good v2


def test_concurrent_first_loads_of_one_version_all_succeed(make_tenant, tmp_path, monkeypatch):
    """Requests for a cold adapter copy its files outside the generation lock, so several can
    copy the same version at once. All of them pass verification together here (a barrier right
    before the copy is renamed into place): each must get the folder, none an OSError from
    renaming onto the copy another thread placed first (seen as a 500 in the batched-serving
    test before this was fixed)."""
    import threading

    import adapters.services
    from adapters.models import AdapterVersion
    from adapters.runtime import AdapterRef, ModelRuntime

    seeded = seed_tenant(make_tenant, "acme", "ACMERACE", job_hex="eeee6666eeee",
                         version_number=2, username="race-user")
    ref = AdapterRef.of(AdapterVersion.objects.get(tenant=seeded.ctx.tenant, number=2))
    threads_count = 6
    together = threading.Barrier(threads_count)
    check = adapters.services.safetensors_header_check

    def checked_together(*args, **kwargs):
        check(*args, **kwargs)
        together.wait(timeout=30)

    monkeypatch.setattr(adapters.services, "safetensors_header_check", checked_together)
    runtime = ModelRuntime(source="unused", revision=None, cache_size=2,
                           cache_dir=tmp_path / "adapter-cache")
    results: list = [None] * threads_count

    def load(i):
        try:
            results[i] = runtime._materialize(ref)
        except Exception as exc:  # noqa: BLE001 - compared below
            results[i] = exc

    threads = [threading.Thread(target=load, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(r, type(results[0])) and r == results[0] for r in results), results
    assert sorted(p.name for p in results[0].iterdir()) == ["adapter_config.json",
                                                            "adapter_model.safetensors"]
    assert [p.name for p in results[0].parent.iterdir()] == [results[0].name]  # no staging left


@pytest.mark.parametrize("slug", ["../globex", "acme/../../etc", "..", "a b", "acme%2F..",
                                  "tenants/globex", "x" * 64])
def test_a_tenant_slug_cannot_point_outside_its_prefix(slug):
    from django.core.exceptions import ValidationError

    from tenants.models import Tenant
    from tenants.services import tenant_create

    with pytest.raises(ValidationError):
        tenant_create(slug=slug, plan_slug="pro")
    with pytest.raises(CommandError):
        call_command("create_tenant", slug, "--plan", "pro")
    assert not Tenant.objects.exists()


def test_storage_prefixes_come_from_platform_ids_only(owner, outsider):
    from adapters.services import adapter_storage_prefix
    from training.models import TrainingJob
    from training.snapshots import snapshot_prefix

    job = _job(owner.tenant, TrainingJob._meta.get_field("id").default())
    for prefix in (adapter_storage_prefix(tenant=owner.tenant, number=3),
                   snapshot_prefix(tenant=owner.tenant, job_id=job.id)):
        parts = Path(prefix).parts
        assert parts[:2] == ("tenants", owner.tenant.slug), prefix
        assert ".." not in parts and not prefix.startswith("/")
    assert job.id.startswith("train_") and job.id[6:].isalnum()
