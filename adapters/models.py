"""LoRA adapter versions per tenant."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone


def parse_version_label(label: Any) -> int | None:
    """`"v3"` -> 3; anything else -> None (the inverse of `AdapterVersion.version`)."""
    if not isinstance(label, str):
        return None
    text = label.strip()
    # ASCII digits only ("v²" passes isdigit() but not int()), and few enough of them that
    # int() cannot refuse the string (Python's 4300-digit limit) or the DB overflow.
    digits = text[1:]
    if len(text) < 2 or text[0] not in "vV" or not (digits.isascii() and digits.isdigit()) \
            or len(digits) > 9:
        return None
    number = int(digits)
    return number if number > 0 else None


class AdapterVersion(models.Model):
    """A trained adapter, `v<number>` per tenant, with its files in object storage.

    At most one version per tenant is active (a partial unique constraint enforces it).
    """

    READY = "ready"
    ARCHIVED = "archived"

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE,
                               related_name="adapter_versions")
    number = models.PositiveIntegerField()
    job = models.OneToOneField("training.TrainingJob", null=True, blank=True,
                               on_delete=models.SET_NULL, related_name="adapter_version")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="children")
    method = models.CharField(max_length=3)
    base_model = models.CharField(max_length=500)
    training_samples = models.PositiveIntegerField(default=0)
    eval_metrics = models.JSONField(default=dict, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, help_text="sha256 of adapter_model.safetensors")
    files = models.JSONField(default=dict, help_text="file name -> sha256")
    storage_prefix = models.CharField(max_length=300)
    data_manifest = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, default=READY,
                              choices=[(READY, READY), (ARCHIVED, ARCHIVED)])
    is_active = models.BooleanField(default=False)
    needs_retraining = models.BooleanField(
        default=False, help_text="Its training data included erased user data")
    manifest = models.JSONField(
        default=dict, blank=True,
        help_text="The trainer's manifest.json as stored next to the files (hyperparameters, "
                  "final metrics, data snapshot hash)")
    created_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["tenant_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "number"], name="unique_version_number"),
            models.UniqueConstraint(fields=["tenant"], condition=models.Q(is_active=True),
                                    name="one_active_version_per_tenant"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}:{self.version}"

    @property
    def version(self) -> str:
        return f"v{self.number}"

    @property
    def is_archived(self) -> bool:
        return self.status == self.ARCHIVED


class AdapterEvaluation(models.Model):
    """How a version scored after its training (adapters.services.evaluation): its answers, the
    then-active version's and the base model's on the same sets, and side-by-side samples.

    `scores` holds one entry per set (golden, trained, general, safety), each with the number of
    items and, per model evaluated ("new", "active", "base"), the share answered right and the
    mean token overlap; `general` also has what the base knew and what each model kept.
    """

    PENDING, RUNNING, COMPLETED, FAILED, SKIPPED = (
        "pending", "running", "completed", "failed", "skipped")
    STATUSES = [(s, s) for s in (PENDING, RUNNING, COMPLETED, FAILED, SKIPPED)]

    version = models.OneToOneField(AdapterVersion, on_delete=models.CASCADE,
                                   related_name="evaluation")
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    compared_with = models.CharField(
        max_length=20, blank=True, default="",
        help_text="The version that was active when this one was evaluated (its answers are "
                  "the 'active' column), empty when none was")
    base_model = models.CharField(max_length=500, blank=True, default="")
    scores = models.JSONField(default=dict, blank=True)
    regressions = models.JSONField(default=list, blank=True)
    samples = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True, default="")
    generations = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(default=0.0)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"evaluation of {self.version}"


class AdapterSettings(models.Model):
    """A tenant's adapter settings (one row per tenant, made on its first change): the A/B split,
    whether its significant winner is promoted by itself, and whether a version that does
    significantly worse online than the one before it is rolled back by itself.

    No row means the defaults (read by `adapters.selectors.adapter_settings_get` without writing
    one); `adapters.services.adapter_settings_update` is the only writer.
    """

    tenant = models.OneToOneField("tenants.Tenant", on_delete=models.CASCADE,
                                  related_name="adapter_settings")
    ab_test_enabled = models.BooleanField(default=False)
    ab_test_versions = models.JSONField(default=dict, blank=True,
                                        help_text='{"v2": 0.3, "v3": 0.7}; weights sum to 1.')
    auto_promote_ab_winner = models.BooleanField(default=False)
    auto_rollback = models.BooleanField(
        default=False,
        help_text="Roll back to the previous version by itself when the active one's bad "
                  "outcomes per conversation are significantly worse (sequential test)")

    class Meta:
        verbose_name_plural = "adapter settings"

    def __str__(self) -> str:
        return f"adapter settings of tenant {self.tenant_id}"

    @property
    def lora_ab_test(self) -> dict:
        """The `lora_ab_test` section of the settings document."""
        return {"enabled": bool(self.ab_test_enabled),
                "versions": dict(self.ab_test_versions or {})}
