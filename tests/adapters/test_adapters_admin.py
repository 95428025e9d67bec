"""The Django admin: versions list and detail, and the activate actions."""

import pytest

from adapters.models import AdapterVersion
from tenants.models import AuditLogEntry

pytestmark = pytest.mark.django_db

URL = "/admin/adapters/adapterversion/"


def test_the_admin_lists_and_shows_versions(admin_client, owner, make_version):
    version = make_version(owner.tenant)
    listing = admin_client.get(URL)
    assert listing.status_code == 200 and b"acme" in listing.content
    detail = admin_client.get(f"{URL}{version.pk}/change/")
    assert detail.status_code == 200 and version.sha256.encode() in detail.content


def test_the_admin_activate_action_goes_through_the_guard(admin_client, owner, make_version):
    make_version(owner.tenant, eval_loss=0.5)
    v2 = make_version(owner.tenant, eval_loss=0.9)

    refused = admin_client.post(URL, {"action": "activate_version",
                                      "_selected_action": [v2.pk]}, follow=True)
    assert b"worse held-out eval loss" in refused.content
    assert AdapterVersion.objects.get(tenant=owner.tenant, is_active=True).number == 1

    forced = admin_client.post(URL, {"action": "activate_version_force",
                                     "_selected_action": [v2.pk]}, follow=True)
    assert b"now serves v2" in forced.content
    assert AdapterVersion.objects.get(tenant=owner.tenant, is_active=True).number == 2
    assert AuditLogEntry.objects.filter(action="adapter.activated", target="v2",
                                        actor="user:admin").exists()
