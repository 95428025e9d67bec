"""The tenant endpoints as the URL configuration declares them, and how to fill their URL
parameters for a seeded tenant (used by the isolation matrix and the hostile-input tests)."""

from __future__ import annotations

import json
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

def _first_id(model: str, last: bool = False, **filters):
    from django.apps import apps

    return apps.get_model(model).objects.filter(**filters).order_by("-id" if last else "id") \
        .values_list("id", flat=True).first()


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
    "feedback_id": lambda s: _first_id("feedback.Feedback", tenant=s.ctx.tenant),
    "record_id": lambda s: _first_id("feedback.DatasetRecord", dataset_id=s.dataset_id),
}
# Parameters that name an object of the tenant (an outsider on its own URL with these gets 404).
OBJECT_PARAMS = set(FILLERS) - {"tenant", "slug"}


def _jsonl_file(seeded: Seeded) -> dict:
    from django.core.files.uploadedfile import SimpleUploadedFile

    line = json.dumps({"messages": [
        {"role": "user", "content": f"Valid question {seeded.slug}"},
        {"role": "assistant", "content": "Valid answer"}]}) + "\n"
    return {"file": SimpleUploadedFile("records.jsonl", line.encode(), "application/jsonl")}


# A body each write with an object in its URL accepts (format, builder), so that a crossed call
# (another tenant's ids on one's own URL) can only be refused for the object: a 400 for the body's
# shape would otherwise pass for isolation. Writes not listed here take no body (DELETE, cancel,
# revoke); a POST/PUT/PATCH with an object parameter that is missing here fails the suite.
VALID_BODIES = {
    ("v1/tenants/<tenant>/datasets/<dataset_id>/upload/conversations", "post"): (
        "json", lambda s: {"conversations": [{"messages": [
            {"role": "user", "content": f"Valid question {s.slug}"},
            {"role": "assistant", "content": "Valid answer"}]}]}),
    ("v1/tenants/<tenant>/datasets/<dataset_id>/upload/preferences", "post"): (
        "json", lambda s: {"preferences": [{"prompt": f"Valid prompt {s.slug}",
                                            "chosen": "Good answer", "rejected": "Bad answer"}]}),
    ("v1/tenants/<tenant>/datasets/<dataset_id>/upload", "post"): ("multipart", _jsonl_file),
    ("v1/tenants/<tenant>/datasets/<dataset_id>/upload/jsonl", "post"): (
        "multipart", _jsonl_file),
    ("v1/tenants/<tenant>/lora/<version>/activate", "post"): ("json", lambda s: {"force": True}),
    ("v1/tenants/<tenant>/datasets/<dataset_id>", "patch"): (
        "json", lambda s: {"name": f"renamed-{s.slug}"}),
    ("v1/tenants/<tenant>/datasets/<dataset_id>/records/delete", "post"): (
        # the newest record (the owner's uploads above add one), so `record_id` stays for DELETE
        "json", lambda s: {"ids": [_first_id("feedback.DatasetRecord", last=True,
                                             dataset_id=s.dataset_id) or 1]}),
    ("v1/tenants/<tenant>/feedback/review/<feedback_id>", "post"): (
        "json", lambda s: {"action": "approve"}),
}
# Object writes that take no body at all.
NO_BODY_WRITES = {
    ("v1/tenants/<tenant>/api-keys/<key_id>/revoke", "post"),
    ("v1/tenants/<tenant>/train/<job_id>/cancel", "post"),
}


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
