"""Request validation for the training API: the seed's parameters, defaults and API.md's ranges."""

from __future__ import annotations

from rest_framework import serializers

from training.models import Webhook

TARGET_MODULES_HELP = '"all-linear" or a list of module names such as ["q_proj", "v_proj"]'


class StrictSerializer(serializers.Serializer):
    """Refuses unknown fields: a typo ("learning_rte") must not silently train with a default."""

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError(
                {name: ["Unknown field."] for name in unknown})
        return attrs


class _TrainBase(StrictSerializer):
    preset = serializers.CharField(required=False, allow_blank=True)
    base_model = serializers.CharField(required=False, allow_blank=True, max_length=200)
    continue_from = serializers.CharField(required=False, allow_blank=True, allow_null=True,
                                          max_length=20)
    dry_run = serializers.BooleanField(required=False, default=False)
    lora_r = serializers.IntegerField(required=False, min_value=1, max_value=256)
    lora_alpha = serializers.IntegerField(required=False, min_value=1, max_value=512)
    lora_dropout = serializers.FloatField(required=False, min_value=0.0, max_value=0.9)
    target_modules = serializers.JSONField(required=False, help_text=TARGET_MODULES_HELP)
    epochs = serializers.IntegerField(required=False, min_value=1, max_value=100)
    learning_rate = serializers.FloatField(required=False, max_value=0.01)
    batch_size = serializers.IntegerField(required=False, min_value=1, max_value=512)
    warmup_ratio = serializers.FloatField(required=False, min_value=0.0, max_value=0.5)
    weight_decay = serializers.FloatField(required=False, min_value=0.0, max_value=1.0)
    max_length = serializers.IntegerField(required=False, min_value=16, max_value=32768)
    seed = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1)
    early_stopping_patience = serializers.IntegerField(required=False, min_value=1,
                                                       max_value=100, allow_null=True)

    def validate_learning_rate(self, value):
        if not value > 0:
            raise serializers.ValidationError("Must be greater than 0.")
        return value

    def validate_preset(self, value):
        from training.trainer.config import PRESETS

        if value and value not in PRESETS:
            raise serializers.ValidationError(f"Unknown preset; choose one of "
                                              f"{', '.join(sorted(PRESETS))}.")
        return value

    def validate_target_modules(self, value):
        if value == "all-linear":
            return value
        if isinstance(value, list) and value and all(
            isinstance(v, str) and v.replace("_", "").replace(".", "").isalnum() for v in value
        ) and len(value) <= 64:
            return value
        raise serializers.ValidationError(f"Must be {TARGET_MODULES_HELP}.")

    PARAM_FIELDS = ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "epochs",
                    "learning_rate", "batch_size", "warmup_ratio", "weight_decay", "max_length",
                    "seed", "early_stopping_patience")


class LoraTrainSerializer(_TrainBase):
    """POST /train/lora: supervised fine-tuning of a LoRA adapter (the seed's defaults)."""

    min_feedback_count = serializers.IntegerField(required=False, min_value=1,
                                                  max_value=10_000_000)
    PARAM_FIELDS = _TrainBase.PARAM_FIELDS + ("min_feedback_count",)


class DpoTrainSerializer(_TrainBase):
    """POST /train/dpo: preference optimisation (the seed's defaults)."""

    min_preference_pairs = serializers.IntegerField(required=False, min_value=1,
                                                    max_value=10_000_000)
    beta = serializers.FloatField(required=False, max_value=10.0)

    def validate_beta(self, value):
        if not value > 0:
            raise serializers.ValidationError("Must be greater than 0.")
        return value

    PARAM_FIELDS = _TrainBase.PARAM_FIELDS + ("min_preference_pairs", "beta")


class WebhookCreateSerializer(StrictSerializer):
    url = serializers.CharField(max_length=1000)
    events = serializers.ListField(child=serializers.ChoiceField(choices=Webhook.EVENTS),
                                   required=False, allow_empty=True)


class ErasureSerializer(StrictSerializer):
    user_id = serializers.CharField(max_length=200)
