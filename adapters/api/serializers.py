"""Serializers of the adapters API: version bodies, activation, chat-completions input."""

from django.conf import settings
from rest_framework import serializers

from adapters.models import AdapterVersion


def data_manifest_summary(manifest: dict) -> dict:
    """The snapshot manifest without its (long) id lists: counts, files, digests."""
    summary = {}
    for key, value in (manifest or {}).items():
        if key.endswith("_ids"):
            summary[f"{key[:-4]}_count"] = len(value) if isinstance(value, list) else None
        else:
            summary[key] = value
    return summary


class AdapterVersionSerializer(serializers.ModelSerializer):
    """One adapter version as the API shows it (the seed's fields first)."""

    version = serializers.CharField(read_only=True)
    job_id = serializers.CharField(read_only=True, allow_null=True)
    ab_weight = serializers.SerializerMethodField()
    lineage = serializers.SerializerMethodField()
    hyperparameters = serializers.SerializerMethodField()

    class Meta:
        model = AdapterVersion
        fields = [
            "version", "created_at", "training_samples", "is_active",
            "job_id", "method", "base_model", "eval_metrics", "size_bytes", "sha256", "files",
            "lineage", "hyperparameters", "status", "needs_retraining", "ab_weight",
            "activated_at", "archived_at",
        ]
        read_only_fields = fields

    def get_ab_weight(self, obj) -> float | None:
        return (self.context.get("ab_weights") or {}).get(obj.version)

    def get_lineage(self, obj) -> dict:
        manifest = obj.manifest or {}
        data = manifest.get("data") if isinstance(manifest.get("data"), dict) else {}
        return {
            "parent_version": obj.parent.version if obj.parent_id and obj.parent else None,
            "job_id": obj.job_id,
            "data_snapshot_sha256": data.get("snapshot_sha256"),
            "data_manifest": data_manifest_summary(obj.data_manifest),
        }

    def get_hyperparameters(self, obj) -> dict:
        value = (obj.manifest or {}).get("hyperparameters")
        return value if isinstance(value, dict) else {}


class ActivateSerializer(serializers.Serializer):
    force = serializers.BooleanField(
        default=False, help_text="Activate even if its eval_loss is worse than the active one's")


class ChatMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant"])
    content = serializers.CharField(allow_blank=False, trim_whitespace=False, max_length=20000)

    def validate_content(self, value):
        if not value.strip():
            raise serializers.ValidationError("Content must not be empty.")
        return value


class ChatCompletionSerializer(serializers.Serializer):
    """OpenAI chat-completions input. Unknown OpenAI fields are ignored; `temperature` defaults
    to 0 (greedy, reproducible) rather than OpenAI's 1; `stream: true` answers server-sent
    events."""

    messages = ChatMessageSerializer(many=True, allow_empty=False, max_length=200)
    max_tokens = serializers.IntegerField(min_value=1, required=False)
    temperature = serializers.FloatField(min_value=0.0, max_value=2.0, default=0.0)
    # Nucleus sampling, used only when temperature > 0 (else decoding is greedy).
    top_p = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    conversation_id = serializers.CharField(max_length=200, required=False, allow_blank=False)
    model = serializers.CharField(max_length=200, required=False, allow_blank=True)
    adapter_version = serializers.CharField(max_length=50, required=False, allow_null=True)
    user = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    stream = serializers.BooleanField(default=False)
    n = serializers.IntegerField(default=1)

    def validate_max_tokens(self, value):
        limit = settings.CHAT_MAX_NEW_TOKENS
        if value > limit:
            raise serializers.ValidationError(
                f"Ensure this value is less than or equal to {limit}.")
        return value

    def validate_top_p(self, value):
        if value <= 0:
            raise serializers.ValidationError("Ensure this value is greater than 0.")
        return value

    def validate_n(self, value):
        if value != 1:
            raise serializers.ValidationError("Only n=1 is supported.")
        return value

    def validate_messages(self, value):
        if value[-1]["role"] != "user":
            raise serializers.ValidationError("The last message must be a user message.")
        for index, message in enumerate(value):
            if message["role"] == "system" and index != 0:
                raise serializers.ValidationError(
                    f"messages[{index}]: a system message is only allowed first.")
        return value

    def validate(self, attrs):
        attrs.setdefault("max_tokens", min(64, settings.CHAT_MAX_NEW_TOKENS))
        return attrs
