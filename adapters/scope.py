"""A version's scope at serving time (train.scope_gate; training.trainer.scope).

A version trained with a scope gate answers only prompts like those it trained on; the base
model it was trained on, adapter off, answers the others. The chat service asks
`scope_decision` for every request it routes to such a version (the last user message decides),
and the evaluation scores the version the same way, so what a tenant sees measured is what
its users are served. The reply still counts for the version (`served_by_version`): the gate is
part of the version. Versions without a scope (any job before it, or trained with the gate at
0) answer every prompt, as before.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from training.trainer.scope import Scope, last_user_text

logger = logging.getLogger(__name__)
CACHE_SIZE = 64
_scopes: OrderedDict[tuple, Scope | None] = OrderedDict()
_lock = threading.Lock()


def version_scope(version) -> Scope | None:
    """The version's scope from its manifest (built once per process and version), or None."""
    key = (version.pk, version.sha256)
    with _lock:
        if key in _scopes:
            _scopes.move_to_end(key)
            return _scopes[key]
    data = (version.manifest or {}).get("scope")
    scope = None
    if data:
        try:
            scope = Scope(data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Only the trainer writes a manifest's scope; one it cannot read is served like a
            # version without a scope (the adapter answers everything), and said in the log.
            logger.error("version %s has an unreadable scope (%s): served without it",
                         version.version, exc)
    with _lock:
        _scopes[key] = scope
        while len(_scopes) > CACHE_SIZE:
            _scopes.popitem(last=False)
    return scope


def scope_decision(version, messages: list[dict]) -> dict | None:
    """Whether `version` answers these messages: {"in_scope", "similarity", "threshold"}; None
    when the version has no scope (it answers everything)."""
    scope = version_scope(version) if version is not None else None
    if scope is None:
        return None
    similarity = scope.similarity(last_user_text(messages))
    return {"in_scope": similarity >= scope.threshold, "similarity": round(similarity, 3),
            "threshold": scope.threshold}
