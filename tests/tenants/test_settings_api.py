import pytest

pytestmark = pytest.mark.django_db


def test_it_reads_the_default_settings(owner):
    body = owner.client.get(owner.url("settings")).json()
    assert body == {
        "lora_ab_test": {"enabled": False, "versions": {}},
        "auto_training": {"enabled": False, "method": "sft", "min_new_feedback": 50},
        "auto_promote_ab_winner": False,
        "auto_rollback": False,
        "compute_backend": None,
        "base_model": None,
        "review_corrections": False,
        "max_examples_per_user": None,
    }


def test_it_patches_part_of_a_section_and_keeps_the_rest(owner):
    response = owner.client.patch(owner.url("settings"),
                                  {"auto_training": {"enabled": True}}, format="json")
    assert response.status_code == 200
    assert response.json()["auto_training"] == {"enabled": True, "method": "sft",
                                                "min_new_feedback": 50}
    assert owner.client.get(owner.url("settings")).json()["auto_training"]["enabled"] is True


@pytest.mark.parametrize("body, field", [
    ({"auto_training": {"enabled": "sometimes"}}, "auto_training"),
    ({"auto_training": {"min_new_feedback": 0}}, "auto_training"),
    ({"auto_training": {"method": "ppo"}}, "auto_training"),
    ({"auto_training": "on"}, "auto_training"),
    ({"compute_backend": "mainframe"}, "compute_backend"),
    ({"lora_ab_test": {"enabled": "maybe", "versions": {}}}, "lora_ab_test"),
    ({"lora_ab_test": {"enabled": True, "versions": {"v1": "half"}}}, "lora_ab_test"),
    ({"no_such_setting": 1}, "no_such_setting"),
])
def test_it_refuses_wrong_types_and_keeps_the_stored_settings(owner, body, field):
    before = owner.client.get(owner.url("settings")).json()
    response = owner.client.patch(owner.url("settings"), body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["details"]
    assert owner.client.get(owner.url("settings")).json() == before


def test_a_settings_change_is_audit_logged(owner):
    from tenants.models import AuditLogEntry

    owner.client.patch(owner.url("settings"), {"auto_promote_ab_winner": True}, format="json")
    entry = AuditLogEntry.objects.get(action="settings.updated")
    assert entry.tenant == owner.tenant and entry.actor.startswith("key:")
