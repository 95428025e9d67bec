"""Tenant isolation matrix, generated from the URL configuration.

Every URL pattern under `/v1/tenants/<tenant>/...` and `/t/<slug>/...` (and `/staff/`) is found
by walking `get_resolver()`, so an endpoint added later is in the matrix automatically; a pattern
whose URL parameters the fillers below cannot fill FAILS the suite (add a filler, do not skip).

API, for every allowed method of every tenant endpoint:
- owner's read-write key: success or a 4xx validation answer, never 401/403/404/405/5xx;
- owner's read-only key: reads as the owner, writes 403 `read_only_key`;
- another tenant's valid key, read-write or read-only: 404 `not_found`, for every method;
- another tenant on its own URL but with this tenant's object ids: 404 and nothing else (the
  object lookup is scoped too, not only the slug); writes carry a body the endpoint accepts
  (`urlmatrix.VALID_BODIES`), so a refusal of the body's shape cannot pass for isolation;
- a revoked key, no key: 401 in the envelope.
Dashboards: another tenant's member 403/404, anonymous redirected to the login page, staff pages
403 for non-staff. And in every response: none of the other tenant's marker strings, compared
case-insensitively (some are stored lowercased, e.g. in webhook URLs).
"""

from __future__ import annotations

import pytest
from django.test import Client

from tests.security.helpers import Seeded, api_client, assert_envelope, markers_of
from tests.security.urlmatrix import (
    API_ENDPOINTS,
    DASHBOARD_ENDPOINTS,
    FILLERS,
    NO_BODY_WRITES,
    OBJECT_PARAMS,
    OWNER_VALIDATION,
    STAFF_ENDPOINTS,
    VALID_BODIES,
    normalised_route,
)

pytestmark = pytest.mark.django_db

def test_it_finds_every_tenant_endpoint_and_can_fill_its_parameters():
    """The matrix covers what the URL configuration serves: a new endpoint with a parameter
    nobody taught the fillers fails here instead of escaping the isolation checks."""
    assert len(API_ENDPOINTS) >= 30, [e.route for e in API_ENDPOINTS]
    assert len(DASHBOARD_ENDPOINTS) >= 10, [e.route for e in DASHBOARD_ENDPOINTS]
    unfillable = {e.route: [p for p in e.params if p not in FILLERS]
                  for e in API_ENDPOINTS + DASHBOARD_ENDPOINTS + STAFF_ENDPOINTS
                  if any(p not in FILLERS for p in e.params)}
    assert not unfillable, f"teach FILLERS these URL parameters: {unfillable}"
    for endpoint in API_ENDPOINTS + DASHBOARD_ENDPOINTS:
        assert endpoint.methods, f"{endpoint.route} allows no HTTP method?"
    routes = {normalised_route(e.route) for e in API_ENDPOINTS}
    for expected in ("v1/tenants/<tenant>/feedback", "v1/tenants/<tenant>/train/<job_id>",
                     "v1/tenants/<tenant>/lora/<version>/activate",
                     "v1/tenants/<tenant>/datasets/<dataset_id>/upload/conversations"):
        assert expected in routes


def _call(client, method: str, url: str, body=None):
    if method in ("post", "put", "patch"):
        if body is not None:
            fmt, data = body
            return getattr(client, method)(url, data, format=fmt)
        return getattr(client, method)(url, {}, format="json")
    return getattr(client, method)(url)


def _valid_body(endpoint, method: str, seeded: Seeded):
    """(format, data) of a body this write accepts, or None for a write that takes none."""
    key = (normalised_route(endpoint.route), method)
    if key in VALID_BODIES:
        fmt, build = VALID_BODIES[key]
        return fmt, build(seeded)
    return None


