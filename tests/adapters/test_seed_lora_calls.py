"""The seed's "LoRA Management" and "A/B Testing" calls, copied literally, against a live server.

Only the base URL and the key differ from the seed text (the tenant is the seed's `my_tenant`).
"""

import pytest
import requests

from adapters.models import AdapterVersion
from adapters.selectors import ab_test_settings
from tenants.models import Tenant

# live_server needs real commits; serialized_rollback brings back the plans (a data migration)
# that the flush after each transactional test removes.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

@pytest.fixture
def seed_tenant(make_tenant, make_version):
    ctx = make_tenant("my_tenant", plan="enterprise")
    for samples in (120, 340, 560):
        make_version(ctx.tenant, training_samples=samples)
    return ctx


def test_the_seed_lora_management_calls_work_as_written(live_server, seed_tenant, capsys):
    BASE = live_server.url
    KEY = seed_tenant.secret

    # --- List LoRA Versions (seed) ---
    response = requests.get(
        f"{BASE}/v1/tenants/my_tenant/lora",
        headers={"Authorization": f"Bearer {KEY}"}
    )
    loras = response.json()
    for lora in loras['versions']:
        print(f"Version: {lora['version']}")
        print(f" Created: {lora['created_at']}")
        print(f" Samples: {lora['training_samples']}")
        print(f" Active: {lora['is_active']}")

    printed = capsys.readouterr().out
    assert response.status_code == 200
    assert "Version: v3\n" in printed and " Samples: 560\n" in printed
    assert printed.count(" Active: True") == 1 and printed.count(" Active: False") == 2

    # --- Activate LoRA Version (seed) ---
    response = requests.post(
        f"{BASE}/v1/tenants/my_tenant/lora/v3/activate",
        headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 200 and response.json()["version"] == "v3"
    assert AdapterVersion.objects.get(tenant=seed_tenant.tenant, is_active=True).version == "v3"

    # --- Rollback to Previous Version (seed) ---
    response = requests.post(
        f"{BASE}/v1/tenants/my_tenant/lora/v2/activate",
        headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 200 and response.json()["is_active"] is True
    assert AdapterVersion.objects.get(tenant=seed_tenant.tenant, is_active=True).version == "v2"


def test_the_seed_ab_testing_call_works_as_written(live_server, seed_tenant):
    BASE = live_server.url
    KEY = seed_tenant.secret

    # --- A/B Testing (seed) ---
    response = requests.patch(
        f"{BASE}/v1/tenants/my_tenant/settings",
        headers={"Authorization": f"Bearer {KEY}"},
        json={
            "lora_ab_test": {
                "enabled": True,
                "versions": {
                    "v2": 0.3,  # 30% traffic
                    "v3": 0.7  # 70% traffic
                }
            }
        }
    )

    assert response.status_code == 200
    assert response.json()["lora_ab_test"] == {"enabled": True,
                                               "versions": {"v2": 0.3, "v3": 0.7}}
    stored = ab_test_settings(Tenant.objects.get(slug="my_tenant"))
    assert stored == {"enabled": True, "versions": {"v2": 0.3, "v3": 0.7}}
    listed = requests.get(f"{BASE}/v1/tenants/my_tenant/lora",
                          headers={"Authorization": f"Bearer {KEY}"}).json()
    assert {v["version"]: v["ab_weight"] for v in listed["versions"]} == {
        "v3": 0.7, "v2": 0.3, "v1": None}
