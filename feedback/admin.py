"""Operators browse feedback, conversations and datasets by tenant, type and date.

Everything shown is what is stored: PII-redacted text and redaction counts, never the values.
"""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from feedback.models import (
    Conversation,
    Dataset,
    DatasetRecord,
    Feedback,
    FeedbackCounterShard,
    FeedbackSettings,
    Message,
)


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ["id", "tenant", "type", "conversation_external_id", "message_external_id",
                    "user_id", "rating", "is_latest", "excluded_reason", "review_status",
                    "created_at"]
    list_filter = ["tenant", "type", "is_latest", "excluded_reason", "pii_hold", "review_status",
                   "created_at"]
    search_fields = ["conversation_external_id", "message_external_id", "user_id", "correction"]
    date_hierarchy = "created_at"
    list_select_related = ["tenant"]
    raw_id_fields = ["conversation", "message"]


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["position", "external_id", "role", "content", "served_by_version",
              "pii_redactions", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["position"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["external_id", "tenant", "source", "created_at", "updated_at"]
    list_filter = ["tenant", "source", "created_at"]
    search_fields = ["external_id"]
    date_hierarchy = "created_at"
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["external_id", "tenant", "conversation", "role", "position",
                    "served_by_version", "created_at"]
    list_filter = ["tenant", "role", "created_at"]
    search_fields = ["external_id", "content", "conversation__external_id"]
    date_hierarchy = "created_at"
    list_select_related = ["tenant", "conversation", "served_by_version"]
    raw_id_fields = ["conversation", "served_by_version"]


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "tenant", "type", "allow_rag", "allow_private_training",
                    "record_count", "duplicate_count", "created_at"]
    list_filter = ["tenant", "type", "allow_private_training", "allow_rag", "created_at"]
    search_fields = ["name"]
    date_hierarchy = "created_at"
    readonly_fields = ["records", "record_count", "duplicate_count", "pii_redaction_counts",
                       "last_validation_report"]

    @admin.display(description="Records")
    def records(self, obj) -> str:
        # A link, not an inline: a dataset can hold a million records.
        if obj.pk is None:
            return "-"
        url = reverse("admin:feedback_datasetrecord_changelist")
        return format_html('<a href="{}?dataset__id__exact={}">{} records</a>', url, obj.pk,
                           obj.record_count)


@admin.register(DatasetRecord)
class DatasetRecordAdmin(admin.ModelAdmin):
    list_display = ["id", "dataset", "tenant", "content_hash", "user_id", "created_at"]
    list_filter = ["tenant", "dataset__type", "created_at"]
    search_fields = ["content_hash", "dataset__name", "user_id"]
    date_hierarchy = "created_at"
    raw_id_fields = ["dataset"]


@admin.register(FeedbackCounterShard)
class FeedbackCounterShardAdmin(admin.ModelAdmin):
    """Read-only: a tenant's counters are the sum of its shards (the stats endpoint shows it)."""

    list_display = ["tenant", "shard", "updated_at"]
    list_filter = ["tenant"]
    readonly_fields = ["tenant", "shard", "counts", "last_feedback_id", "updated_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(FeedbackSettings)
class FeedbackSettingsAdmin(admin.ModelAdmin):
    """Read here; changed by the tenant (PATCH .../settings or the dashboard), which audits it."""

    list_display = ["tenant", "review_corrections", "max_examples_per_user", "updated_at"]
    readonly_fields = ["tenant", "review_corrections", "max_examples_per_user", "updated_at"]

    def has_add_permission(self, request) -> bool:
        return False
