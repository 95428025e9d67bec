"""Every API error, whatever its origin, comes out in one envelope."""

import pytest
from django.test import Client, override_settings
from django.urls import path

pytestmark = pytest.mark.django_db


def assert_envelope(response, status, code=None):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if code:
        assert error["code"] == code
    return error


def test_400_validation_error_names_the_field(owner):
    response = owner.client.patch(owner.url("settings"), {"auto_promote_ab_winner": "maybe"},
                                  format="json")
    error = assert_envelope(response, 400, "validation_error")
    assert "auto_promote_ab_winner" in error["details"]


def test_400_malformed_json(owner):
    response = owner.client.generic("PATCH", owner.url("settings"), "{not json",
                                    content_type="application/json")
    assert_envelope(response, 400, "malformed_json")


def test_401_and_403_and_404(owner, outsider, read_only, anon):
    assert_envelope(anon.get(owner.url("settings")), 401, "not_authenticated")
    assert_envelope(read_only.client.patch(owner.url("settings"), {}, format="json"), 403)
    assert_envelope(outsider.client.get(owner.url("settings")), 404, "not_found")


def test_405_method_not_allowed(owner):
    assert_envelope(owner.client.delete(owner.url("settings")), 405, "method_not_allowed")


@pytest.mark.parametrize("url", ["/v1/", "/v1/nothing-here", "/v1/tenants/acme/unknown/route"])
def test_unknown_routes_under_v1(owner, url):
    assert_envelope(owner.client.get(url), 404, "not_found")


def _boom(request):
    raise RuntimeError("boom")


def _drf_boom_view():
    from tenants.api.base import TenantAPIView

    class Boom(TenantAPIView):
        def get(self, request, tenant):
            raise RuntimeError("boom")

    return Boom.as_view()


urlpatterns = [
    path("v1/tenants/<slug:tenant>/boom", _drf_boom_view()),
    path("v1/plain-boom", _boom),
]
handler500 = "tenants.api.errors.handler500"


@override_settings(ROOT_URLCONF=__name__, DEBUG=False)
def test_500_inside_an_api_view_is_an_envelope(owner):
    response = owner.client.get(owner.url("boom"))
    error = assert_envelope(response, 500, "server_error")
    assert "boom" not in error["message"]  # no internals leak


@override_settings(ROOT_URLCONF=__name__, DEBUG=False)
def test_500_outside_drf_is_an_envelope_too():
    client = Client(raise_request_exception=False)
    assert_envelope(client.get("/v1/plain-boom"), 500, "server_error")
