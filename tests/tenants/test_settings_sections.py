"""The settings document composed from the apps' sections: each app's service validates, stores
and audits its own keys; a read writes nothing; a refused change stores nothing of any section."""

import pytest

from adapters.selectors import adapter_settings_get
from adapters.services import adapter_settings_update
from tenants.errors import InvalidInput
from tenants.models import AuditLogEntry
from tenants.selectors import tenant_settings_document
from tenants.services import tenant_settings_change
from training.selectors import training_settings_get
from training.services.settings import training_settings_update

pytestmark = pytest.mark.django_db


def test_reading_the_defaults_writes_no_row(owner):
    from adapters.models import AdapterSettings
    from training.models import TrainingSettings

    document = tenant_settings_document(tenant=owner.tenant)
    assert document["auto_training"] == {"enabled": False, "method": "sft",
                                         "min_new_feedback": 50}
    assert training_settings_get(tenant=owner.tenant).pk is None
    assert adapter_settings_get(tenant=owner.tenant).pk is None
    assert not TrainingSettings.objects.exists() and not AdapterSettings.objects.exists()


def test_each_service_validates_stores_and_audits_its_section(owner):
    row = training_settings_update(tenant=owner.tenant, actor="user:ops",
                                   changes={"auto_training": {"min_new_feedback": 7},
                                            "compute_backend": "slurm"})
    assert row.auto_training == {"enabled": False, "method": "sft", "min_new_feedback": 7}
    entry = AuditLogEntry.objects.get(action="settings.updated")
    assert entry.actor == "user:ops" and entry.details == {
        "changed": ["auto_training", "compute_backend"], "section": "training"}

    with pytest.raises(InvalidInput) as refused:
        training_settings_update(tenant=owner.tenant, changes={
            "auto_training": {"method": "ppo"}, "compute_backend": "mainframe"})
    assert set(refused.value.details) == {"auto_training", "compute_backend"}
    assert training_settings_get(tenant=owner.tenant).compute_backend == "slurm"

    with pytest.raises(InvalidInput) as refused:
        adapter_settings_update(tenant=owner.tenant, changes={
            "lora_ab_test": {"enabled": True, "versions": {"v1": 0.5, "v2": 0.5}}})
    assert "does not exist" in refused.value.details["lora_ab_test"]["v1"][0]
    adapter_settings_update(tenant=owner.tenant, changes={"auto_promote_ab_winner": True})
    assert adapter_settings_get(tenant=owner.tenant).auto_promote_ab_winner is True
    assert AuditLogEntry.objects.filter(action="settings.updated").count() == 2


def test_a_change_refused_in_one_section_stores_nothing_in_the_others(owner):
    with pytest.raises(InvalidInput) as refused:
        tenant_settings_change(tenant=owner.tenant, actor="system", changes={
            "auto_promote_ab_winner": True, "compute_backend": "local",
            "base_model": "no-such-base"})
    assert refused.value.code == "validation_error"
    assert "Choose one of:" in refused.value.details["base_model"][0]
    document = tenant_settings_document(tenant=owner.tenant)
    assert document["auto_promote_ab_winner"] is False and document["compute_backend"] is None
    assert not AuditLogEntry.objects.filter(action="settings.updated").exists()

    with pytest.raises(InvalidInput) as refused:
        tenant_settings_change(tenant=owner.tenant, actor="system", changes={"colour": "red"})
    assert refused.value.details == {"colour": ["Unknown setting."]}


def test_every_section_collects_all_its_refusals_by_key_as_one_domain_error(owner):
    """Both apps' services check their keys with tenants.settings_sections: an unknown key and
    each bad value are reported together (per key; an object's problems by field or version
    label), as InvalidInput, never a framework error."""
    from tenants.settings_sections import SettingInvalid, settings_section_validate

    with pytest.raises(InvalidInput) as training:
        training_settings_update(tenant=owner.tenant, changes={
            "compute_backend": "gpu-farm", "base_model": "nope", "colour": "red",
            "auto_training": {"method": "rlhf"}})
    assert training.value.code == "validation_error"
    details = training.value.details
    assert set(details) == {"compute_backend", "base_model", "colour", "auto_training"}
    assert details["colour"] == ["Unknown setting."]
    assert details["compute_backend"] == ['"gpu-farm" is not a valid choice.']
    assert details["base_model"][0].startswith("Unknown base model 'nope'.")
    assert details["auto_training"] == ['method: "rlhf" is not a valid choice.']

    with pytest.raises(InvalidInput) as adapters:
        adapter_settings_update(tenant=owner.tenant, changes={
            "auto_promote_ab_winner": "yes",
            "lora_ab_test": {"enabled": True, "versions": {"v9": 1.0, "latest": 0.5}}})
    details = adapters.value.details
    assert details["auto_promote_ab_winner"] == ["Must be a valid boolean."]
    assert details["lora_ab_test"] == {
        "latest": ["Not a version label; use the form 'v3'."],
        "v9": ["Version v9 does not exist for this tenant."],
        "versions": ["An enabled A/B test needs at least 2 versions."]}
    assert training_settings_get(tenant=owner.tenant).pk is None
    assert adapter_settings_get(tenant=owner.tenant).pk is None

    def positive(tenant, value):
        if value <= 0:
            raise SettingInvalid("Must be positive.")
        return value * 2

    assert settings_section_validate(tenant=owner.tenant, changes={"n": 2, "free": "x"},
                                     checks={"n": positive, "free": None}) == {"n": 4,
                                                                               "free": "x"}
