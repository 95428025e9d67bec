"""Request hardening that must happen before any view reads a body, and security headers.

`RequestHardeningMiddleware` runs right after Django's SecurityMiddleware, before sessions,
CSRF, DRF or any view, so a hostile request is refused before it costs memory or reaches code
that would turn it into a 500:

- Body size: `Content-Length` above the limit -> 413 at once, nothing read. JSON and other
  bodies are limited to `DATA_UPLOAD_MAX_MEMORY_SIZE` (env MAX_REQUEST_BYTES); multipart uploads
  to `MAX_UPLOAD_FILE_BYTES` plus room for the form fields (Django then streams the file to a
  temporary file in chunks, never whole into memory). A body without a Content-Length (chunked)
  is never read by Django's WSGI handler at all, so it cannot bypass the check.
- JSON nesting depth: Python's json parser recurses; 10,000 nested brackets raise RecursionError
  (a 500). JSON bodies are scanned without recursion and refused (400) above `JSON_MAX_DEPTH`.
- U+0000: PostgreSQL refuses NUL in text and jsonb columns, so a JSON string holding "\\u0000"
  anywhere (a metadata value, a dataset record) would become a 500 at the INSERT, possibly after
  other rows of the request were written. It is refused up front (400, naming the field path),
  as is a NUL in the query string, the path or a header.

Errors under /v1/ use the API's envelope; elsewhere a plain text response.

`SecurityHeadersMiddleware` adds the headers Django's settings do not cover: a Content Security
Policy for HTML pages (scripts only from this origin, no inline scripts; the dashboards load
Plotly from static/),
Permissions-Policy, Cross-Origin-Resource-Policy, and `Cache-Control: no-store` on API answers
(a key's secret is shown once and must not sit in a shared cache).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

from tenants.api.errors import DATABASE_UNAVAILABLE_MESSAGE, database_retry_after

API_PREFIX = "/v1/"
DEFAULT_JSON_MAX_DEPTH = 64
# Room for the multipart boundaries and small form fields around the one uploaded file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

# A whole JSON string (escapes included): taken out first, so brackets inside text do not count.
# Written unrolled (runs of plain characters, then one escape at a time): the same matches as
# '"(?:[^"\\]|\\.)*"', five times faster, since the engine no longer alternates per character.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# What is left becomes one signed byte per bracket (+1 opening, -1 closing), everything else
# deleted; the deepest nesting is the largest running sum. All of it runs in C: a Python loop over
# the tokens cost 30 ms a 1,000-conversation upload body (issue 16).
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_NUL_ESCAPE = re.compile(rb"\\u0000", re.IGNORECASE)
NUL_MESSAGE = "Null characters (U+0000) are not allowed."
# A \uD800-\uDFFF escape not paired with its other half decodes to a lone surrogate, which is not
# text: encoding it (to hash or store it) raises UnicodeEncodeError, a 500.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
SURROGATE_MESSAGE = "Unpaired surrogates (U+D800 to U+DFFF) are not valid text."


def _error(request, status: int, code: str, message: str, details: dict | None = None):
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"error": {"code": code, "message": message,
                                       "details": details or {}}}, status=status)
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def json_max_depth() -> int:
    return int(getattr(settings, "JSON_MAX_DEPTH", DEFAULT_JSON_MAX_DEPTH))


def body_limit_for(content_type: str) -> int:
    """The largest body accepted for a content type, in bytes."""
    if content_type.startswith("multipart/"):
        return int(settings.MAX_UPLOAD_FILE_BYTES) + MULTIPART_OVERHEAD_BYTES
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than `limit` (no recursion, no parse)."""
    steps = _JSON_STRING.sub(b"", body).translate(_BRACKET_STEPS, _NOT_BRACKETS)
    return max(accumulate(memoryview(steps).cast("b")), default=0) > limit


def _has_nul(text: str) -> bool:
    return "\x00" in text


def _has_lone_surrogate(text: str) -> bool:
    return LONE_SURROGATE.search(text) is not None


