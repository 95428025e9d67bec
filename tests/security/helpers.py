"""Security test helpers: two tenants seeded with distinctive marker strings in everything they
own (conversations, messages, feedback, datasets and records, job ids, adapter version numbers,
webhooks, key names), so a test can assert that one tenant's data never shows in the other's
responses."""

from __future__ import annotations

from dataclasses import dataclass, field

from rest_framework.test import APIClient

from tests import factories
from tests.conftest import api_client


@dataclass
class KeyCtx:
    """A second key of a tenant and a client presenting it."""

    tenant: object
    secret: str
    client: APIClient


@dataclass
class Seeded:
    """A seeded tenant: its API contexts, object ids to fill URLs with, and its marker."""

    ctx: object  # tests.conftest.TenantCtx
    marker: str
    conversation_id: str
    dataset_id: int
    job_id: str
    finished_job_id: str
    version_number: int
    webhook_id: int
    spare_key_id: int
    read_only: KeyCtx
    revoked_secret: str
    user: object = None
    extra: dict = field(default_factory=dict)

    @property
    def slug(self) -> str:
        return self.ctx.tenant.slug

    @property
    def version(self) -> str:
        return f"v{self.version_number}"


def seed_tenant(make_tenant, slug: str, marker: str, *, job_hex: str, version_number: int,
                username: str) -> Seeded:
    """Create a tenant and fill it with marker-bearing data through the API where it is cheap
    (so the real write paths are used) and through the ORM for jobs and adapter versions."""
    from django.contrib.auth import get_user_model

    from tenants.models import ApiKey, Membership
    from tenants.services import api_key_create, api_key_revoke
    from training.models import TrainingEvent, TrainingJob, TrainingMetric, Webhook

    ctx = make_tenant(slug)
    tenant = ctx.tenant
    client = ctx.client
    conversation_id = f"conv-{marker}"
    response = client.post(ctx.url("conversations"), {
        "conversation_id": conversation_id,
        "metadata": {"source": f"{marker}-meta"},
        "messages": [
            {"message_id": f"msg-{marker}-1", "role": "user",
             "content": f"Question about {marker} widgets", "user_id": f"user-{marker}"},
            {"message_id": f"msg-{marker}-2", "role": "assistant",
             "content": f"Answer for {marker} customers"},
        ]}, format="json")
    assert response.status_code == 201, response.content
    for body in (
        {"type": "correction", "correction": f"Corrected {marker} answer"},
        {"type": "thumbs_down", "metadata": {"user_id": f"user-{marker}", "note": marker}},
        {"type": "rating", "rating": 4},
    ):
        body = {"conversation_id": conversation_id, "message_id": f"msg-{marker}-2", **body}
        response = client.post(ctx.url("feedback"), body, format="json")
        assert response.status_code == 201, response.content
    response = client.post(ctx.url("datasets/register"),
                           {"name": f"dataset-{marker}", "type": "conversations"}, format="json")
    assert response.status_code == 201, response.content
    dataset_id = response.json()["id"]
    response = client.post(ctx.url(f"datasets/{dataset_id}/upload/conversations"), {
        "conversations": [{"messages": [
            {"role": "user", "content": f"Record question {marker}"},
            {"role": "assistant", "content": f"Record answer {marker}"}]}]}, format="json")
    assert response.status_code == 201, response.content

    job = factories.job(
        tenant, id=f"train_{job_hex}", status=TrainingJob.RUNNING,
        params={"epochs": 1, "batch_size": 4}, total_epochs=1,
        metrics={"loss": 1.5}, failure_reason="")
    TrainingMetric.objects.create(job=job, step=1, loss=1.5)
    TrainingEvent.objects.create(job=job, type="status", to_status="running",
                                 message=f"running {marker}")
    finished = factories.job(
        tenant, id=f"train_{job_hex[:6]}ffffff", status=TrainingJob.COMPLETED, params={},
        total_epochs=1)
    for number, job_row in ((version_number - 1, None), (version_number, finished)):
        prefix = f"tenants/{slug}/adapters/v{number}"
        files = factories.store_adapter_files(prefix, marker)
        factories.adapter_version(
            tenant, number, job=job_row, active=job_row is not None, eval_loss=None,
            activated_at=None, training_samples=7, sha256=files["adapter_model.safetensors"],
            files=files, storage_prefix=prefix)
    hook = Webhook.objects.create(tenant=tenant, url=f"https://{marker.lower()}.example/hook")
    spare, _ = api_key_create(tenant=tenant, name=f"spare-{marker}")
    _, ro_secret = api_key_create(tenant=tenant, access=ApiKey.READ_ONLY,
                                  name=f"ro-{marker}")
    revoked, revoked_secret = api_key_create(tenant=tenant, name=f"revoked-{marker}")
    api_key_revoke(key=revoked)
    user = get_user_model().objects.create_user(username=username, password="pw-" + marker)
    Membership.objects.create(user=user, tenant=tenant, role=Membership.ADMIN)
    return Seeded(
        ctx=ctx, marker=marker, conversation_id=conversation_id, dataset_id=dataset_id,
        job_id=job.id, finished_job_id=finished.id, version_number=version_number,
        webhook_id=hook.pk, spare_key_id=spare.pk,
        read_only=KeyCtx(tenant=tenant, secret=ro_secret, client=api_client(ro_secret)),
        revoked_secret=revoked_secret, user=user,
    )



def markers_of(seeded: Seeded) -> list[str]:
    """Strings that only this tenant's data contains."""
    return [seeded.marker, seeded.job_id, seeded.finished_job_id, f"dataset-{seeded.marker}"]


def assert_envelope(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"code", "message", "details"} <= set(error), error
    assert isinstance(error["code"], str) and error["code"]
    if code is not None:
        assert error["code"] == code, error
    return error
