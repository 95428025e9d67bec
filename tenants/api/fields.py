"""Input fields and validators every app's API shares (so a text field means the same everywhere).

* `StrictCharField`: text only; numbers, booleans and objects are refused, not stringified, and
  whitespace-only text is refused without trimming what is stored.
* `JsonMaxBytes`: a validator for free-form JSON (`metadata`) that caps its serialized size.
"""

from __future__ import annotations

import json

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers, booleans and objects instead of stringifying them, and
    refuses whitespace-only text without trimming what it stores."""

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        if not self.allow_blank and not data.strip():
            self.fail("blank")
        return super().to_internal_value(data)


class JsonMaxBytes:
    """Field validator: the value, serialized as JSON, is at most `limit` bytes."""

    def __init__(self, limit: int):
        self.limit = limit

    def __call__(self, value) -> None:
        if len(json.dumps(value)) > self.limit:
            raise serializers.ValidationError(f"At most {self.limit} bytes of JSON.")
