"""Copy each tenant's A/B split and auto-promotion out of the `Tenant.settings` blob into
AdapterSettings (only tenants whose blob differs from the defaults get a row); the reverse writes
them back."""

from django.db import migrations


def forwards(apps, schema_editor):
    Tenant = apps.get_model("tenants", "Tenant")
    AdapterSettings = apps.get_model("adapters", "AdapterSettings")
    for tenant in Tenant.objects.all():
        blob = tenant.settings if isinstance(tenant.settings, dict) else {}
        ab = blob.get("lora_ab_test") if isinstance(blob.get("lora_ab_test"), dict) else {}
        versions = ab.get("versions") if isinstance(ab.get("versions"), dict) else {}
        row = {"ab_test_enabled": bool(ab.get("enabled")), "ab_test_versions": dict(versions),
               "auto_promote_ab_winner": bool(blob.get("auto_promote_ab_winner"))}
        if row != {"ab_test_enabled": False, "ab_test_versions": {},
                   "auto_promote_ab_winner": False}:
            AdapterSettings.objects.update_or_create(tenant=tenant, defaults=row)


def backwards(apps, schema_editor):
    Tenant = apps.get_model("tenants", "Tenant")
    AdapterSettings = apps.get_model("adapters", "AdapterSettings")
    for row in AdapterSettings.objects.all():
        tenant = Tenant.objects.get(pk=row.tenant_id)
        blob = dict(tenant.settings or {})
        blob["lora_ab_test"] = {"enabled": row.ab_test_enabled,
                                "versions": dict(row.ab_test_versions or {})}
        blob["auto_promote_ab_winner"] = row.auto_promote_ab_winner
        tenant.settings = blob
        tenant.save(update_fields=["settings"])


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0002_plans"),
        ("adapters", "0004_adaptersettings"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
