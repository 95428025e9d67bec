"""Issue 16: the per-tenant counters row becomes shards (`FeedbackCounterShard`); each tenant's
existing counts move into its shard 0 unchanged (same counts, same last counted row), so the
stats answer the same before and after, and the old table goes."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


def counters_to_shards(apps, schema_editor):
    FeedbackCounters = apps.get_model("feedback", "FeedbackCounters")
    FeedbackCounterShard = apps.get_model("feedback", "FeedbackCounterShard")
    FeedbackCounterShard.objects.bulk_create([
        FeedbackCounterShard(tenant_id=row.tenant_id, shard=0, counts=row.counts,
                             last_feedback_id=row.last_feedback_id, updated_at=row.updated_at)
        for row in FeedbackCounters.objects.all().iterator()], batch_size=1000)


def shards_to_counters(apps, schema_editor):
    FeedbackCounters = apps.get_model("feedback", "FeedbackCounters")
    FeedbackCounterShard = apps.get_model("feedback", "FeedbackCounterShard")
    merged: dict[int, dict] = {}
    for shard in FeedbackCounterShard.objects.all().iterator():
        row = merged.setdefault(shard.tenant_id, {"counts": {}, "last": 0,
                                                  "updated_at": shard.updated_at})
        for key, n in (shard.counts or {}).items():
            row["counts"][key] = row["counts"].get(key, 0) + n
        row["last"] = max(row["last"], shard.last_feedback_id)
        row["updated_at"] = max(row["updated_at"], shard.updated_at)
    FeedbackCounters.objects.bulk_create([
        FeedbackCounters(tenant_id=tenant_id, last_feedback_id=row["last"],
                         updated_at=row["updated_at"],
                         counts={k: n for k, n in sorted(row["counts"].items()) if n})
        for tenant_id, row in merged.items()])


class Migration(migrations.Migration):

    dependencies = [
        ("feedback", "0005_dataset_evaluation_only"),
        ("tenants", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="FeedbackCounterShard",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("shard", models.PositiveSmallIntegerField()),
                ("counts", models.JSONField(blank=True, default=dict)),
                ("last_feedback_id", models.BigIntegerField(
                    default=0, help_text="Newest feedback row this shard counted; a row newer "
                                         "than every shard's, written around the services "
                                         "(bulk loads), makes the next read or write recount")),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("tenant", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                             related_name="feedback_counter_shards",
                                             to="tenants.tenant")),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("tenant", "shard"),
                                                        name="feedback_counter_shard_unique")],
            },
        ),
        migrations.RunPython(counters_to_shards, shards_to_counters),
        migrations.DeleteModel(name="FeedbackCounters"),
    ]
