"""Every adapters endpoint: owner ok, another tenant's key 404, no key 401, read-only key 403 on
writes - and nothing of the owner's changes when a refused call comes in."""

import pytest

from adapters.models import AdapterVersion
from feedback.models import Message

pytestmark = pytest.mark.django_db

READS = [
    ("get", "lora", None, 200),
    ("get", "lora/v1", None, 200),
    ("get", "lora/v1/download", None, 200),
    ("get", "lora/v1/metrics", None, 200),
    ("get", "lora/metrics", None, 200),
]
WRITES = [
    ("post", "lora/v2/activate", {"force": True}, 200),
    ("delete", "lora/v2", None, 200),
    ("post", "lora/ab-test/promote", None, 409),  # owner reaches the rule: no test running
    ("post", "chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                  "max_tokens": 4}, 200),
]


@pytest.fixture
def versions(owner, outsider, base_model, make_version):
    make_version(owner.tenant)
    make_version(owner.tenant)
    make_version(outsider.tenant)
    make_version(outsider.tenant)


def _call(client, method, url, body):
    return getattr(client, method)(url, body, format="json") if body is not None \
        else getattr(client, method)(url)


def _snapshot(tenant):
    return (list(AdapterVersion.objects.filter(tenant=tenant).order_by("number")
                 .values_list("number", "is_active", "status")),
            Message.objects.filter(tenant=tenant).count())


@pytest.mark.parametrize("method, path, body, owner_status", READS + WRITES)
def test_the_owner_is_served(owner, versions, method, path, body, owner_status):
    response = _call(owner.client, method, owner.url(path), body)
    assert response.status_code == owner_status, response.content[:300]


@pytest.mark.parametrize("method, path, body, owner_status", READS + WRITES)
def test_another_tenants_key_gets_404(owner, outsider, versions, method, path, body,
                                      owner_status):
    before = _snapshot(owner.tenant)
    response = _call(outsider.client, method, owner.url(path), body)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert _snapshot(owner.tenant) == before


@pytest.mark.parametrize("method, path, body, owner_status", READS + WRITES)
def test_no_key_gets_401(owner, anon, versions, method, path, body, owner_status):
    before = _snapshot(owner.tenant)
    response = _call(anon, method, owner.url(path), body)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert _snapshot(owner.tenant) == before


@pytest.mark.parametrize("method, path, body, owner_status", WRITES)
def test_a_read_only_key_cannot_write(read_only, versions, method, path, body, owner_status):
    before = _snapshot(read_only.tenant)
    response = _call(read_only.client, method, read_only.url(path), body)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "read_only_key"
    assert _snapshot(read_only.tenant) == before


@pytest.mark.parametrize("method, path, body, owner_status", READS)
def test_a_read_only_key_can_read(read_only, versions, method, path, body, owner_status):
    assert _call(read_only.client, method, read_only.url(path), body).status_code == 200


def test_the_settings_validator_only_sees_the_callers_versions(owner, outsider, make_version):
    make_version(outsider.tenant)
    make_version(outsider.tenant)
    response = owner.client.patch(owner.url("settings"), {"lora_ab_test": {
        "enabled": True, "versions": {"v1": 0.5, "v2": 0.5}}}, format="json")
    assert response.status_code == 400
    details = response.json()["error"]["details"]["lora_ab_test"]
    assert "does not exist" in details["v1"][0] and "does not exist" in details["v2"][0]
