"""Training jobs, their loss curves and their event logs."""

import secrets

from django.db import models
from django.utils import timezone


def new_job_id() -> str:
    return f"train_{secrets.token_hex(6)}"


class TrainingJob(models.Model):
    """One SFT or DPO training run. The row exists before anything is queued.

    Status only moves forward: queued -> preparing -> running -> completed | failed | cancelled.
    """

    QUEUED = "queued"
    PREPARING = "preparing"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STATUS_CHOICES = [(s, s) for s in (QUEUED, PREPARING, RUNNING, COMPLETED, FAILED, CANCELLED)]
    TERMINAL = {COMPLETED, FAILED, CANCELLED}

    id = models.CharField(primary_key=True, max_length=32, default=new_job_id, editable=False)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE,
                               related_name="training_jobs")
    method = models.CharField(max_length=3,
                              choices=[("sft", "SFT"), ("dpo", "DPO"), ("kto", "KTO")])
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=QUEUED,
                              db_index=True)
    preset = models.CharField(max_length=40, blank=True)
    params = models.JSONField(default=dict, help_text="Validated hyperparameters")
    base_model = models.CharField(max_length=500)
    parent_version = models.ForeignKey("adapters.AdapterVersion", null=True, blank=True,
                                       on_delete=models.SET_NULL, related_name="child_jobs")
    triggered_by = models.CharField(max_length=20, default="api")
    backend = models.CharField(max_length=10, default="local")
    external_id = models.CharField(max_length=100, blank=True,
                                   help_text="Slurm job id or local process id")
    attempt = models.PositiveSmallIntegerField(default=1)

    progress = models.FloatField(default=0.0)
    current_epoch = models.PositiveIntegerField(default=0)
    total_epochs = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    resources = models.JSONField(default=dict, blank=True)

    training_samples = models.PositiveIntegerField(default=0)
    eval_samples = models.PositiveIntegerField(default=0)
    token_count = models.PositiveBigIntegerField(default=0)
    estimated_duration_minutes = models.FloatField(null=True, blank=True)
    estimated_cost = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    cost = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    gpu_hours = models.FloatField(default=0.0)
    compute_seconds = models.FloatField(default=0.0,
                                        help_text="Wall time of the trainer, for billing")
    tokens_per_second = models.FloatField(null=True, blank=True)

    snapshot_prefix = models.CharField(max_length=300, blank=True)
    snapshot_manifest = models.JSONField(default=dict, blank=True)
    work_dir = models.CharField(max_length=500, blank=True)
    events_offset = models.PositiveBigIntegerField(default=0)
    rq_job_id = models.CharField(max_length=100, blank=True)

    cancel_requested = models.BooleanField(default=False)
    failure_reason = models.CharField(max_length=500, blank=True)
    failure_category = models.CharField(max_length=40, blank=True)
    log_tail = models.TextField(blank=True)

    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "created_at"])]

    def __str__(self) -> str:
        return f"{self.id} ({self.method}, {self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL


class TrainingMetric(models.Model):
    """One logged point of a job's curves: a training step or an evaluation."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="metric_points")
    kind = models.CharField(max_length=5, choices=[("train", "train"), ("eval", "eval")],
                            default="train")
    step = models.PositiveIntegerField()
    epoch = models.FloatField(default=0)
    loss = models.FloatField(null=True, blank=True)
    eval_loss = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField(null=True, blank=True)
    grad_norm = models.FloatField(null=True, blank=True)
    samples_processed = models.PositiveBigIntegerField(null=True, blank=True)
    tokens_processed = models.PositiveBigIntegerField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    extra = models.JSONField(default=dict, blank=True, help_text="e.g. DPO rewards and margins")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["job_id", "kind", "step"]
        constraints = [
            models.UniqueConstraint(fields=["job", "kind", "step"], name="unique_metric_point")
        ]


class TrainingEvent(models.Model):
    """The job's event log: every status transition and notable happening, with a time."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=40)
    from_status = models.CharField(max_length=10, blank=True)
    to_status = models.CharField(max_length=10, blank=True)
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]


class Webhook(models.Model):
    """A tenant's URL that receives job state changes, signed with the tenant's webhook secret,
    and the tenant's adapter decisions on live traffic (`webhook_tenant_event_send`)."""

    JOB_EVENTS = ["queued", "running", "completed", "failed", "cancelled"]
    TENANT_EVENTS = ["adapter.ab_promoted", "adapter.auto_rolled_back"]
    EVENTS = JOB_EVENTS + TENANT_EVENTS

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE,
                               related_name="webhooks")
    url = models.URLField(max_length=1000)
    events = models.JSONField(default=list, blank=True,
                              help_text="Job statuses to send; empty means all of them")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.tenant_id}: {self.url}"

    def wants(self, status: str) -> bool:
        return self.is_active and (not self.events or status in self.events)


class WebhookDelivery(models.Model):
    """One state change sent (or being sent) to one webhook: the log of every attempt."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"

    webhook = models.ForeignKey(Webhook, null=True, on_delete=models.SET_NULL,
                                related_name="deliveries")
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    job = models.ForeignKey(TrainingJob, null=True, blank=True, on_delete=models.SET_NULL,
                            related_name="webhook_deliveries")
    event = models.CharField(max_length=40)
    url = models.URLField(max_length=1000)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, default=PENDING,
                              choices=[(s, s) for s in (PENDING, DELIVERED, FAILED)])
    attempts = models.PositiveSmallIntegerField(default=0)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "webhook deliveries"


class TrainingSettings(models.Model):
    """A tenant's training settings (one row per tenant, made on its first change): automatic
    training, the compute backend and the base model its jobs train on.

    No row means the defaults (read by `training.selectors.training_settings_get` without writing
    one); `training.services.training_settings_update` is the only writer.
    """

    METHOD_CHOICES = [("sft", "SFT"), ("dpo", "DPO")]
    BACKEND_CHOICES = [("local", "Local"), ("slurm", "Slurm")]

    tenant = models.OneToOneField("tenants.Tenant", on_delete=models.CASCADE,
                                  related_name="training_settings")
    auto_training_enabled = models.BooleanField(default=False, db_index=True)
    auto_training_method = models.CharField(max_length=3, choices=METHOD_CHOICES, default="sft")
    auto_training_min_new_feedback = models.PositiveIntegerField(default=50)
    compute_backend = models.CharField(
        max_length=10, choices=BACKEND_CHOICES, blank=True, default="",
        help_text="Blank: the platform's TRAINING_BACKEND.")
    base_model = models.CharField(
        max_length=100, blank=True, default="",
        help_text="A name from settings.BASE_MODELS; blank: settings.DEFAULT_BASE_MODEL.")

    class Meta:
        verbose_name_plural = "training settings"

    def __str__(self) -> str:
        return f"training settings of tenant {self.tenant_id}"

    @property
    def auto_training(self) -> dict:
        """The `auto_training` section of the settings document."""
        return {"enabled": self.auto_training_enabled, "method": self.auto_training_method,
                "min_new_feedback": self.auto_training_min_new_feedback}
