from django.contrib import admin, messages

from adapters.models import AdapterEvaluation, AdapterSettings, AdapterVersion
from adapters.services import adapter_version_activate
from tenants.errors import DomainError


@admin.register(AdapterVersion)
class AdapterVersionAdmin(admin.ModelAdmin):
    """Versions list and detail; activation goes through the same service as the API."""

    list_display = ["tenant", "version", "method", "is_active", "status", "training_samples",
                    "eval_loss", "size_bytes", "created_at", "activated_at"]
    list_filter = ["is_active", "status", "method", "tenant__plan"]
    search_fields = ["tenant__slug", "sha256", "job__id"]
    list_select_related = ["tenant", "job", "parent"]
    readonly_fields = [f.name for f in AdapterVersion._meta.fields]
    actions = ["activate_version", "activate_version_force"]

    @admin.display(description="version", ordering="number")
    def version(self, obj):
        return obj.version

    @admin.display(description="eval loss")
    def eval_loss(self, obj):
        return (obj.eval_metrics or {}).get("eval_loss")

    def has_add_permission(self, request):
        return False  # versions come from finished training jobs only

    def _activate(self, request, queryset, *, force: bool):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to activate.",
                              level=messages.ERROR)
            return
        version = queryset.get()
        try:
            adapter_version_activate(version=version, force=force,
                                     actor=f"user:{request.user.get_username()}",
                                     ip_address=request.META.get("REMOTE_ADDR"),
                                     reason="admin")
        except DomainError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)
            return
        self.message_user(request, f"{version.tenant.slug} now serves {version.version}.")

    @admin.action(description="Activate the selected version")
    def activate_version(self, request, queryset):
        self._activate(request, queryset, force=False)

    @admin.action(description="Activate the selected version even if its eval loss is worse")
    def activate_version_force(self, request, queryset):
        self._activate(request, queryset, force=True)


@admin.register(AdapterSettings)
class AdapterSettingsAdmin(admin.ModelAdmin):
    """Read-only: a change goes through `adapter_settings_update` (validated and audited), via
    the API's or the dashboard's settings."""

    list_display = ["tenant", "ab_test_enabled", "auto_promote_ab_winner"]
    readonly_fields = ["tenant", "ab_test_enabled", "ab_test_versions", "auto_promote_ab_winner"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(AdapterEvaluation)
class AdapterEvaluationAdmin(admin.ModelAdmin):
    """Each version's evaluation after its job (read-only: the worker writes it)."""

    list_display = ["version", "status", "compared_with", "generations", "seconds",
                    "finished_at"]
    list_filter = ["status"]
    search_fields = ["version__tenant__slug"]
    list_select_related = ["version__tenant"]
    readonly_fields = [f.name for f in AdapterEvaluation._meta.fields]

    def has_add_permission(self, request):
        return False
