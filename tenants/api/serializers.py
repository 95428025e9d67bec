"""Tenant API bodies, and the serializer helpers every app's API shares.

Shared (import these rather than writing another copy):
* `StrictSerializer`: refuses unknown fields, so a typo ("learning_rte") is an error, not a
  silently applied default.
* `flatten_errors` / `FlatErrorsMixin`: DRF's nested errors as flat paths
  (`{"messages[1].role": [...]}`), the path style of every error envelope's details.
* Fields and validators: `tenants.api.fields` (`StrictCharField`, `JsonMaxBytes`).
"""

from rest_framework import serializers

from tenants.models import ApiKey


def unknown_field_errors(data, known, message: str) -> dict[str, list[str]]:
    """`{name: [message]}` for each key of `data` that is not a declared field."""
    if not isinstance(data, dict):
        return {}
    return {name: [message] for name in sorted(set(data) - set(known))}


class StrictSerializer(serializers.Serializer):
    """Refuses unknown fields: a typo ("learning_rte") must not silently train with a default."""

    def validate(self, attrs):
        unknown = unknown_field_errors(self.initial_data, self.fields, "Unknown field.")
        if unknown:
            raise serializers.ValidationError(unknown)
        return attrs


def flatten_errors(detail, prefix: str = "") -> dict:
    """DRF's nested errors -> {"messages[1].role": ["..."]}, the path style used everywhere."""
    flat: dict = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                path = f"{prefix}[{key}]"
            elif key == "non_field_errors" and prefix:
                path = prefix
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            flat.update(flatten_errors(value, path))
    elif isinstance(detail, list) and detail and not all(isinstance(d, str) for d in detail):
        for index, value in enumerate(detail):
            if value:
                flat.update(flatten_errors(value, f"{prefix}[{index}]"))
    else:
        flat[prefix or "non_field_errors"] = [str(d) for d in detail] if isinstance(
            detail, list) else [str(detail)]
    return flat


class FlatErrorsMixin:
    """`is_valid(raise_exception=True)` raises the flattened errors (see `flatten_errors`)."""

    def is_valid(self, *, raise_exception=False):
        valid = super().is_valid(raise_exception=False)
        if not valid and raise_exception:
            raise serializers.ValidationError(flatten_errors(self.errors))
        return valid


class AbTestSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()
    versions = serializers.DictField(child=serializers.FloatField(), allow_empty=True)


class AutoTrainingSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)
    method = serializers.ChoiceField(choices=["sft", "dpo"], required=False)
    min_new_feedback = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False)


class TenantSettingsSerializer(serializers.Serializer):
    """The tenant settings document. Unknown keys are refused, not silently dropped.

    The types are checked here; each section is stored by the app that owns it (adapters: the
    A/B split and auto-promotion; training: automatic training, compute backend, base model;
    feedback: the corrections review queue and the per-user cap),
    whose registered validators run in `validate`."""

    lora_ab_test = AbTestSerializer(required=False)
    auto_training = AutoTrainingSerializer(required=False)
    auto_promote_ab_winner = serializers.BooleanField(required=False)
    # adapters: roll back by itself when the active version does significantly worse online.
    auto_rollback = serializers.BooleanField(required=False)
    compute_backend = serializers.ChoiceField(
        choices=["local", "slurm"], required=False, allow_null=True
    )
    # A name from the operator's BASE_MODELS (null: the platform's default); the training app's
    # registered validator checks the name and lists the choices.
    base_model = serializers.CharField(required=False, allow_null=True, allow_blank=True,
                                       max_length=100)
    # feedback: corrections wait for an admin's approval; at most N rows of one end user a job.
    review_corrections = serializers.BooleanField(required=False)
    max_examples_per_user = serializers.IntegerField(required=False, allow_null=True,
                                                     min_value=1, max_value=1_000_000)

    def to_internal_value(self, data):
        unknown = unknown_field_errors(data, self.fields, "Unknown setting.")
        if unknown:
            raise serializers.ValidationError(unknown)
        return super().to_internal_value(data)

    def validate(self, attrs):
        from tenants.services import tenant_settings_validators
        from tenants.settings_sections import SettingInvalid

        tenant = self.context["tenant"]
        errors = {}
        for key, validator in tenant_settings_validators().items():
            if key in attrs:
                try:
                    attrs[key] = validator(tenant, attrs[key])
                except SettingInvalid as exc:
                    errors[key] = exc.detail
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class ApiKeySerializer(serializers.ModelSerializer):
    is_active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id", "name", "prefix", "access", "created_at", "last_used_at", "revoked_at",
            "is_active",
        ]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    access = serializers.ChoiceField(choices=[ApiKey.READ_ONLY, ApiKey.READ_WRITE],
                                     default=ApiKey.READ_WRITE)
