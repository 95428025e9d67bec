"""API keys and secrets: keyed hashes, constant-time comparison, never logged, per-key rate
limits with Retry-After; dashboard CSRF, secure cookies and headers; `check --deploy` clean with
the production settings."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from tests.security.helpers import api_client, assert_envelope

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]


def test_it_stores_keys_as_hmac_with_the_pepper(owner, settings):
    from tenants.models import ApiKey

    key = ApiKey.objects.get(tenant=owner.tenant)
    expected = hmac.new(settings.API_KEY_PEPPER.encode(), owner.secret.encode(),
                        hashlib.sha256).hexdigest()
    assert key.hashed_secret == expected
    assert key.hashed_secret != hashlib.sha256(owner.secret.encode()).hexdigest()
    assert owner.secret not in key.hashed_secret and owner.secret[10:] not in key.prefix
    assert owner.client.get(owner.url("settings")).status_code == 200
    # A stolen table without the pepper is useless: with another pepper no key matches.
    settings.API_KEY_PEPPER = "another-pepper-" + secrets.token_hex(16)
    assert_envelope(owner.client.get(owner.url("settings")), 401, "invalid_api_key")


def test_it_compares_the_presented_key_in_constant_time(owner, monkeypatch):
    """A spy around the real hmac.compare_digest: authentication must go through it with the
    stored hash, not through `==`."""
    import tenants.authentication as authentication
    from tenants.models import ApiKey

    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(authentication.hmac, "compare_digest", spy)
    assert owner.client.get(owner.url("settings")).status_code == 200
    stored = ApiKey.objects.get(tenant=owner.tenant).hashed_secret
    assert (stored, stored) in calls


def test_it_never_logs_a_key(owner, outsider, caplog, settings):
    settings.DEBUG = False
    bogus = "sk-" + secrets.token_urlsafe(32)
    with caplog.at_level(logging.DEBUG):
        owner.client.get(owner.url("feedback"))
        owner.client.post(owner.url("feedback"), {"type": "nonsense"}, format="json")
        owner.client.get(owner.url("nonexistent/route"))
        outsider.client.get(owner.url("feedback"))
        api_client(bogus).get(owner.url("feedback"))
        api_client(bogus + "\u00e9").get(owner.url("feedback"))
        created = owner.client.post(owner.url("api-keys"), {"name": "ci"}, format="json")
        new_secret = created.json()["secret"]
        api_client(new_secret).get(owner.url("settings"))
        owner.client.post(owner.url(f"api-keys/{created.json()['id']}/revoke"))
        api_client(new_secret).get(owner.url("settings"))
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in (owner.secret, outsider.secret, bogus, new_secret):
        assert secret not in text
        assert secret[12:] not in text  # not even the part after the displayed prefix
    from tenants.models import AuditLogEntry

    for entry in AuditLogEntry.objects.all():
        assert new_secret not in f"{entry.target} {entry.details} {entry.actor}"


def test_it_rate_limits_each_key_with_retry_after(owner, outsider, read_only, monkeypatch):
    from tenants.throttling import ApiKeyRateThrottle

    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "5/min"})
    for _ in range(5):
        assert owner.client.get(owner.url("settings")).status_code == 200
    response = owner.client.get(owner.url("settings"))
    error = assert_envelope(response, 429, "rate_limited")
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    assert error["details"]["retry_after_seconds"] == retry_after
    # Writes are limited by the same budget, before they run.
    assert_envelope(owner.client.post(owner.url("feedback"), {}, format="json"), 429)
    # Per key: another key of the same tenant and another tenant still pass.
    assert read_only.client.get(owner.url("settings")).status_code == 200
    assert outsider.client.get(outsider.url("settings")).status_code == 200


def test_the_dashboard_enforces_csrf(make_tenant):
    from django.contrib.auth import get_user_model

    from tenants.models import Membership

    ctx = make_tenant("acme")
    user = get_user_model().objects.create_user("alice", password="pw-alice-123456")
    Membership.objects.create(user=user, tenant=ctx.tenant, role=Membership.ADMIN)
    browser = Client(enforce_csrf_checks=True)
    # The login form itself needs the token.
    assert browser.post("/accounts/login/", {"username": "alice",
                                             "password": "pw-alice-123456"}).status_code == 403
    browser.get("/accounts/login/")
    token = browser.cookies["csrftoken"].value
    response = browser.post("/accounts/login/", {"username": "alice", "password":
                                                 "pw-alice-123456", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    url = f"/t/{ctx.tenant.slug}/api-keys/"
    assert browser.post(url, {"name": "x", "access": "read_only"}).status_code == 403
    from tenants.models import ApiKey

    assert not ApiKey.objects.filter(name="x").exists()
    token = browser.cookies["csrftoken"].value
    response = browser.post(url, {"name": "x", "access": "read_only",
                                  "csrfmiddlewaretoken": token})
    assert response.status_code in (200, 201, 302)
    assert ApiKey.objects.filter(name="x").exists()


def test_responses_carry_the_security_headers(owner, make_tenant, client):
    api = owner.client.get(owner.url("settings"))
    assert api["Cache-Control"] == "no-store"
    assert api["X-Content-Type-Options"] == "nosniff"
    assert api["Referrer-Policy"] == "same-origin"
    error = owner.client.get("/v1/nowhere")
    assert error["Cache-Control"] == "no-store"
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    csp = page["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    script_src = csp.split("script-src")[1].split(";")[0]
    assert "'self'" in script_src and "'unsafe-inline'" not in script_src  # no inline scripts
    assert "http" not in script_src and "*" not in script_src
    assert page["X-Frame-Options"] == "DENY"
    assert "camera=()" in page["Permissions-Policy"]
    assert page["Cross-Origin-Opener-Policy"] == "same-origin"


def _production_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in {"SYNAPSEX_EMBEDDED", "DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE",
                        "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_COOKIES",
                        # set by the browser tests for Playwright's sync API; never in production
                        "DJANGO_ALLOW_ASYNC_UNSAFE"}}
    env.update({
        "DJANGO_SETTINGS_MODULE": "synapsex_site.production_settings",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "synapsex.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://synapsex.example.com",
        **extra,
    })
    return env


def _manage(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_with_the_production_settings(tmp_path):
    env = _production_env(SYNAPSEX_VAR_DIR=str(tmp_path))
    result = _manage(["check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout, result.stdout
    values = _manage(["shell", "-c",
                      "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, "
                      "s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, s.SECURE_SSL_REDIRECT, "
                      "s.SECURE_HSTS_SECONDS >= 31536000, s.DEBUG)"], env)
    assert values.stdout.split()[-6:] == ["True", "True", "True", "True", "True", "False"], values


@pytest.mark.parametrize("change, message", [
    ({"SECRET_KEY": "short"}, "SECRET_KEY"),
    ({"DEBUG": "true"}, "DEBUG"),
    ({"SYNAPSEX_EMBEDDED": "1"}, "SYNAPSEX_EMBEDDED"),
])
def test_production_settings_refuse_unsafe_values(tmp_path, change, message):
    result = _manage(["check"], _production_env(SYNAPSEX_VAR_DIR=str(tmp_path), **change))
    assert result.returncode != 0
    assert message in result.stderr


def test_the_embedded_settings_do_fail_check_deploy(tmp_path):
    """The check is not vacuous: the development defaults are reported."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update({"SYNAPSEX_EMBEDDED": "1", "SYNAPSEX_VAR_DIR": str(tmp_path)})
    result = _manage(["check", "--deploy", "--fail-level", "WARNING"], env)
    assert result.returncode != 0
    assert "security.W004" in result.stderr + result.stdout  # no HSTS
