from rest_framework import serializers

from tenants.models import ApiKey


class AbTestSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()
    versions = serializers.DictField(child=serializers.FloatField(), allow_empty=True)


class AutoTrainingSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)
    method = serializers.ChoiceField(choices=["sft", "dpo"], required=False)
    min_new_feedback = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False)


class TenantSettingsSerializer(serializers.Serializer):
    """The tenant settings document. Unknown keys are refused, not silently dropped."""

    lora_ab_test = AbTestSerializer(required=False)
    auto_training = AutoTrainingSerializer(required=False)
    auto_promote_ab_winner = serializers.BooleanField(required=False)
    compute_backend = serializers.ChoiceField(
        choices=["local", "slurm"], required=False, allow_null=True
    )

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: ["Unknown setting."] for name in unknown}
                )
        return super().to_internal_value(data)

    def validate(self, attrs):
        from tenants.services import tenant_settings_validators

        tenant = self.context["tenant"]
        errors = {}
        for key, validator in tenant_settings_validators().items():
            if key in attrs:
                try:
                    attrs[key] = validator(tenant, attrs[key])
                except serializers.ValidationError as exc:
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
