"""API-key authentication and tenant scoping, as a client sees them."""

import pytest

from tenants.models import ApiKey
from tenants.services import api_key_revoke
from tests.conftest import api_client

pytestmark = pytest.mark.django_db


def _error(response):
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]


def test_it_serves_the_owner(owner):
    response = owner.client.get(owner.url("settings"))
    assert response.status_code == 200
    assert response.json()["lora_ab_test"] == {"enabled": False, "versions": {}}


def test_it_refuses_a_request_without_a_key(owner, anon):
    response = anon.get(owner.url("settings"))
    assert response.status_code == 401
    assert _error(response)["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header", ["Token abc", "Bearer", "Bearer a b", "sk-abc", "Basic Zm9vOmJhcg=="]
)
def test_it_refuses_a_malformed_header(owner, header):
    client = api_client()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(owner.url("settings"))
    assert response.status_code == 401
    assert _error(response)["code"] in {"malformed_authorization", "invalid_api_key"}


def test_it_refuses_an_unknown_key(owner):
    response = api_client("sk-not-a-real-key").get(owner.url("settings"))
    assert response.status_code == 401
    assert _error(response)["code"] == "invalid_api_key"


def test_it_refuses_a_revoked_key(owner):
    key = ApiKey.objects.get(tenant=owner.tenant)
    api_key_revoke(key=key)
    response = owner.client.get(owner.url("settings"))
    assert response.status_code == 401
    assert _error(response)["code"] == "invalid_api_key"


def test_it_hides_another_tenant_behind_404(owner, outsider):
    response = outsider.client.get(owner.url("settings"))
    assert response.status_code == 404
    assert _error(response)["code"] == "not_found"
    # Same answer as for a tenant that does not exist: no hint that "acme" exists.
    missing = outsider.client.get("/v1/tenants/no-such-tenant/settings")
    assert missing.status_code == 404
    assert missing.json() == response.json()


def test_it_refuses_writes_with_a_read_only_key(owner, read_only):
    assert read_only.client.get(owner.url("settings")).status_code == 200
    response = read_only.client.patch(owner.url("settings"), {"auto_promote_ab_winner": True},
                                      format="json")
    assert response.status_code == 403
    assert _error(response)["code"] == "read_only_key"
    assert owner.client.get(owner.url("settings")).json()["auto_promote_ab_winner"] is False


def test_it_never_stores_the_secret_in_clear(owner):
    key = ApiKey.objects.get(tenant=owner.tenant)
    stored = [str(getattr(key, f.attname)) for f in ApiKey._meta.fields]
    assert all(owner.secret not in value for value in stored)
    assert owner.secret[:10] == key.prefix
    assert len(key.hashed_secret) == 64 and key.hashed_secret != owner.secret


def test_it_records_when_a_key_was_last_used(owner):
    key = ApiKey.objects.get(tenant=owner.tenant)
    assert key.last_used_at is None
    owner.client.get(owner.url("settings"))
    key.refresh_from_db()
    assert key.last_used_at is not None
