"""The seed's four plans: quota of training jobs a month, stored LoRA versions, prices."""

from decimal import Decimal

from django.db import migrations

PLANS = [
    # slug, name, monthly jobs (None = unlimited), stored versions (None = unlimited)
    ("free", "Free", 0, 0),
    ("pro", "Pro", 2, 1),
    ("hybrid", "Hybrid", 10, 5),
    ("enterprise", "Enterprise", None, None),
]


def create_plans(apps, schema_editor):
    Plan = apps.get_model("tenants", "Plan")
    for slug, name, quota, versions in PLANS:
        Plan.objects.update_or_create(
            slug=slug,
            defaults={
                "name": name,
                "monthly_job_quota": quota,
                "max_lora_versions": versions,
                "sft_price_per_1000": Decimal("0.10"),
                "dpo_price_per_1000": Decimal("0.15"),
            },
        )


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]
    operations = [migrations.RunPython(create_plans, migrations.RunPython.noop)]
