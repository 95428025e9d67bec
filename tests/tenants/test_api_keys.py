import pytest

from tests.conftest import api_client

pytestmark = pytest.mark.django_db


def test_it_creates_a_key_shown_once_and_lists_it_without_the_secret(owner):
    response = owner.client.post(owner.url("api-keys"), {"name": "ci", "access": "read_only"},
                                 format="json")
    assert response.status_code == 201
    created = response.json()
    assert created["secret"].startswith("sk-") and created["access"] == "read_only"
    listing = owner.client.get(owner.url("api-keys")).json()["keys"]
    assert {k["name"] for k in listing} == {"ci", "initial key"}
    assert all("secret" not in k for k in listing)
    # The new key works, read-only.
    new_client = api_client(created["secret"])
    assert new_client.get(owner.url("settings")).status_code == 200
    assert new_client.post(owner.url("api-keys"), {}, format="json").status_code == 403


def test_a_revoked_key_stops_working(owner):
    created = owner.client.post(owner.url("api-keys"), {"name": "temp"}, format="json").json()
    response = owner.client.post(owner.url(f"api-keys/{created['id']}/revoke"))
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert api_client(created["secret"]).get(owner.url("settings")).status_code == 401


def test_keys_are_tenant_scoped(owner, outsider, anon):
    key_id = owner.client.get(owner.url("api-keys")).json()["keys"][0]["id"]
    assert outsider.client.get(owner.url("api-keys")).status_code == 404
    assert outsider.client.post(owner.url(f"api-keys/{key_id}/revoke")).status_code == 404
    # Another tenant's key id under one's own tenant: not found either.
    assert outsider.client.post(outsider.url(f"api-keys/{key_id}/revoke")).status_code == 404
    assert anon.get(owner.url("api-keys")).status_code == 401
    assert owner.client.get(owner.url("settings")).status_code == 200


@pytest.mark.parametrize("body", [{"access": "admin"}, {"name": "x" * 101}])
def test_it_validates_key_creation(owner, body):
    response = owner.client.post(owner.url("api-keys"), body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
