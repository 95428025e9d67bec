"""The chat service: pick the version that answers, generate, log every served turn.

Which version answers a request, in order:
1. an explicit override (`adapter_version`, or `model` naming "base", "v3", "<tenant>:v3");
2. with an enabled A/B split: the version that already answered this conversation when it is
   still an arm of the split (a conversation never switches mid-way, even when the weights are
   changed), else `ab_route(conversation_id, weights)` - a stable hash, so stateless and sticky;
3. the tenant's active version; none = the base model (`adapter_version: null`).
A version trained with a scope (`scope_gate`, adapters.scope) then answers only prompts like
those it trained on: for any other, the base model it was trained on answers, adapter off, and
the body's `scope` says so (`in_scope`, the prompt's `similarity`, the `threshold`).
The version is read from the database on every request: an activation is served by the next
request, without a restart. What generates is the process's runtime, or, with
`INFERENCE_SERVER_URL` set, a multi-LoRA server speaking vLLM's API (adapters.inference_server).
A version is served on the base model it was trained on; "base" is the tenant's base
(`serving_base_for_tenant`).

`serving_models_list` names exactly what `model` accepts: "base" and "<tenant>:v<N>" for each ready
version (`model_name_of`), in OpenAI's list shape.

Streaming (`stream: true`): `chat_completion_stream` answers server-sent events in OpenAI's
`chat.completion.chunk` format, ending with `data: [DONE]`. The reply's message id is chosen before
the first chunk (every chunk's `id` is `chatcmpl-<message id>`), and the turn is logged once the
generation ends: after the last chunk, or, when the client drops mid-way, when the server closes
the stream (the generation runs to its end, so the logged reply is the whole one).

Logging: the request's messages and the reply go through `feedback.services.
conversation_log_turns`, which stores them PII-redacted and does not duplicate history a client
re-sends. Only the reply carries `served_by_version`, so feedback on it counts for that version.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from adapters.inference_server import serving_runtime
from adapters.models import AdapterVersion, parse_version_label
from adapters.runtime import (
    AdapterRef,
    BaseRef,
    Completion,
    CompletionStream,
    ModelUnavailableError,
    base_ref_resolve,
    default_base_ref,
)
from adapters.scope import scope_decision
from adapters.selectors import ab_route, ab_test_arms
from tenants.errors import Conflict, InvalidInput, NotFound, Unavailable
from tenants.models import Tenant

logger = logging.getLogger(__name__)


@dataclass
class RoutedVersion:
    version: AdapterVersion | None
    reason: str  # override | ab_sticky | ab_hash | active | base


def model_name_of(tenant: Tenant, version: AdapterVersion | None) -> str:
    return f"{tenant.slug}:{version.version}" if version is not None else "base"


def serving_base_for_tenant(tenant: Tenant) -> BaseRef:
    """The base model that answers "base" for this tenant: its `base_model` setting (a name
    from BASE_MODELS) when it has one, else the platform's default base."""
    from training.selectors import training_settings_get

    name = training_settings_get(tenant=tenant).base_model
    return base_ref_resolve(name) if name else default_base_ref()


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
        raise InvalidInput("validation_error", "The request has invalid fields.",
                           details={"adapter_version": ["Use a version label like 'v3', or "
                                                        "'base'."]})
    if label == "base":
        return RoutedVersion(None, "override")
    if label is not None:
        version = AdapterVersion.objects.filter(tenant=tenant,
                                                number=parse_version_label(label)).first()
        if version is None:
            raise NotFound("version_not_found", f"No adapter version {label!r} for this tenant.")
        if version.is_archived:
            raise Conflict("version_archived", f"{label} is archived and cannot serve.")
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


def serving_models_list(*, tenant: Tenant) -> dict:
    """OpenAI's model list for this tenant: "base" and each ready version, by the names chat's
    `model` accepts (`model_name_of`)."""
    base = serving_base_for_tenant(tenant)
    config = Path(base.source) / "config.json"
    base_created = int(config.stat().st_mtime) if config.is_file() else 0
    data = [{"id": model_name_of(tenant, None), "object": "model", "created": base_created,
             "owned_by": "synapsex"}]
    versions = AdapterVersion.objects.filter(tenant=tenant, status=AdapterVersion.READY) \
        .order_by("number")
    data += [{"id": model_name_of(tenant, v), "object": "model",
              "created": int(v.created_at.timestamp()), "owned_by": tenant.slug}
             for v in versions]
    return {"object": "list", "data": data}


def _prepare(*, tenant: Tenant, conversation_id: str | None, adapter_version: str | None,
             model: str | None, messages: list[dict]
             ) -> tuple[str, RoutedVersion, AdapterRef | None, BaseRef, dict | None]:
    """(conversation id, the version routed to, the adapter that generates, the base, the
    version's scope decision). A version with a scope (adapters.scope) hands a prompt out of
    it to the base model it was trained on: no adapter generates, the reply still counts for
    the version."""
    from feedback.services import new_public_id

    conversation_id = conversation_id or new_public_id("conv")
    routed = serving_version_select(tenant=tenant, conversation_id=conversation_id,
                                    adapter_version=adapter_version, model=model)
    adapter = AdapterRef.of(routed.version, tenant_slug=tenant.slug) if routed.version else None
    base = serving_base_for_tenant(tenant)
    scope = scope_decision(routed.version, messages)
    if adapter is not None and scope is not None and not scope["in_scope"]:
        adapter, base = None, adapter.base or base
    return conversation_id, routed, adapter, base, scope


