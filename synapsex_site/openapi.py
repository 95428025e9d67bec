"""OpenAPI post-processing: document what every API operation shares.

drf-spectacular documents each view's success answer; what the views share comes from one place
and was missing from the document: the Bearer API key, and the error envelope on every refusal
(400 validation, 401 no or bad key, 403 read-only key, 404 other tenant or unknown object,
409 conflicts, 413 too large, 415 media type, 429 rate limit with Retry-After). Without them a
client generator (and the schema fuzzer, tests/security/test_schema_fuzz.py) sees undocumented
answers. Registered in SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"].
"""

from __future__ import annotations

ERROR_ENVELOPE = {
    "type": "object",
    "description": "Every API error: a machine-readable code, a human message, and details "
                   "(per-field errors by path, e.g. `messages[1].content`).",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "example": "validation_error"},
                "message": {"type": "string"},
                "details": {"type": "object", "additionalProperties": True},
            },
            "required": ["code", "message", "details"],
        }
    },
    "required": ["error"],
}

ERROR_STATUSES = {
    "400": "Invalid request (validation_error, malformed_json, json_too_deep, null_character, "
           "invalid_unicode, too_many_fields, "
           "or a business rule such as not_ready_for_training)",
    "401": "No API key, or an invalid or revoked one",
    "403": "The key is read-only (read_only_key) or the plan does not allow the action",
    "404": "Unknown object, or a tenant the key does not belong to",
    "405": "Method not allowed",
    "409": "Conflict with the current state (e.g. job already ended, idempotency key reused)",
    "410": "Gone (e.g. an archived adapter version's files)",
    "413": "Request body or upload larger than the server accepts",
    "415": "Unsupported media type",
    "429": "Rate limit of this API key exceeded; see the Retry-After header",
}
SECURITY_SCHEME = "ApiKeyBearer"


def error_responses_postprocess(result, generator, request, public):
    """drf-spectacular postprocessing hook (signature fixed by drf-spectacular)."""
    components = result.setdefault("components", {})
    components.setdefault("schemas", {})["ErrorEnvelope"] = ERROR_ENVELOPE
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http", "scheme": "bearer", "bearerFormat": "sk-...",
        "description": "A tenant API key: `Authorization: Bearer sk-...`.",
    }
    reference = {"$ref": "#/components/schemas/ErrorEnvelope"}
    for path, operations in (result.get("paths") or {}).items():
        if not path.startswith("/v1/tenants/"):
            continue
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            operation["security"] = [{SECURITY_SCHEME: []}]
            responses = operation.setdefault("responses", {})
            for status, description in ERROR_STATUSES.items():
                entry = responses.setdefault(status, {"description": description})
                entry.setdefault("content", {"application/json": {"schema": reference}})
            responses["429"].setdefault("headers", {
                "Retry-After": {"schema": {"type": "integer"},
                                "description": "Seconds until the key may call again"}})
    return result


# The API-key authentication, documented as an HTTP bearer scheme (drf-spectacular otherwise
# warns that it cannot resolve the authenticator, once per view). Registered on import: the root
# URL configuration imports this module.
from drf_spectacular.extensions import OpenApiAuthenticationExtension  # noqa: E402


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.ApiKeyAuthentication"
    name = SECURITY_SCHEME

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "sk-...",
                "description": "A tenant API key: `Authorization: Bearer sk-...`."}
