"""Tenants, their plans, their API keys and their dashboard members."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class Plan(models.Model):
    """A price plan from the seed: training quota, stored adapter versions and prices.

    `None` in a limit means unlimited. The four plans are created by a data migration.
    """

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=50)
    monthly_job_quota = models.PositiveIntegerField(null=True, blank=True)
    max_lora_versions = models.PositiveIntegerField(null=True, blank=True)
    sft_price_per_1000 = models.DecimalField(max_digits=8, decimal_places=4, default=0)
    dpo_price_per_1000 = models.DecimalField(max_digits=8, decimal_places=4, default=0)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name

    @property
    def allows_training(self) -> bool:
        return self.monthly_job_quota is None or self.monthly_job_quota > 0


def default_tenant_settings() -> dict:
    """The old `Tenant.settings` blob's default. The settings now live in the apps that own them
    (training.TrainingSettings, adapters.AdapterSettings); kept because migration 0001 names it."""
    return {
        "lora_ab_test": {"enabled": False, "versions": {}},
        "auto_training": {"enabled": False, "method": "sft", "min_new_feedback": 50},
        "auto_promote_ab_winner": False,
        "compute_backend": None,
    }


class Tenant(models.Model):
    """A customer. Everything a tenant owns hangs off this row and is scoped by it.

    Its settings live with the apps that use them (training.TrainingSettings,
    adapters.AdapterSettings), composed into one document by `tenants.selectors`."""

    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="tenants")
    webhook_secret = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class ApiKey(models.Model):
    """A tenant's API key. Only an HMAC of the secret is stored; the secret is shown once."""

    READ_ONLY = "read_only"
    READ_WRITE = "read_write"
    ACCESS_CHOICES = [(READ_ONLY, "Read only"), (READ_WRITE, "Read and write")]

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, db_index=True)
    hashed_secret = models.CharField(max_length=64, unique=True)
    access = models.CharField(max_length=10, choices=ACCESS_CHOICES, default=READ_WRITE)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.tenant.slug})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def can_write(self) -> bool:
        return self.access == self.READ_WRITE


class Membership(models.Model):
    """A Django user's role in a tenant, for the browser dashboard."""

    ADMIN = "admin"
    VIEWER = "viewer"
    ROLE_CHOICES = [(ADMIN, "Admin"), (VIEWER, "Viewer")]

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=ROLE_CHOICES, default=VIEWER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="unique_membership")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


class IdempotencyRecord(models.Model):
    """The first response to a POST carrying an `Idempotency-Key`, replayed on retries."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key"], name="unique_idempotency_key")
        ]


class AuditLogEntry(models.Model):
    """A security-relevant action: who, when, from where, on what."""

    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_log"
    )
    action = models.CharField(max_length=64, db_index=True)
    actor = models.CharField(max_length=200, help_text="user:<name>, key:<prefix> or system")
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    target = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "audit log entries"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} by {self.actor}"