def test_every_object_write_has_a_valid_body_or_takes_none():
    """A crossed write must be refusable only for its object: each POST/PUT/PATCH with an
    object in its URL needs a valid body in VALID_BODIES (or is known to take none)."""
    missing = [(normalised_route(e.route), m) for e in API_ENDPOINTS for m in e.methods
               if m in ("post", "put", "patch") and any(p in OBJECT_PARAMS for p in e.params)
               and (normalised_route(e.route), m) not in VALID_BODIES
               and (normalised_route(e.route), m) not in NO_BODY_WRITES]
    assert not missing, f"add a valid body to urlmatrix.VALID_BODIES for: {missing}"


def _content(response) -> bytes:
    """The body, streamed ones (JSONL exports) included; read once and kept on the response."""
    if getattr(response, "streaming", False):
        if not hasattr(response, "_matrix_body"):
            response._matrix_body = b"".join(response.streaming_content)
        return response._matrix_body
    return response.content


def _has_marker(content: bytes, marker: str) -> bool:
    return marker.lower().encode() in content.lower()


def _assert_no_foreign_markers(response, foreign: Seeded, what: str) -> None:
    content = _content(response)
    for marker in markers_of(foreign):
        assert not _has_marker(content, marker), f"{what}: {marker} of {foreign.slug} leaked"
    # The other tenant's version numbers, as the API spells them.
    assert not _has_marker(content, f'"{foreign.version}"'), \
        f"{what}: {foreign.version} of {foreign.slug} leaked"


def _run_api_matrix(owner: Seeded, other: Seeded) -> dict:
    """All calls of the matrix against `owner`'s URLs; returns counters for sanity checks."""
    seen_own_markers = 0
    reads = [(e, m) for e in API_ENDPOINTS for m in e.methods if m == "get"]
    writes = [(e, m) for e in API_ENDPOINTS for m in e.methods if m != "get"]
    anon = api_client()
    revoked = api_client(owner.revoked_secret)

    # 1. Callers that must be refused, on every method: nothing may change for them.
    for endpoint, method in reads + writes:
        url = endpoint.url(owner)
        what = f"{method.upper()} {url}"
        body = _valid_body(endpoint, method, owner)
        assert_envelope(_call(other.ctx.client, method, url, body), 404, "not_found"), what
        assert_envelope(_call(other.read_only.client, method, url, body), 404,
                        "not_found"), f"other's read-only key: {what}"
        assert_envelope(_call(anon, method, url), 401), what
        error = assert_envelope(_call(revoked, method, url), 401)
        assert error["code"] == "invalid_api_key", (what, error)
        object_params = [p for p in endpoint.params if p in OBJECT_PARAMS]
        if object_params:
            # The other tenant's own URL carrying this tenant's object ids.
            crossed = endpoint.url(other, {p: FILLERS[p](owner) for p in object_params})
            response = _call(other.ctx.client, method, crossed,
                             _valid_body(endpoint, method, other))
            # With a body the endpoint accepts, only the object can be refused: 404, nothing
            # else (a 409 would tell the state of another tenant's object, a 400 proves nothing).
            assert_envelope(response, 404), f"{method.upper()} {crossed}"
            # An error may echo the id the caller sent; anything beyond that would be a leak.
            content = _content(response)
            for p in object_params:
                content = content.replace(str(FILLERS[p](owner)).encode(), b"")
            for marker in markers_of(owner):
                assert not _has_marker(content, marker), (crossed, marker, _content(response))

    # 2. The read-only key: reads as the owner, every write refused before it runs.
    for endpoint, method in writes:
        url = endpoint.url(owner)
        assert_envelope(_call(owner.read_only.client, method, url), 403, "read_only_key")
    for endpoint, _method in reads:
        url = endpoint.url(owner)
        response = owner.read_only.client.get(url)
        assert response.status_code < 400 or response.status_code in OWNER_VALIDATION, \
            (url, response.status_code, _content(response)[:300])
        _assert_no_foreign_markers(response, other, f"read-only GET {url}")

    # 3. The owner: reads, then writes, removals last (the valid bodies above, else empty bodies:
    # validation answers are fine there). A valid body must pass validation (a state refusal,
    # 409, is fine), which keeps them honest; the preferences upload meets the seeded dataset
    # of conversations and is refused for that.
    # (a record before its dataset: deeper routes first)
    writes.sort(key=lambda em: (em[1] == "delete", "delete" in em[0].route,
                                -em[0].route.count("/")))
    for endpoint, method in reads + writes:
        url = endpoint.url(owner)
        body = _valid_body(endpoint, method, owner)
        response = _call(owner.ctx.client, method, url, body)
        status = response.status_code
        assert status < 400 or status in OWNER_VALIDATION, \
            (f"owner {method.upper()} {url}", status, _content(response)[:300])
        if status >= 400:
            error = assert_envelope(response, status)
            if body is not None and status != 409:
                assert (status, error["code"]) == (400, "dataset_type_mismatch") and \
                    endpoint.route.endswith("upload/preferences"), (url, error)
        _assert_no_foreign_markers(response, other, f"owner {method.upper()} {url}")
        if any(_has_marker(_content(response), m) for m in markers_of(owner)):
            seen_own_markers += 1
    return {"reads": len(reads), "writes": len(writes), "own_marker_responses": seen_own_markers}


