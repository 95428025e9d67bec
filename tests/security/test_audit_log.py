"""The audit log: every security-relevant action, through the API and through the dashboard,
leaves an entry saying who (key prefix or user), when, from where (client IP), on what; the
entries are visible, read-only, to operators in the admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

pytestmark = pytest.mark.django_db
CLIENT_IP = "203.0.113.7"


def _entries(action: str, tenant):
    from tenants.models import AuditLogEntry

    return list(AuditLogEntry.objects.filter(action=action, tenant=tenant))


def _assert_entry(action: str, tenant, *, actor: str, target: str | None = None,
                  ip: str | None = CLIENT_IP):
    entries = _entries(action, tenant)
    assert entries, f"no audit entry {action!r}"
    entry = entries[0]
    assert entry.actor == actor, entry.actor
    assert entry.ip_address == ip, entry.ip_address
    assert timezone.now() - entry.created_at < timedelta(minutes=1)
    if target is not None:
        assert entry.target == target, entry.target
    return entry


def _api(seeded):
    seeded.ctx.client.defaults["REMOTE_ADDR"] = CLIENT_IP
    return seeded.ctx.client


def _browser(user) -> Client:
    browser = Client(REMOTE_ADDR=CLIENT_IP)
    browser.force_login(user)
    return browser


def test_the_api_records_every_security_relevant_action(two_tenants):
    from tenants.models import ApiKey

    acme, _ = two_tenants
    client, url, tenant = _api(acme), acme.ctx.url, acme.ctx.tenant
    actor = f"key:{acme.ctx.secret[:10]}"

    response = client.post(url("api-keys"), {"name": "deploy"}, format="json")
    assert response.status_code == 201
    _assert_entry("api_key.created", tenant, actor=actor, target=response.json()["prefix"])

    spare = ApiKey.objects.get(pk=acme.spare_key_id)
    assert client.post(url(f"api-keys/{spare.pk}/revoke")).status_code == 200
    _assert_entry("api_key.revoked", tenant, actor=actor, target=spare.prefix)

    older = f"v{acme.version_number - 1}"
    assert client.post(url(f"lora/{older}/activate"), {}, format="json").status_code == 200
    entry = _assert_entry("adapter.activated", tenant, actor=actor)
    assert older in f"{entry.target} {entry.details}"

    split = {"enabled": True, "versions": {older: 0.5, acme.version: 0.5}}
    assert client.patch(url("settings"), {"lora_ab_test": split},
                        format="json").status_code == 200
    entry = _assert_entry("settings.updated", tenant, actor=actor)
    assert "lora_ab_test" in entry.details["changed"]
    ab = _entries("adapter.ab_test_changed", tenant)
    assert ab and ab[0].details["after"]["versions"] == split["versions"]

    response = client.post(url(f"train/{acme.job_id}/cancel"))
    assert response.status_code == 200, response.content
    _assert_entry("training.job_cancelled", tenant, actor=actor, target=acme.job_id)

    response = client.post(url("erasure"), {"user_id": f"user-{acme.marker}"}, format="json")
    assert response.status_code == 200, response.content
    entry = _assert_entry("training.user_data_erased", tenant, actor=actor,
                          target=f"user:user-{acme.marker}")
    # The entry names the request, never the erased content.
    assert acme.marker not in str(entry.details)


def test_the_dashboard_records_every_security_relevant_action(two_tenants):
    from tenants.models import ApiKey

    acme, _ = two_tenants
    tenant, slug = acme.ctx.tenant, acme.slug
    browser = _browser(acme.user)
    actor = f"user:{acme.user.username}"

    response = browser.post(f"/t/{slug}/api-keys/", {"name": "ui", "access": "read_only"})
    assert response.status_code in (200, 201)
    key = ApiKey.objects.get(tenant=tenant, name="ui")
    _assert_entry("api_key.created", tenant, actor=actor, target=key.prefix)

    assert browser.post(f"/t/{slug}/api-keys/{key.pk}/revoke").status_code in (200, 302)
    _assert_entry("api_key.revoked", tenant, actor=actor, target=key.prefix)

    number = acme.version_number - 1
    response = browser.post(f"/t/{slug}/adapters/v{number}/activate", {"force": "1"})
    assert response.status_code == 302, response.status_code
    _assert_entry("adapter.activated", tenant, actor=actor)

    response = browser.post(f"/t/{slug}/adapters/ab-test", {
        "enabled": "on", f"weight_v{number}": "0.3", f"weight_{acme.version}": "0.7"})
    assert response.status_code == 302, response.status_code
    entry = _assert_entry("settings.updated", tenant, actor=actor)
    assert "lora_ab_test" in str(entry.details)

    response = browser.post(f"/t/{slug}/training/{acme.job_id}/cancel")
    assert response.status_code == 302
    _assert_entry("training.job_cancelled", tenant, actor=actor, target=acme.job_id)


def test_refused_actions_leave_no_entry_and_outsiders_none_in_the_victims_log(two_tenants):
    from tenants.models import AuditLogEntry

    acme, globex = two_tenants
    before = AuditLogEntry.objects.count()
    ro = acme.read_only.client
    assert ro.post(acme.ctx.url("api-keys"), {"name": "x"}, format="json").status_code == 403
    assert ro.post(acme.ctx.url(f"train/{acme.job_id}/cancel")).status_code == 403
    other = globex.ctx.client
    assert other.post(acme.ctx.url(f"lora/{acme.version}/activate")).status_code == 404
    assert other.post(acme.ctx.url(f"api-keys/{acme.spare_key_id}/revoke")).status_code == 404
    assert AuditLogEntry.objects.count() == before


def test_operators_see_the_audit_log_in_the_admin_read_only(two_tenants):
    from django.contrib.auth import get_user_model

    from tenants.models import AuditLogEntry

    acme, _ = two_tenants
    _api(acme).post(acme.ctx.url("api-keys"), {"name": "seen-in-admin"}, format="json")
    entry = AuditLogEntry.objects.filter(action="api_key.created").first()
    staff = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-123456")
    admin = Client()
    admin.force_login(staff)
    listing = admin.get("/admin/tenants/auditlogentry/")
    assert listing.status_code == 200
    assert b"api_key.created" in listing.content and CLIENT_IP.encode() in listing.content
    change = admin.get(f"/admin/tenants/auditlogentry/{entry.pk}/change/")
    assert change.status_code == 200
    assert b'name="action"' not in change.content  # read-only: no editable field
    response = admin.post(f"/admin/tenants/auditlogentry/{entry.pk}/delete/", {"post": "yes"})
    assert AuditLogEntry.objects.filter(pk=entry.pk).exists(), response.status_code
    # A tenant member who is not staff cannot open it.
    member = Client()
    member.force_login(acme.user)
    assert member.get("/admin/tenants/auditlogentry/").status_code == 302
