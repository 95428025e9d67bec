"""The shared API input helpers (tenants.api.fields / tenants.api.serializers) every app uses."""

from rest_framework import serializers

from tenants.api.fields import JsonMaxBytes, StrictCharField
from tenants.api.serializers import FlatErrorsMixin, StrictSerializer, flatten_errors


class _Item(serializers.Serializer):
    role = serializers.ChoiceField(choices=["user", "assistant"])
    content = StrictCharField(max_length=20)


class _Body(FlatErrorsMixin, StrictSerializer):
    name = StrictCharField(max_length=10)
    items = _Item(many=True)
    metadata = serializers.DictField(required=False, default=dict, validators=[JsonMaxBytes(20)])


def _errors(data) -> dict:
    body = _Body(data=data)
    try:
        body.is_valid(raise_exception=True)
    except serializers.ValidationError as exc:
        return exc.detail
    return {}


def test_nested_errors_come_back_as_flat_paths():
    errors = _errors({"name": "ok", "items": [{"role": "user", "content": "hi"},
                                              {"role": "robot", "content": "hi"}]})
    assert list(errors) == ["items[1].role"]
    assert "not a valid choice" in str(errors["items[1].role"][0])


def test_a_strict_char_field_refuses_numbers_and_blank_text_without_trimming():
    errors = _errors({"name": 12, "items": [{"role": "user", "content": "   "}]})
    assert set(errors) == {"name", "items[0].content"}
    body = _Body(data={"name": " a ", "items": [{"role": "user", "content": " b "}]})
    assert body.is_valid(), body.errors
    assert body.validated_data["name"] == " a "


def test_unknown_fields_are_refused_once_the_known_ones_are_valid():
    errors = _errors({"name": "ok", "items": [], "nmae": "typo"})
    assert errors == {"nmae": ["Unknown field."]}


def test_json_metadata_is_capped_by_its_serialized_size():
    errors = _errors({"name": "ok", "items": [], "metadata": {"k": "x" * 30}})
    assert errors == {"metadata": ["At most 20 bytes of JSON."]}
    assert _errors({"name": "ok", "items": [], "metadata": {"k": "x"}}) == {}


def test_flatten_errors_keeps_top_level_non_field_errors():
    assert flatten_errors(["whole body is wrong"]) == {"non_field_errors": ["whole body is wrong"]}
    assert flatten_errors({"a": {"non_field_errors": ["bad"]}}) == {"a": ["bad"]}
