"""`Idempotency-Key` for POST endpoints: a retry gets the first response, nothing is written twice.

How it works: the key's `IdempotencyRecord` row is inserted in the SAME transaction as the
request's own writes. So either both commit (and a retry finds the stored response and replays
it) or neither does (and a retry simply runs again). Two concurrent requests with one key cannot
both write: the unique constraint (tenant, key) makes the second insert wait for the first
transaction and then fail, after which it replays the committed response.

Rules a client sees:
- same key, same request (method, path, query, body) -> the first response again, with the
  header `Idempotent-Replayed: true`;
- same key, different request -> 409 `idempotency_key_reused`;
- only successful (2xx) responses are kept; a refused request wrote nothing and may be retried;
- keys are remembered for `IDEMPOTENCY_TTL` (24 hours), then may be reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from tenants.errors import Conflict, InvalidInput
from tenants.models import IdempotencyRecord, Tenant

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
IDEMPOTENCY_TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255


def idempotency_request_fingerprint(request) -> str:
    """sha256 of what makes two requests "the same": method, path, query and body.

    Multipart bodies are hashed field by field and file by file in chunks (the files are already
    on disk), so a large upload is never held in memory for this.
    """
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(b"\0" + request.path.encode())
    digest.update(b"\0" + request.META.get("QUERY_STRING", "").encode())
    if (request.content_type or "").startswith("multipart/"):
        for name in sorted(request.data.keys()):
            if name in request.FILES:
                continue
            digest.update(f"\0{name}={request.data.get(name)}".encode())
        for name in sorted(request.FILES.keys()):
            uploaded = request.FILES[name]
            digest.update(f"\0file:{name}:{uploaded.size}:".encode())
            for chunk in uploaded.chunks():
                digest.update(chunk)
            uploaded.seek(0)
    else:
        digest.update(b"\0" + request._request.body)
    return digest.hexdigest()


def _replay(record: IdempotencyRecord) -> Response:
    response = Response(record.response_body, status=record.response_status)
    response[REPLAYED_HEADER] = "true"
    return response


def idempotent_response(request, *, tenant: Tenant, handler: Callable[[], Response]) -> Response:
    """Run `handler` at most once per (tenant, Idempotency-Key); see the module docstring."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return handler()
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(
            "invalid_idempotency_key",
            f"The {IDEMPOTENCY_HEADER} header must be 1-{MAX_KEY_LENGTH} characters.",
            details={"header": IDEMPOTENCY_HEADER})
    fingerprint = idempotency_request_fingerprint(request)
    with transaction.atomic():
        record = _record_claim(tenant=tenant, key=key, fingerprint=fingerprint)
        if record.response_status is not None:
            return _replay(record)
        response = handler()
        if 200 <= response.status_code < 300:
            record.response_status = response.status_code
            record.response_body = json.loads(JSONRenderer().render(response.data) or b"null")
            record.save(update_fields=["response_status", "response_body"])
        else:
            record.delete()
        return response


def _record_claim(*, tenant: Tenant, key: str, fingerprint: str) -> IdempotencyRecord:
    """Insert this request's record, or return the stored one for a retry.

    Must run inside the caller's transaction. A concurrent request holding the same key makes
    the insert wait (PostgreSQL: on the unique index; SQLite: on the write lock) until the other
    transaction ends; if that one committed, the insert fails and we read its response.
    """
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(
                tenant=tenant, key=key, request_fingerprint=fingerprint)
    except IntegrityError:
        pass
    existing = IdempotencyRecord.objects.select_for_update().get(tenant=tenant, key=key)
    if existing.created_at < timezone.now() - IDEMPOTENCY_TTL:
        existing.delete()
        return IdempotencyRecord.objects.create(
            tenant=tenant, key=key, request_fingerprint=fingerprint)
    if existing.request_fingerprint != fingerprint:
        raise Conflict(
            "idempotency_key_reused",
            f"This {IDEMPOTENCY_HEADER} was already used for a different request. Use a new key "
            "for a new request; reuse a key only to retry the very same request.",
            details={"header": IDEMPOTENCY_HEADER},
        )
    if existing.response_status is None:  # pragma: no cover - only visible without row locks
        raise Conflict("idempotency_request_in_progress",
                       "A request with this key is still being processed; retry shortly.")
    return existing
