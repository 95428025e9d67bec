"""Request validation for the training API: the seed's parameters, defaults and API.md's ranges."""

from __future__ import annotations

from rest_framework import serializers

from tenants.api.serializers import StrictSerializer
from training.models import Webhook
from training.parameters import (
    METHODS,
    PARAMETERS,
    PARAMETERS_BY_NAME,
    TARGET_MODULES_HELP,
    dpo_anchor_errors,
)

SCHEMA_FIELD_CLASSES = {"int": serializers.IntegerField, "float": serializers.FloatField,
                        "json": serializers.JSONField}


def _greater_than_zero(value):
    if not value > 0:
        raise serializers.ValidationError("Must be greater than 0.")


def parameter_field(name: str) -> serializers.Field:
    """The serializer field of one parameter of `training.parameters` (type, bounds, null)."""
    parameter = PARAMETERS_BY_NAME[name]
    options: dict = {"required": False}
    if parameter.minimum is not None:
        options["min_value"] = parameter.minimum
    if parameter.maximum is not None:
        options["max_value"] = parameter.maximum
    if parameter.nullable:
        options["allow_null"] = True
    if parameter.positive:
        options["validators"] = [_greater_than_zero]
    if parameter.help_text:
        options["help_text"] = parameter.help_text
    return SCHEMA_FIELD_CLASSES[parameter.kind](**options)


class _TrainBase(StrictSerializer):
    preset = serializers.CharField(required=False, allow_blank=True)
    base_model = serializers.CharField(required=False, allow_blank=True, max_length=200)
    continue_from = serializers.CharField(required=False, allow_blank=True, allow_null=True,
                                          max_length=20)
    dry_run = serializers.BooleanField(required=False, default=False)

    # The parameters every method takes; a subclass adds its method's own (training.parameters).
    PARAM_FIELDS = tuple(p.name for p in PARAMETERS if p.methods == METHODS)

    def get_fields(self):
        fields = super().get_fields()
        for name in self.PARAM_FIELDS:
            fields[name] = parameter_field(name)
        return fields

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


class LoraTrainSerializer(_TrainBase):
    """POST /train/lora: supervised fine-tuning of a LoRA adapter (the seed's defaults)."""

    PARAM_FIELDS = _TrainBase.PARAM_FIELDS + ("min_feedback_count", "replay_rows",
                                                 "kl_to_base", "replay_weight",
                                                 "replay_traffic_rows")


class DpoTrainSerializer(_TrainBase):
    """POST /train/dpo: preference optimisation (the seed's defaults)."""

    PARAM_FIELDS = _TrainBase.PARAM_FIELDS + ("min_preference_pairs", "beta", "sft_weight",
                                                 "replay_rows", "kl_to_base")

    def validate(self, attrs):
        errors = dpo_anchor_errors(attrs)
        if errors:
            raise serializers.ValidationError(errors)
        return super().validate(attrs)


class KtoTrainSerializer(_TrainBase):
    """POST /train/kto: KTO on unpaired thumbs, ratings and corrections."""

    PARAM_FIELDS = _TrainBase.PARAM_FIELDS + ("min_feedback_count", "beta")

    def validate_batch_size(self, value):
        from training.parameters import KTO_BATCH_SIZE_MESSAGE
        from training.trainer.config import KTO_MIN_BATCH_SIZE

        if value < KTO_MIN_BATCH_SIZE:
            raise serializers.ValidationError(KTO_BATCH_SIZE_MESSAGE)
        return value


class WebhookCreateSerializer(StrictSerializer):
    url = serializers.CharField(max_length=1000)
    events = serializers.ListField(child=serializers.ChoiceField(choices=Webhook.EVENTS),
                                   required=False, allow_empty=True)


class ErasureSerializer(StrictSerializer):
    user_id = serializers.CharField(max_length=200)
