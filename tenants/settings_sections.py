"""Validating a change of one section of the tenant settings document.

The apps that own settings keys (adapters: the A/B split and auto-promotion; training: automatic
training, compute backend, base model; feedback: the review queue and the per-user cap) each
check a change of their keys with `settings_section_validate`: unknown keys are refused, every
known key's value goes through that key's check, and all refusals are collected by key and
raised together as one InvalidInput `validation_error` (details `{key: [messages]}`, or
`{key: {field: [messages]}}` for a key whose value is an object), the API's one answer shape for
bad settings. The tenants app's change service uses it for the keys no section owns.

Checks raise `SettingInvalid`, not a framework error, so services stay free of DRF; the API's
settings serializer runs the registered checks too and turns the same `detail` into its answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tenants.errors import InvalidInput

UNKNOWN_SETTING = "Unknown setting."
INVALID_FIELDS = "The request has invalid fields."


def _nested(detail: Any) -> Any:
    if isinstance(detail, Mapping):
        return {str(key): _nested(value) for key, value in detail.items()}
    if isinstance(detail, list | tuple):
        return [_nested(item) for item in detail]
    return str(detail)


class SettingInvalid(ValueError):
    """A setting's value is refused. `detail` is a list of messages, or a map of field (or
    version label) to messages for a value that is an object; a single message becomes a list
    of one."""

    def __init__(self, detail: str | list | dict):
        self.detail = [str(detail)] if isinstance(detail, str) else _nested(detail)
        super().__init__(str(self.detail))


# (tenant, value) -> the value to store (normalised); raises SettingInvalid.
SettingCheck = Callable[[Any, Any], Any]


def settings_section_validate(
    *, tenant, changes: Mapping[str, Any], checks: Mapping[str, SettingCheck | None],
) -> dict[str, Any]:
    """Validate `changes` of a section whose keys are those of `checks`; returns the changes
    with each checked value replaced by what its check returned.

    A key outside `checks` is refused with "Unknown setting."; a key whose check is None is
    accepted as given (its type was checked elsewhere). Every refusal is collected before one
    InvalidInput `validation_error` is raised with the per-key details, so nothing is stored.
    """
    errors: dict[str, Any] = {key: [UNKNOWN_SETTING]
                              for key in sorted(set(changes) - set(checks))}
    validated = dict(changes)
    for key, check in checks.items():
        if key not in changes or check is None:
            continue
        try:
            validated[key] = check(tenant, changes[key])
        except SettingInvalid as exc:
            errors[key] = exc.detail
    if errors:
        raise InvalidInput("validation_error", INVALID_FIELDS, details=errors)
    return validated
