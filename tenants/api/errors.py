"""One error envelope for every API error: {"error": {"code", "message", "details"}}."""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from tenants import errors as domain

logger = logging.getLogger(__name__)

# The one place where a domain error's kind becomes an HTTP status.
STATUS_BY_KIND: dict[type[domain.DomainError], int] = {
    domain.InvalidInput: 400,
    domain.NotPermitted: 403,
    domain.NotFound: 404,
    domain.Conflict: 409,
    domain.Gone: 410,
    domain.TooLarge: 413,
    domain.UnsupportedMedia: 415,
    domain.LimitReached: 429,
    domain.Unavailable: 503,
    domain.PlatformFault: 500,
}


def domain_error_status(exc: domain.DomainError) -> int:
    for kind in type(exc).__mro__:
        if kind in STATUS_BY_KIND:
            return STATUS_BY_KIND[kind]
    return 400


class ApiError(exceptions.APIException):
    """A business-rule refusal with a machine-readable code and optional details.

    Services raise it (e.g. quota used up, not ready for training) and the envelope carries it.
    """

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, code: str, message: str, *, details=None, status_code: int | None = None):
        super().__init__(detail=message, code=code)
        self.error_code = code
        self.message = message
        self.details = details or {}
        if status_code is not None:
            self.status_code = status_code


_DEFAULT_CODES = {
    400: "invalid_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def envelope(code: str, message: str, details=None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


DATABASE_UNAVAILABLE_MESSAGE = "The database is unavailable or busy; retry shortly."


def database_retry_after() -> int:
    """Seconds a client is told to wait when the database is unavailable (503)."""
    from django.conf import settings

    return int(getattr(settings, "DATABASE_RETRY_AFTER_SECONDS", 5))


def _first_code(detail) -> str | None:
    codes = detail if isinstance(detail, str) else None
    if codes:
        return codes
    return None


def api_exception_handler(exc, context):
    """DRF's handler, reshaped into the envelope; anything unexpected becomes a 500 envelope."""
    if isinstance(exc, domain.DomainError):
        return Response(
            envelope(exc.code, exc.message, exc.details), status=domain_error_status(exc)
        )
    if isinstance(exc, ApiError):
        return Response(
            envelope(exc.error_code, exc.message, exc.details), status=exc.status_code
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, OperationalError | InterfaceError):
        # The database is down or the connection was cut: a retry later can succeed.
        logger.warning("Database unavailable: %s", exc)
        wait = database_retry_after()
        return Response(envelope("database_unavailable", DATABASE_UNAVAILABLE_MESSAGE,
                                 {"retry_after_seconds": wait}),
                        status=503, headers={"Retry-After": str(wait)})
    elif isinstance(exc, RequestDataTooBig):
        return Response(
            envelope("payload_too_large", "The request body is larger than the server accepts."),
            status=413,
        )
    elif isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        # Django's form parsers stop at DATA_UPLOAD_MAX_NUMBER_FIELDS / _FILES (a 400 of
        # Django's own, raised inside DRF's request.data, where it would otherwise be a 500).
        return Response(envelope("too_many_fields", str(exc)), status=400)

    response = exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled API error", exc_info=exc)
        return Response(
            envelope("server_error", "An unexpected error occurred. It has been logged."),
            status=500,
        )

    status_code = response.status_code
    code = _DEFAULT_CODES.get(status_code, "error")
    details: dict = {}
    if isinstance(exc, exceptions.ValidationError):
        code = "validation_error"
        message = "The request has invalid fields."
        details = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
    elif isinstance(exc, exceptions.ParseError):
        code = "malformed_json" if "JSON" in str(exc.detail) else "parse_error"
        message = str(exc.detail)
    elif isinstance(exc, exceptions.APIException):
        detail = exc.detail
        message = str(detail) if not isinstance(detail, dict | list) else "Request failed."
        exc_codes = exc.get_codes()
        if isinstance(exc_codes, str) and exc_codes not in {
            "error", "not_authenticated", "authentication_failed", "permission_denied",
            "not_found", "method_not_allowed", "throttled", "parse_error", "invalid",
        }:
            code = exc_codes
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            details = {"retry_after_seconds": int(exc.wait)}
    else:  # pragma: no cover - exception_handler only answers APIException/Http404/PermissionDenied
        message = "Request failed."
    response.data = envelope(code, message, details)
    return response


def _error_json(status_code: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(envelope(code, message), status=status_code)


@csrf_exempt  # a POST or DELETE to an unknown route (`.../records/1.5`) gets the envelope too,
# not CSRF's HTML 403: the API authenticates by key, never by cookie, and this view changes nothing
def api_not_found(request, rest: str = ""):
    """Unknown routes under /v1/ answer with the envelope."""
    return _error_json(404, "not_found", f"No API route matches {request.path!r}.")


def handler404(request, exception=None):
    if request.path.startswith("/v1/"):
        return _error_json(404, "not_found", "Not found.")
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request):
    if request.path.startswith("/v1/"):
        return _error_json(500, "server_error", "An unexpected error occurred. It has been logged.")
    from django.views.defaults import server_error

    return server_error(request)
