"""Copy each tenant's training settings out of the `Tenant.settings` blob into TrainingSettings
(only tenants whose blob differs from the defaults get a row); the reverse writes them back."""

from django.db import migrations


def forwards(apps, schema_editor):
    Tenant = apps.get_model("tenants", "Tenant")
    TrainingSettings = apps.get_model("training", "TrainingSettings")
    for tenant in Tenant.objects.all():
        blob = tenant.settings if isinstance(tenant.settings, dict) else {}
        auto = blob.get("auto_training") if isinstance(blob.get("auto_training"), dict) else {}
        backend = blob.get("compute_backend")
        base = blob.get("base_model")
        row = {
            "auto_training_enabled": bool(auto.get("enabled")),
            "auto_training_method": auto.get("method") if auto.get("method") in ("sft", "dpo")
            else "sft",
            "auto_training_min_new_feedback": int(auto.get("min_new_feedback") or 50),
            "compute_backend": backend if backend in ("local", "slurm") else "",
            "base_model": base if isinstance(base, str) else "",
        }
        if row != {"auto_training_enabled": False, "auto_training_method": "sft",
                   "auto_training_min_new_feedback": 50, "compute_backend": "",
                   "base_model": ""}:
            TrainingSettings.objects.update_or_create(tenant=tenant, defaults=row)


def backwards(apps, schema_editor):
    Tenant = apps.get_model("tenants", "Tenant")
    TrainingSettings = apps.get_model("training", "TrainingSettings")
    for row in TrainingSettings.objects.all():
        tenant = Tenant.objects.get(pk=row.tenant_id)
        blob = dict(tenant.settings or {})
        blob["auto_training"] = {"enabled": row.auto_training_enabled,
                                 "method": row.auto_training_method,
                                 "min_new_feedback": row.auto_training_min_new_feedback}
        blob["compute_backend"] = row.compute_backend or None
        if row.base_model:
            blob["base_model"] = row.base_model
        tenant.settings = blob
        tenant.save(update_fields=["settings"])


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0002_plans"),
        ("training", "0003_trainingsettings"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
