"""Domain errors: what services raise when a business rule refuses a request.

Services (and selectors) know nothing of HTTP: they raise one of these kinds with a
machine-readable `code`, a human `message` and optional `details`. The API maps each kind to an
HTTP status in exactly one place (`tenants.api.errors.STATUS_BY_KIND`); the dashboard shows the
same errors as form errors.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal with a machine-readable code; the base of every kind below (answers 400)."""

    def __init__(self, code: str, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


class InvalidInput(DomainError):
    """The request's content breaks a rule (400)."""


class NotPermitted(DomainError):
    """The principal may not do this (403)."""


class NotFound(DomainError):
    """The object does not exist for this tenant (404; the same answer as another tenant's)."""


class Conflict(DomainError):
    """The object's current state refuses the action (409): not ready, quota spent, running."""


class Gone(DomainError):
    """The object existed and was removed (410)."""


class TooLarge(DomainError):
    """The content is larger than allowed (413)."""


class UnsupportedMedia(DomainError):
    """The content type is not one this endpoint reads (415)."""


class LimitReached(DomainError):
    """A usage limit is spent for now (429): the plan's monthly training jobs, say."""


class Unavailable(DomainError):
    """A part the request needs is down or not configured (503)."""


class PlatformFault(DomainError):
    """The platform's own state is wrong, not the request (500): e.g. a stored file that no
    longer matches its recorded sha256."""
