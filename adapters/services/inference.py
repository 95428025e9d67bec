"""Keeping a multi-LoRA inference server's adapters in step with the tenant's versions.

Only with `INFERENCE_SERVER_URL` set (adapters.inference_server); otherwise every function here
does nothing. A created version is registered by an RQ job queued after its commit, an archived
one unregistered the same way; a chat request that finds its version unknown to the server
registers it itself, so a lost job or a restarted server costs one slower request, not an error.
`inference_server_sync` (`manage.py inference_sync`) registers every ready version for the
server's base and unloads the archived ones it still holds.
"""

from __future__ import annotations

import logging

import django_rq
from django.db import transaction

from adapters.inference_server import inference_server_configured, inference_server_get
from adapters.models import AdapterVersion
from adapters.runtime import AdapterRef

logger = logging.getLogger(__name__)


def inference_adapter_register(*, version: AdapterVersion) -> str | None:
    """Register a ready version on the server; its served name, or None when the server does
    not serve its base (the local runtime does) or none is configured."""
    remote = inference_server_get()
    if remote is None or version.status != AdapterVersion.READY:
        return None
    ref = AdapterRef.of(version)
    if not remote.serves(ref, None):
        return None
    return remote.register(ref)


def inference_adapter_unregister(*, served_name: str) -> bool:
    remote = inference_server_get()
    return remote.unregister(served_name) if remote is not None else False


def _enqueue(func: str, *args) -> None:
    try:
        django_rq.get_queue("default", commit_mode="auto").enqueue(
            func, *args, result_ttl=3600, failure_ttl=7 * 86400)
    except Exception:  # noqa: BLE001 - Redis down: the first chat request registers it
        logger.exception("could not queue %s%s", func, args)


def inference_adapter_register_enqueue(*, version: AdapterVersion) -> None:
    """After the version's transaction commits, queue its registration."""
    if inference_server_configured():
        transaction.on_commit(lambda: _enqueue("adapters.jobs.inference_adapter_register_job",
                                               version.pk))


def inference_adapter_unregister_enqueue(*, version: AdapterVersion) -> None:
    if inference_server_configured():
        name = AdapterRef.of(version).served_name
        transaction.on_commit(lambda: _enqueue("adapters.jobs.inference_adapter_unregister_job",
                                               name))


def inference_server_sync() -> dict:
    """Register every ready version the server should serve; unload archived ones it holds.
    Returns {"registered": [...], "unloaded": [...], "local": [...]} (names; `local`: versions
    on another base, served by the local runtime)."""
    remote = inference_server_get()
    if remote is None:
        return {"registered": [], "unloaded": [], "local": []}
    done: dict[str, list[str]] = {"registered": [], "unloaded": [], "local": []}
    loaded = set(remote.loaded_names())
    versions = AdapterVersion.objects.select_related("tenant").order_by("tenant_id", "number")
    for version in versions:
        ref = AdapterRef.of(version)
        if version.status == AdapterVersion.READY:
            if not remote.serves(ref, None):
                done["local"].append(ref.served_name)
            elif ref.served_name not in loaded:
                done["registered"].append(remote.register(ref))
        elif ref.served_name in loaded and remote.unregister(ref.served_name):
            done["unloaded"].append(ref.served_name)
    return done
