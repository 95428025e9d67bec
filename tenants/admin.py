"""Operators' admin: tenants, plans, keys (secret shown once on creation), members, audit log."""

from django.contrib import admin, messages

from tenants.models import ApiKey, AuditLogEntry, IdempotencyRecord, Membership, Plan, Tenant
from tenants.services import api_key_create, api_key_revoke


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "monthly_job_quota", "max_lora_versions",
                    "sft_price_per_1000", "dpo_price_per_1000"]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "plan", "created_at"]
    list_filter = ["plan"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]
    exclude = ["webhook_secret"]
    actions = ["issue_read_write_key"]

    @admin.action(description="Issue a read-write API key (shown once)")
    def issue_read_write_key(self, request, queryset):
        for tenant in queryset:
            _, secret = api_key_create(tenant=tenant, name="issued in admin",
                                       created_by=request.user)
            self.message_user(request, f"New key for {tenant.slug} (copy it now, it is shown "
                              f"only once): {secret}", messages.WARNING)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "tenant", "name", "access", "created_at", "last_used_at",
                    "revoked_at"]
    list_filter = ["access", "tenant"]
    search_fields = ["prefix", "name", "tenant__slug"]
    fields = ["tenant", "name", "access", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ["prefix", "created_at", "last_used_at", "revoked_at"]
        return ["tenant", "prefix", "created_at", "last_used_at", "revoked_at"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        key, secret = api_key_create(tenant=obj.tenant, access=obj.access, name=obj.name,
                                     created_by=request.user)
        obj.pk = key.pk
        obj.__dict__.update(key.__dict__)
        self.message_user(request, f"API key created. Copy it now, it is shown only once: "
                          f"{secret}", messages.WARNING)

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset:
            api_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role"]
    list_filter = ["role", "tenant"]


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "action", "actor", "tenant", "target", "ip_address"]
    list_filter = ["action", "tenant"]
    search_fields = ["actor", "target"]
    readonly_fields = [f.name for f in AuditLogEntry._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # Append-only: an operator (or a stolen admin session) must not erase the trail.
        return False


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ["tenant", "key", "response_status", "created_at"]
    list_filter = ["tenant"]
