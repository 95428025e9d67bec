"""The chat service: pick the version that answers, generate, log every served turn.

Which version answers a request, in order:
1. an explicit override (`adapter_version`, or `model` naming "base", "v3", "<tenant>:v3");
2. with an enabled A/B split: the version that already answered this conversation when it is
   still an arm of the split (a conversation never switches mid-way, even when the weights are
   changed), else `ab_route(conversation_id, weights)` - a stable hash, so stateless and sticky;
3. the tenant's active version; none = the base model (`adapter_version: null`).
The version is read from the database on every request: an activation is served by the next
request, without a restart.

Logging: the request's messages and the reply go through `feedback.services.
conversation_log_turns`, which stores them PII-redacted and does not duplicate history a client
re-sends. Only the reply carries `served_by_version`, so feedback on it counts for that version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from adapters.models import AdapterVersion
from adapters.runtime import AdapterRef, ModelUnavailableError, runtime_get
from adapters.services import ab_route, ab_test_arms, parse_version_label
from tenants.api.errors import ApiError
from tenants.models import Tenant


@dataclass
class RoutedVersion:
    version: AdapterVersion | None
    reason: str  # override | ab_sticky | ab_hash | active | base


def model_name_of(tenant: Tenant, version: AdapterVersion | None) -> str:
    return f"{tenant.slug}:{version.version}" if version is not None else "base"


def _override_label(value: str | None, tenant: Tenant) -> str | None:
    """"base" / "v3" / "<tenant>:v3" / "<tenant>/v3" -> "base" / "v3"; other names -> None."""
    if not value:
        return None
    text = value.strip()
    if text.lower() == "base":
        return "base"
    for sep in (":", "/"):
        prefix = f"{tenant.slug}{sep}"
        if text.startswith(prefix):
            text = text[len(prefix):]
    return f"v{parse_version_label(text)}" if parse_version_label(text) else None


def serving_version_select(*, tenant: Tenant, conversation_id: str, adapter_version: str | None,
                           model: str | None) -> RoutedVersion:
    """The version that answers this request (see the module docstring for the order)."""
    from feedback.models import Message

    explicit = adapter_version is not None and adapter_version != ""
    label = _override_label(adapter_version, tenant) if explicit else _override_label(model,
                                                                                      tenant)
    if explicit and label is None:
        raise ApiError("validation_error", "The request has invalid fields.",
                       details={"adapter_version": ["Use a version label like 'v3', or 'base'."]})
    if label == "base":
        return RoutedVersion(None, "override")
    if label is not None:
        version = AdapterVersion.objects.filter(tenant=tenant,
                                                number=parse_version_label(label)).first()
        if version is None:
            raise ApiError("version_not_found", f"No adapter version {label!r} for this tenant.",
                           status_code=404)
        if version.is_archived:
            raise ApiError("version_archived", f"{label} is archived and cannot serve.",
                           status_code=409)
        return RoutedVersion(version, "override")

    arms = ab_test_arms(tenant)
    if arms:
        previous = (Message.objects
                    .filter(tenant=tenant, conversation__external_id=conversation_id,
                            role="assistant", served_by_version__isnull=False)
                    .select_related("served_by_version").order_by("-position").first())
        if previous is not None and previous.served_by_version.version in arms \
                and not previous.served_by_version.is_archived:
            return RoutedVersion(previous.served_by_version, "ab_sticky")
        chosen = ab_route(conversation_id, arms)
        version = AdapterVersion.objects.filter(
            tenant=tenant, number=parse_version_label(chosen),
            status=AdapterVersion.READY).first()
        if version is not None:
            return RoutedVersion(version, "ab_hash")
    active = AdapterVersion.objects.filter(tenant=tenant, is_active=True).first()
    return RoutedVersion(active, "active" if active else "base")


def chat_completion_create(*, tenant: Tenant, messages: list[dict], max_tokens: int,
                           temperature: float, conversation_id: str | None = None,
                           adapter_version: str | None = None, model: str | None = None,
                           user: str = "") -> dict:
    """Answer a chat-completions request for the tenant; returns the OpenAI-shaped body."""
    from feedback.services import conversation_log_turns, new_public_id

    conversation_id = conversation_id or new_public_id("conv")
    routed = serving_version_select(tenant=tenant, conversation_id=conversation_id,
                                    adapter_version=adapter_version, model=model)
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages]
    try:
        completion = runtime_get().generate(
            messages=prompt,
            adapter=AdapterRef.of(routed.version) if routed.version else None,
            max_new_tokens=max_tokens, temperature=temperature)
    except ModelUnavailableError as exc:
        raise ApiError("model_unavailable", str(exc), status_code=503) from exc

    to_log = [{"role": m["role"], "content": m["content"], "served_by_version": None,
               **({"user_id": user} if user and m["role"] == "user" else {})}
              for m in messages]
    to_log.append({"role": "assistant", "content": completion.text,
                   "served_by_version": routed.version})
    conversation, rows = conversation_log_turns(
        tenant=tenant, conversation_id=conversation_id, messages=to_log,
        served_by_version=routed.version, source="chat")
    reply = rows[-1]
    return {
        "id": f"chatcmpl-{reply.external_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name_of(tenant, routed.version),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": completion.text},
            "finish_reason": completion.finish_reason,
        }],
        "usage": {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        },
        "conversation_id": conversation.external_id,
        "message_id": reply.external_id,
        "adapter_version": routed.version.version if routed.version else None,
        "routing": routed.reason,
    }