def test_it_isolates_every_api_endpoint_in_both_directions(two_tenants, rq_connection):
    acme, globex = two_tenants
    for owner, other in ((acme, globex), (globex, acme)):
        counts = _run_api_matrix(owner, other)
        # A matrix that never saw the owner's own data would prove nothing about leaks.
        assert counts["own_marker_responses"] >= 8, counts
        assert counts["writes"] >= 10, counts


def _login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _dashboard_call(client: Client, method: str, url: str):
    return client.post(url, {}) if method == "post" else getattr(client, method)(url)


def test_it_isolates_every_dashboard_page_and_data_url(two_tenants):
    from django.conf import settings
    from django.contrib.auth import get_user_model

    acme, globex = two_tenants
    anon = Client()
    login_url = settings.LOGIN_URL if settings.LOGIN_URL.startswith("/") else "/accounts/login/"
    seen_own = 0
    for owner, other in ((acme, globex), (globex, acme)):
        member = _login(owner.user)
        outsider = _login(other.user)
        endpoints = [(e, m) for e in DASHBOARD_ENDPOINTS for m in e.methods]
        # Refusals first (no state change), then the member's own reads, then its actions.
        endpoints.sort(key=lambda em: em[1] != "get")
        for endpoint, method in endpoints:
            url = endpoint.url(owner)
            response = _dashboard_call(outsider, method, url)
            assert response.status_code in (403, 404), (f"outsider {method} {url}",
                                                         response.status_code)
            _assert_no_foreign_markers(response, owner, f"outsider {method} {url}")
            response = _dashboard_call(anon, method, url)
            assert response.status_code == 302, (f"anon {method} {url}", response.status_code)
            assert response["Location"].startswith(login_url), response["Location"]
        for endpoint, method in endpoints:
            url = endpoint.url(owner)
            response = _dashboard_call(member, method, url)
            assert response.status_code < 500 and response.status_code not in (401, 403, 404), \
                (f"member {method} {url}", response.status_code)
            _assert_no_foreign_markers(response, other, f"member {method} {url}")
            if any(_has_marker(_content(response), m) for m in markers_of(owner)):
                seen_own += 1
    assert seen_own >= 6, seen_own

    # Staff pages: operators only.
    staff = get_user_model().objects.create_user("operator", password="x", is_staff=True)
    for endpoint in STAFF_ENDPOINTS:
        url = endpoint.url(acme, {"job_id": acme.job_id})
        assert _login(acme.user).get(url).status_code == 403, url
        response = anon.get(url)
        assert response.status_code == 302 and response["Location"].startswith(login_url), url
        assert _login(staff).get(url).status_code == 200, url