def nul_path(value, path: str = "", *, bad=_has_nul) -> str | None:
    """The first path (`metadata.k`, `conversations[0].messages[1].content`) whose key or text
    holds U+0000 (or what `bad` says), or None. Iterative, so it cannot recurse too deep."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if bad(item):
                return where or "body"
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                if bad(key):
                    return where or "body"
                stack.append((child, f"{where}.{key}" if where else key))
        elif isinstance(item, list):
            for index in range(len(item) - 1, -1, -1):
                stack.append((item[index], f"{where}[{index}]"))
    return None


def _json_nul_path(body: bytes, escape=_NUL_ESCAPE, bad=_has_nul) -> str | None:
    """Only decodes the body when the raw bytes contain a \\u0000 escape (cheap otherwise)."""
    if not escape.search(body):
        return None
    # An escaped backslash followed by "u0000" is harmless text; only a real NUL counts.
    try:
        return nul_path(json.loads(body), bad=bad)
    except (ValueError, RecursionError):
        return None  # not JSON: the parser answers that with its own 400


class RequestHardeningMiddleware:
    """See the module docstring."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        return self.get_response(request)

    def _refusal(self, request):
        if "\x00" in request.path or b"\x00" in unquote_to_bytes(
                request.META.get("QUERY_STRING", "")):
            return _error(request, 400, "null_character", NUL_MESSAGE,
                          {"query": [NUL_MESSAGE]})
        for name, value in request.META.items():
            if name.startswith("HTTP_") and isinstance(value, str) and "\x00" in value:
                header = name[5:].replace("_", "-").title()
                return _error(request, 400, "null_character", NUL_MESSAGE, {header: [NUL_MESSAGE]})
        if request.method not in BODY_METHODS:
            return None
        content_type = (request.META.get("CONTENT_TYPE") or "").lower()
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _error(request, 400, "invalid_request", "Content-Length is not a number.")
        limit = body_limit_for(content_type)
        if length > limit:
            return _error(request, 413, "payload_too_large",
                          f"The request body is {length} bytes; at most {limit} are accepted.",
                          {"limit_bytes": limit})
        if length and "json" in content_type:
            body = request.body  # within the limit: safe to read; Django caches it for the view
            max_depth = json_max_depth()
            if json_depth_exceeds(body, max_depth):
                return _error(request, 400, "json_too_deep",
                              f"The JSON body nests deeper than {max_depth} levels.",
                              {"max_depth": max_depth})
            where = _json_nul_path(body)
            if where is not None:
                return _error(request, 400, "null_character", NUL_MESSAGE, {where: [NUL_MESSAGE]})
            where = _json_nul_path(body, _SURROGATE_ESCAPE, _has_lone_surrogate)
            if where is not None:
                return _error(request, 400, "invalid_unicode", SURROGATE_MESSAGE,
                              {where: [SURROGATE_MESSAGE]})
        return None


def database_unavailable_response(request):
    """503 with Retry-After: the envelope under /v1/, plain text elsewhere."""
    response = _error(request, 503, "database_unavailable", DATABASE_UNAVAILABLE_MESSAGE,
                      {"retry_after_seconds": database_retry_after()})
    response["Retry-After"] = str(database_retry_after())
    return response


class DatabaseUnavailableMiddleware:
    """A view (dashboard page, admin, plain API view) that hits a database that is down, or a
    connection that was cut, answers 503 with `Retry-After` instead of a 500. DRF views get the
    same answer from `tenants.api.errors.api_exception_handler` (DRF catches its views'
    exceptions before a middleware could)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, OperationalError | InterfaceError):
            return database_unavailable_response(request)
        return None


# script-src needs 'unsafe-eval' for the vendored Plotly bundle (it compiles functions at run
# time; the charts stay blank without it). Inline scripts stay forbidden, which is what stops an
# injected <script>. Plotly's "strict" bundle would let 'unsafe-eval' go (see SECURITY.md).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"
# drf-spectacular's Swagger page loads its UI from a CDN with an inline bootstrap script.
# django-rq's admin pages use inline scripts.
CSP_EXEMPT_PREFIXES = ("/v1/docs/", "/admin/django-rq/")


class SecurityHeadersMiddleware:
    """See the module docstring. Headers a view set itself are left alone."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        path = request.path
        if path.startswith(API_PREFIX):
            response.headers.setdefault("Cache-Control", "no-store")
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("text/html") and not path.startswith(CSP_EXEMPT_PREFIXES):
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