def _turns_log(*, tenant: Tenant, conversation_id: str, messages: list[dict], user: str,
               routed: RoutedVersion, text: str, reply_id: str | None = None):
    from feedback.services import conversation_log_turns

    to_log = [{"role": m["role"], "content": m["content"], "served_by_version": None,
               **({"user_id": user} if user and m["role"] == "user" else {})}
              for m in messages]
    to_log.append({"role": "assistant", "content": text, "served_by_version": routed.version,
                   **({"message_id": reply_id} if reply_id else {})})
    conversation, rows = conversation_log_turns(
        tenant=tenant, conversation_id=conversation_id, messages=to_log,
        served_by_version=routed.version, source="chat")
    return conversation, rows[-1]


def chat_completion_create(*, tenant: Tenant, messages: list[dict], max_tokens: int,
                           temperature: float, conversation_id: str | None = None,
                           adapter_version: str | None = None, model: str | None = None,
                           user: str = "", top_p: float | None = None) -> dict:
    """Answer a chat-completions request for the tenant; returns the OpenAI-shaped body."""
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages]
    conversation_id, routed, adapter, base, scope = _prepare(
        tenant=tenant, conversation_id=conversation_id, adapter_version=adapter_version,
        model=model, messages=prompt)
    try:
        completion = serving_runtime(adapter, base).generate(
            messages=prompt, adapter=adapter, base=base, max_new_tokens=max_tokens,
            temperature=temperature, top_p=top_p)
    except ModelUnavailableError as exc:
        raise Unavailable("model_unavailable", str(exc)) from exc

    conversation, reply = _turns_log(tenant=tenant, conversation_id=conversation_id,
                                     messages=messages, user=user, routed=routed,
                                     text=completion.text)
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
        "usage": _usage(completion),
        "conversation_id": conversation.external_id,
        "message_id": reply.external_id,
        "adapter_version": routed.version.version if routed.version else None,
        "routing": routed.reason,
        **({"scope": scope} if scope is not None else {}),
    }


def _usage(completion: Completion) -> dict:
    return {"prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens}


def chat_completion_stream(*, tenant: Tenant, messages: list[dict], max_tokens: int,
                           temperature: float, conversation_id: str | None = None,
                           adapter_version: str | None = None, model: str | None = None,
                           user: str = "", top_p: float | None = None) -> ChatEventStream:
    """Start answering as a stream of server-sent events (bytes). Routing, loading and
    integrity errors are raised here, before the response starts."""
    from feedback.services import new_public_id

    prompt = [{"role": m["role"], "content": m["content"]} for m in messages]
    conversation_id, routed, adapter, base, scope = _prepare(
        tenant=tenant, conversation_id=conversation_id, adapter_version=adapter_version,
        model=model, messages=prompt)
    try:
        stream = serving_runtime(adapter, base).stream(
            messages=prompt, adapter=adapter, base=base, max_new_tokens=max_tokens,
            temperature=temperature, top_p=top_p)
    except ModelUnavailableError as exc:
        raise Unavailable("model_unavailable", str(exc)) from exc
    return ChatEventStream(tenant=tenant, conversation_id=conversation_id, messages=messages,
                           user=user, routed=routed, stream=stream,
                           reply_id=new_public_id("msg"), scope=scope)


class ChatEventStream:
    """The SSE body of one streamed answer; logs the turn exactly once, when the generation has
    ended, whether the client read to the end or the server closed the stream early (WSGI
    servers and Django call `close()` on a dropped client)."""

    def __init__(self, *, tenant: Tenant, conversation_id: str, messages: list[dict], user: str,
                 routed: RoutedVersion, stream: CompletionStream, reply_id: str,
                 scope: dict | None = None):
        self.tenant = tenant
        self.conversation_id = conversation_id
        self.messages = messages
        self.user = user
        self.routed = routed
        self.stream = stream
        self.reply_id = reply_id
        self.scope = scope
        self.created = int(time.time())
        self.logged = None  # (completion, reply row) once logged
        self._events = self._generate()

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        return next(self._events)

    def close(self) -> None:
        self._events.close()
        self._log_once()

    def _chunk(self, delta: dict, finish_reason: str | None = None, **extra) -> bytes:
        body = {
            "id": f"chatcmpl-{self.reply_id}", "object": "chat.completion.chunk",
            "created": self.created, "model": model_name_of(self.tenant, self.routed.version),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            "conversation_id": self.conversation_id, "message_id": self.reply_id,
            "adapter_version": self.routed.version.version if self.routed.version else None,
            **extra,
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()

    def _log_once(self):
        """Wait for the generation, log the turn (once); None when the generation failed."""
        if self.logged is None:
            try:
                completion = self.stream.completion()
            except ModelUnavailableError:
                logger.warning("streamed reply %s not logged: its generation failed",
                               self.reply_id)
                self.logged = (None, None)
                return self.logged
            _, reply = _turns_log(tenant=self.tenant, conversation_id=self.conversation_id,
                                  messages=self.messages, user=self.user, routed=self.routed,
                                  text=completion.text, reply_id=self.reply_id)
            self.logged = (completion, reply)
        return self.logged

    def _generate(self):
        try:
            yield self._chunk({"role": "assistant", "content": ""})
            for piece in self.stream:
                yield self._chunk({"content": piece})
            completion, _ = self._log_once()
            if completion is None:
                raise ModelUnavailableError("generation failed")
            yield self._chunk({}, completion.finish_reason, usage=_usage(completion),
                              **({"scope": self.scope} if self.scope is not None else {}))
        except ModelUnavailableError as exc:
            error = {"error": {"code": "model_unavailable", "message": str(exc), "details": {}}}
            yield f"data: {json.dumps(error)}\n\n".encode()
        finally:
            self._log_once()
        yield b"data: [DONE]\n\n"