def _tenant_state(seeded: Seeded) -> dict:
    """What a dashboard write could change in a tenant, row by row."""
    from adapters.models import AdapterVersion
    from feedback.models import Dataset, DatasetRecord
    from tenants.models import ApiKey, AuditLogEntry
    from training.models import TrainingJob

    tenant = seeded.ctx.tenant
    tenant.refresh_from_db()
    return {
        "tenant": {f.name: getattr(tenant, f.attname) for f in tenant._meta.concrete_fields},
        "keys": list(ApiKey.objects.filter(tenant=tenant).order_by("id").values()),
        "versions": list(AdapterVersion.objects.filter(tenant=tenant).order_by("id").values()),
        "jobs": list(TrainingJob.objects.filter(tenant=tenant).order_by("id").values()),
        "datasets": list(Dataset.objects.filter(tenant=tenant).order_by("id").values()),
        "records": list(DatasetRecord.objects.filter(dataset__tenant=tenant).order_by("id")
                        .values()),
        "audit": list(AuditLogEntry.objects.filter(tenant=tenant).order_by("id").values()),
    }


def test_staff_members_without_a_role_and_users_without_membership_on_tenant_pages(two_tenants):
    """The policy of SECURITY.md, "Staff on tenant pages", over every dashboard URL:
    - a staff user who is not a member reads every page (never 403/404) and each request leaves
      one `staff.tenant_view` audit entry on that tenant naming the user and the URL; every write
      is 403 and changes nothing (no audit entry either: refused requests leave none);
    - a member whose membership has no role reads like a viewer, every write is 403;
    - a logged-in user with no membership gets 404 everywhere, reads and writes alike."""
    from django.contrib.auth import get_user_model

    from tenants.models import AuditLogEntry, Membership

    acme, globex = two_tenants
    users = get_user_model().objects
    staff = _login(users.create_user("operator", password="x", is_staff=True))
    no_role_user = users.create_user("norole", password="x")
    Membership.objects.create(user=no_role_user, tenant=acme.ctx.tenant, role="")
    no_role = _login(no_role_user)
    nobody = _login(users.create_user("nobody", password="x"))
    reads = [e for e in DASHBOARD_ENDPOINTS if "get" in e.methods]
    writes = [(e, m) for e in DASHBOARD_ENDPOINTS for m in e.methods if m != "get"]
    assert len(reads) >= 10 and len(writes) >= 5

    views = AuditLogEntry.objects.filter(action="staff.tenant_view")
    before_writes = _tenant_state(acme)
    for endpoint, method in writes:
        url = endpoint.url(acme)
        for who, client in (("staff", staff), ("no role", no_role)):
            response = _dashboard_call(client, method, url)
            assert response.status_code == 403, (who, method, url, response.status_code)
        response = _dashboard_call(nobody, method, url)
        assert response.status_code == 404, ("nobody", method, url, response.status_code)
    assert not views.exists(), list(views.values("target"))
    assert _tenant_state(acme) == before_writes  # row contents, not counts

    for seeded in (acme, globex):
        for endpoint in reads:
            url = endpoint.url(seeded)
            before = views.filter(tenant=seeded.ctx.tenant).count()
            response = staff.get(url)
            assert response.status_code == 200, ("staff", url, response.status_code)
            entries = views.filter(tenant=seeded.ctx.tenant)
            assert entries.count() == before + 1, url
            entry = entries.order_by("-id").first()
            assert (entry.actor, entry.target, entry.details) == (
                "user:operator", url, {"method": "GET"}), url
            response = nobody.get(url)
            assert response.status_code == 404, ("nobody", url, response.status_code)
    for endpoint in reads:
        url = endpoint.url(acme)
        response = no_role.get(url)
        assert response.status_code == 200, ("no role", url, response.status_code)
        _assert_no_foreign_markers(response, globex, f"no role GET {url}")
    assert not views.exclude(actor="user:operator").exists()  # members' reads are not audited
    # A staff user who is also a member reads as the member: not a staff view, not audited.
    Membership.objects.create(user=users.get(username="operator"), tenant=globex.ctx.tenant,
                              role=Membership.ADMIN)
    before = views.count()
    assert staff.get(reads[0].url(globex)).status_code == 200
    assert views.count() == before
