"""Webhooks: tenants' URLs that receive job state changes (queued, running, completed, failed,
cancelled) and tenant events (`webhook_tenant_event_send`: the adapters' automatic decisions).

Each delivery is a WebhookDelivery row first, then an RQ job on the `default` queue (ids only),
so a slow or failing receiver never touches the training job: the runner only writes rows.
Deliveries are retried by RQ with backoff (WEBHOOK_RETRY_INTERVALS, seconds) and every attempt
is logged on the row.

Signature: `X-SynapseX-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the
tenant's webhook secret>` and `X-SynapseX-Timestamp: <unix seconds>`. A receiver recomputes it
over the raw body and rejects old timestamps (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from urllib.parse import urlparse

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tenants.errors import Conflict, InvalidInput
from training import webhook_addresses
from training.models import TrainingJob, Webhook, WebhookDelivery

logger = logging.getLogger(__name__)

DEFAULT_RETRY_INTERVALS = [10, 60, 300, 1800]
TIMEOUT_SECONDS = 10
MAX_WEBHOOKS_PER_TENANT = 20


def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def webhook_url_validate(url: str) -> str:
    try:
        parsed = urlparse(url or "")
        port = parsed.port  # raises on a port that is not a number or out of range
    except ValueError:
        parsed, port = None, None
    if (parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc
            or not parsed.hostname or port == 0):
        raise InvalidInput("validation_error", "The request has invalid fields.",
                           details={"url": ["Only absolute http:// or https:// URLs are "
                                            "accepted."]})
    try:
        webhook_addresses.check_at_registration(url)
    except webhook_addresses.AddressRefused as exc:
        raise InvalidInput(
            "webhook_address_forbidden",
            "Webhooks may only be sent to public internet addresses.",
            details={"url": [f"{exc.host} is or resolves to {exc.address}, a loopback, "
                             "private, link-local, multicast or reserved address. An operator "
                             "can allow a host with WEBHOOK_ALLOWED_HOSTS."]}) from exc
    return url


def webhook_create(*, tenant, url: str, events: list[str] | None = None) -> Webhook:
    webhook_url_validate(url)
    events = sorted(set(events or []))
    unknown = [e for e in events if e not in Webhook.EVENTS]
    if unknown:
        raise InvalidInput("validation_error", "The request has invalid fields.",
                           details={"events": [f"Unknown event(s) {', '.join(unknown)}; choose "
                                               f"from {', '.join(Webhook.EVENTS)}."]})
    if Webhook.objects.filter(tenant=tenant).count() >= MAX_WEBHOOKS_PER_TENANT:
        raise Conflict("too_many_webhooks",
                       f"A tenant can register at most {MAX_WEBHOOKS_PER_TENANT} webhooks.")
    return Webhook.objects.create(tenant=tenant, url=url, events=events)


def webhook_delete(*, webhook: Webhook) -> None:
    webhook.delete()


def job_summary(job: TrainingJob) -> dict:
    """What a receiver gets about the job: enough to act without calling back."""
    version = None
    try:
        version = job.adapter_version.version
    except Exception:  # noqa: BLE001 - no version (yet)
        version = None
    return {
        "job_id": job.id,
        "status": job.status,
        "method": job.method,
        "progress": job.progress,
        "triggered_by": job.triggered_by,
        "training_samples": job.training_samples,
        "loss": (job.metrics or {}).get("loss"),
        "adapter_version": version,
        "failure_reason": job.failure_reason or None,
        "cost": str(job.cost) if job.cost is not None else None,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def webhook_deliveries_create(*, job_id: str, status: str, extra: dict | None = None) -> list[int]:
    """One delivery per interested webhook of the job's tenant, each enqueued on commit.
    `extra` is added to the payload's `data` (the completed job's `evaluation`)."""
    job = TrainingJob.objects.select_related("tenant").get(pk=job_id)
    ids = []
    with transaction.atomic():
        for hook in Webhook.objects.filter(tenant=job.tenant, is_active=True):
            if not hook.wants(status):
                continue
            payload = {
                "event": f"training.job.{status}",
                "created_at": timezone.now().isoformat(),
                "tenant": job.tenant.slug,
                "data": {**job_summary(job), "status": status, **(extra or {})},
            }
            delivery = WebhookDelivery.objects.create(
                webhook=hook, tenant=job.tenant, job=job, event=f"training.job.{status}",
                url=hook.url, payload=payload)
            ids.append(delivery.id)
        for delivery_id in ids:
            transaction.on_commit(lambda d=delivery_id: _enqueue(d))
    return ids


def webhook_tenant_event_send(*, tenant, event: str, data: dict) -> list[int]:
    """One delivery of a tenant event (Webhook.TENANT_EVENTS, e.g. `adapter.auto_rolled_back`)
    per interested webhook of the tenant, each enqueued on commit; payload like a job event's:
    {event, created_at, tenant, data}."""
    if event not in Webhook.TENANT_EVENTS:
        raise ValueError(f"unknown tenant event {event!r}")
    ids = []
    with transaction.atomic():
        for hook in Webhook.objects.filter(tenant=tenant, is_active=True):
            if not hook.wants(event):
                continue
            payload = {"event": event, "created_at": timezone.now().isoformat(),
                       "tenant": tenant.slug, "data": data}
            delivery = WebhookDelivery.objects.create(webhook=hook, tenant=tenant, event=event,
                                                      url=hook.url, payload=payload)
            ids.append(delivery.id)
        for delivery_id in ids:
            transaction.on_commit(lambda d=delivery_id: _enqueue(d))
    return ids


def _enqueue(delivery_id: int) -> None:
    import django_rq
    from rq import Retry

    intervals = list(getattr(settings, "WEBHOOK_RETRY_INTERVALS", DEFAULT_RETRY_INTERVALS))
    try:
        django_rq.get_queue("default", commit_mode="auto").enqueue(
            "training.jobs.webhook_deliver", delivery_id,
            retry=Retry(max=len(intervals), interval=intervals) if intervals else None,
        )
    except Exception:  # noqa: BLE001 - never let a webhook break the job's write
        logger.exception("Could not enqueue webhook delivery %s", delivery_id)


def webhook_deliver(*, delivery_id: int) -> int:
    """Send one delivery (one attempt). Raises on failure so RQ retries it with backoff.

    The host is resolved and checked again here and the connection is pinned to the checked
    address (`webhook_addresses.pinned_post`); an address webhooks may not reach fails the
    delivery at once, without retries. Redirects are not followed (a 3xx is a failed attempt)."""
    import urllib3

    delivery = WebhookDelivery.objects.select_related("tenant").get(pk=delivery_id)
    if delivery.status == WebhookDelivery.DELIVERED:
        return delivery.response_status or 200
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "SynapseX-Webhooks/1",
        "X-SynapseX-Event": delivery.event,
        "X-SynapseX-Delivery": str(delivery.id),
        "X-SynapseX-Timestamp": timestamp,
        "X-SynapseX-Signature": webhook_signature(secret=delivery.tenant.webhook_secret,
                                                  timestamp=timestamp, body=body),
    }
    delivery.attempts += 1
    error, code, refused = "", None, False
    try:
        response = webhook_addresses.pinned_post(delivery.url, body=body, headers=headers,
                                                 timeout=TIMEOUT_SECONDS)
        code = response.status
        if 300 <= code < 400:
            error = (f"receiver answered {code} (redirect to {response.location[:200]!r}); "
                     "redirects are not followed")
        elif not 200 <= code < 300:
            error = f"receiver answered {code}"
    except webhook_addresses.AddressRefused as exc:
        error, refused = f"refused: {exc}", True
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:  # ValueError: bad IDNA
        error = f"{type(exc).__name__}: {exc}"[:500]
    delivery.response_status = code
    delivery.last_error = error
    if not error:
        delivery.status = WebhookDelivery.DELIVERED
        delivery.delivered_at = timezone.now()
    elif refused:
        delivery.status = WebhookDelivery.FAILED
    else:
        intervals = list(getattr(settings, "WEBHOOK_RETRY_INTERVALS", DEFAULT_RETRY_INTERVALS))
        if delivery.attempts > len(intervals):
            delivery.status = WebhookDelivery.FAILED
    delivery.save(update_fields=["attempts", "response_status", "last_error", "status",
                                 "delivered_at"])
    if error and not refused:
        raise WebhookDeliveryError(f"delivery {delivery.id} to {delivery.url}: {error}")
    return code


class WebhookDeliveryError(RuntimeError):
    """Raised so RQ's Retry schedules the next attempt."""
