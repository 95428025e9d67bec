"""Operators' admin for training: jobs with status, progress and their curves (inline metric
points and events), cancel and retry actions; webhooks and their deliveries."""

from django.contrib import admin, messages
from django.utils.html import format_html

from tenants.errors import DomainError
from training.models import (
    TrainingEvent,
    TrainingJob,
    TrainingMetric,
    TrainingSettings,
    Webhook,
    WebhookDelivery,
)
from training.services import InvalidTransition, training_job_cancel, training_job_retry


class TrainingEventInline(admin.TabularInline):
    model = TrainingEvent
    extra = 0
    can_delete = False
    fields = ["created_at", "type", "from_status", "to_status", "message"]
    readonly_fields = fields
    ordering = ["created_at", "id"]

    def has_add_permission(self, request, obj=None):
        return False


class TrainingMetricInline(admin.TabularInline):
    model = TrainingMetric
    extra = 0
    can_delete = False
    fields = ["kind", "step", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm",
              "tokens_per_second"]
    readonly_fields = fields
    ordering = ["kind", "step"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "method", "status", "progress_percent", "current_epoch",
                    "total_epochs", "loss", "triggered_by", "backend", "cost", "created_at"]
    list_filter = ["status", "method", "backend", "triggered_by"]
    search_fields = ["id", "tenant__slug", "external_id"]
    date_hierarchy = "created_at"
    actions = ["cancel_jobs", "retry_jobs"]
    inlines = [TrainingEventInline, TrainingMetricInline]
    readonly_fields = [f.name for f in TrainingJob._meta.fields] + ["loss_curve"]

    def has_add_permission(self, request):
        return False  # jobs start through the API / services, which check quotas and data

    @admin.display(description="progress")
    def progress_percent(self, obj):
        return f"{obj.progress * 100:.1f}%"

    @admin.display(description="loss")
    def loss(self, obj):
        value = (obj.metrics or {}).get("loss")
        return f"{value:.4f}" if isinstance(value, int | float) else "-"

    @admin.display(description="loss curve (step: loss)")
    def loss_curve(self, obj):
        points = obj.metric_points.filter(kind="train", loss__isnull=False).order_by("step")
        text = ", ".join(f"{p.step}: {p.loss:.4f}" for p in points[:500])
        return format_html("<div style='max-width:60em'>{}</div>", text or "-")

    @admin.action(description="Cancel the selected jobs")
    def cancel_jobs(self, request, queryset):
        actor = f"user:{request.user.get_username()}"
        for job in queryset:
            try:
                training_job_cancel(job=job, actor=actor,
                                    ip_address=request.META.get("REMOTE_ADDR"))
            except (DomainError, InvalidTransition) as exc:
                self.message_user(request, f"{job.id}: {exc}", messages.WARNING)
            else:
                self.message_user(request, f"{job.id} cancelled.")

    @admin.action(description="Retry the selected jobs (new job, same parameters)")
    def retry_jobs(self, request, queryset):
        actor = f"user:{request.user.get_username()}"
        for job in queryset:
            try:
                new, _ = training_job_retry(job=job, actor=actor)
            except DomainError as exc:
                self.message_user(request, f"{job.id}: {exc.message}", messages.WARNING)
            else:
                self.message_user(request, f"{job.id} retried as {new.id}.")


class WebhookDeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    can_delete = False
    fields = ["created_at", "event", "job", "status", "attempts", "response_status",
              "last_error"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "url", "is_active", "created_at"]
    list_filter = ["is_active"]
    inlines = [WebhookDeliveryInline]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "event", "job", "status", "attempts", "response_status",
                    "created_at"]
    list_filter = ["status", "event"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]


@admin.register(TrainingSettings)
class TrainingSettingsAdmin(admin.ModelAdmin):
    """Read-only: a change goes through `training_settings_update` (validated and audited), via
    the API's or the dashboard's settings."""

    list_display = ["tenant", "auto_training_enabled", "auto_training_method",
                    "compute_backend", "base_model"]
    readonly_fields = ["tenant", "auto_training_enabled", "auto_training_method",
                       "auto_training_min_new_feedback", "compute_backend", "base_model"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
