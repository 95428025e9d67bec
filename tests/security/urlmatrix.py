"""The tenant endpoints as the URL configuration declares them, and how to fill their URL
parameters for a seeded tenant (used by the isolation matrix and the hostile-input tests)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, get_resolver

from tests.security.helpers import Seeded

API_PREFIX = "v1/tenants/<tenant>/"
DASHBOARD_PREFIX = "t/<slug>/"
STAFF_PREFIX = "staff/"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")
# Owner answers that mean "understood, refused on the merits" rather than an access problem.
OWNER_VALIDATION = {400, 409, 410, 413, 415, 422}

# URL parameter -> how to fill it for a seeded tenant. A new parameter name fails the suite.
FILLERS = {
    "tenant": lambda s: s.slug,
    "slug": lambda s: s.slug,
    "conversation_id": lambda s: s.conversation_id,
    "dataset_id": lambda s: s.dataset_id,
    "job_id": lambda s: s.job_id,
    "version": lambda s: s.version,
    "number": lambda s: s.version_number,
    "key_id": lambda s: s.spare_key_id,
    "webhook_id": lambda s: s.webhook_id,
}
# Parameters that name an object of the tenant (an outsider on its own URL with these gets 404).
OBJECT_PARAMS = set(FILLERS) - {"tenant", "slug"}


@dataclass(frozen=True)
class Endpoint:
    route: str  # e.g. "v1/tenants/<tenant>/train/<job_id>"
    params: tuple[str, ...]
    methods: tuple[str, ...]
    name: str

    def url(self, seeded: Seeded, overrides: dict | None = None) -> str:
        values = {p: FILLERS[p](seeded) for p in self.params}
        values.update(overrides or {})
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), self.route)
        return "/" + path


def _walk(patterns, prefix: str = ""):
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            yield route, entry


def normalised_route(route: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"<\1>", route)


def _methods(callback) -> tuple[str, ...]:
    view = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if view is None:  # a plain function view: GET is all we can assume
        return ("get",)
    return tuple(m for m in HTTP_METHODS if hasattr(view, m))


def collect_endpoints(prefix: str) -> list[Endpoint]:
    found = []
    for route, entry in _walk(get_resolver().url_patterns):
        if not normalised_route(route).startswith(prefix):
            continue
        params = tuple(re.findall(r"<(?:\w+:)?(\w+)>", route))
        found.append(Endpoint(route=route, params=params, methods=_methods(entry.callback),
                              name=entry.name or route))
    return found


API_ENDPOINTS = collect_endpoints(API_PREFIX)
DASHBOARD_ENDPOINTS = collect_endpoints(DASHBOARD_PREFIX)
STAFF_ENDPOINTS = collect_endpoints(STAFF_PREFIX)
