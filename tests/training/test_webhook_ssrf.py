"""Webhooks cannot be aimed at the platform's own network (SSRF).

Registration refuses URLs whose host is, or really resolves to (the system resolver, no mocks),
a loopback, private, link-local, multicast, reserved or unspecified address; delivery resolves
and checks again and connects only to the checked address; redirects are never followed. An
operator's `WEBHOOK_ALLOWED_HOSTS` lets a listed host through. Receivers here are real HTTP
servers on 127.0.0.1, reachable only because the tests that expect delivery allow-list them.
"""

from __future__ import annotations

import pytest

from tests.security.helpers import assert_envelope
from tests.webhook_receiver import WebhookReceiver

REFUSED_URLS = [
    "http://localhost/hook",                      # a name, resolved to 127.0.0.1
    "http://LOCALHOST:8000/hook",
    "http://127.0.0.1/hook",
    "http://127.1/hook",                          # resolves to 127.0.0.1
    "http://2130706433/hook",                     # decimal 127.0.0.1, resolves to it
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",             # IPv4-mapped loopback
    "http://169.254.169.254/latest/meta-data/",   # cloud metadata, link-local
    "http://[fe80::1]/hook",
    "http://10.0.0.1/hook",
    "https://192.168.1.10/hook",
    "http://172.16.5.4/hook",
    "http://100.64.0.1/hook",                     # carrier-grade NAT
    "http://[fd00::1]/hook",                      # unique local
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",                      # multicast
    "http://240.0.0.1/hook",                      # reserved
]


@pytest.fixture
def receiver():
    server = WebhookReceiver()
    yield server
    server.close()


def _delivery(tenant, url: str):
    from training.models import Webhook, WebhookDelivery

    # Written directly: a row registered earlier (say while the host was allowed, or while the
    # name resolved elsewhere). Delivery must check again whatever registration said.
    hook = Webhook.objects.create(tenant=tenant, url=url)
    return WebhookDelivery.objects.create(webhook=hook, tenant=tenant, event="training.job.queued",
                                          url=url, payload={"event": "training.job.queued"})


def test_address_classes():
    from training.webhook_addresses import address_is_public

    for address in ("127.0.0.1", "::1", "10.1.2.3", "172.31.0.1", "192.168.0.1",
                    "169.254.169.254", "fe80::1", "fd12::1", "100.64.0.1", "0.0.0.0", "::",
                    "224.0.0.251", "ff02::1", "240.0.0.1", "255.255.255.255",
                    "::ffff:10.0.0.1", "2002:7f00:1::1", "192.0.2.1", "198.18.0.1"):
        assert not address_is_public(address), address
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert address_is_public(address), address


@pytest.mark.django_db
def test_registration_refuses_non_public_addresses(owner):
    from training.models import Webhook

    for url in REFUSED_URLS:
        response = owner.client.post(owner.url("webhooks"), {"url": url}, format="json")
        error = assert_envelope(response, 400, "webhook_address_forbidden")
        assert "WEBHOOK_ALLOWED_HOSTS" in error["details"]["url"][0], url
    assert not Webhook.objects.filter(tenant=owner.tenant).exists()
    # A public address and a name that does not resolve here (checked again at delivery) pass.
    for url in ("https://93.184.216.34/hook", "https://hooks.example.invalid/hook"):
        response = owner.client.post(owner.url("webhooks"), {"url": url}, format="json")
        assert response.status_code == 201, (url, response.content)


@pytest.mark.django_db
def test_the_operator_allow_list_lets_a_listed_host_register(owner, settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["Localhost", "[::1]"]
    for url in ("http://localhost:8000/hook", "http://[::1]:9000/hook"):
        response = owner.client.post(owner.url("webhooks"), {"url": url}, format="json")
        assert response.status_code == 201, (url, response.content)
    # Only the listed names: the same loopback address under another spelling is still refused.
    for url in ("http://127.0.0.1:8000/hook", "http://127.1/hook"):
        response = owner.client.post(owner.url("webhooks"), {"url": url}, format="json")
        assert_envelope(response, 400, "webhook_address_forbidden")


@pytest.mark.django_db
def test_delivery_checks_again_and_never_connects_to_a_refused_address(owner, receiver,
                                                                       settings):
    from training.webhooks import webhook_deliver

    settings.WEBHOOK_ALLOWED_HOSTS = []
    for url in (f"http://127.0.0.1:{receiver.port}/hook",
                f"http://localhost:{receiver.port}/hook"):
        delivery = _delivery(owner.tenant, url)
        webhook_deliver(delivery_id=delivery.id)  # no exception: a refusal is not retried
        delivery.refresh_from_db()
        assert delivery.status == "failed" and delivery.attempts == 1
        assert delivery.last_error.startswith("refused: ") and "127.0.0.1" in delivery.last_error
        assert delivery.response_status is None
    assert receiver.calls == []


@pytest.mark.django_db
def test_an_allowed_name_is_delivered_to_its_resolved_address(owner, receiver, settings):
    from training.webhooks import webhook_deliver

    settings.WEBHOOK_ALLOWED_HOSTS = ["localhost"]
    delivery = _delivery(owner.tenant, f"http://localhost:{receiver.port}/hook?x=1")
    assert webhook_deliver(delivery_id=delivery.id) == 200
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.last_error == ""
    [call] = receiver.calls
    # Connected to the checked address, the request still names the host the tenant gave.
    assert call["headers"]["Host"] == f"localhost:{receiver.port}"
    assert call["path"] == "/hook?x=1"
    assert call["headers"]["X-SynapseX-Signature"].startswith("sha256=")


@pytest.mark.django_db
def test_redirects_are_not_followed(owner, receiver, settings):
    from training.webhooks import WebhookDeliveryError, webhook_deliver

    settings.WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.WEBHOOK_RETRY_INTERVALS = []
    redirector = WebhookReceiver(redirect_to=f"http://127.0.0.1:{receiver.port}/stolen")
    try:
        delivery = _delivery(owner.tenant, f"http://127.0.0.1:{redirector.port}/hook")
        with pytest.raises(WebhookDeliveryError):
            webhook_deliver(delivery_id=delivery.id)
    finally:
        redirector.close()
    delivery.refresh_from_db()
    assert len(redirector.calls) == 1 and receiver.calls == []
    assert delivery.status == "failed" and delivery.response_status == 307
    assert "redirects are not followed" in delivery.last_error


@pytest.mark.django_db
def test_a_name_that_does_not_resolve_fails_the_attempt_and_is_retried(owner, settings):
    """Accepted at registration (DNS may not know it yet), a failed attempt at delivery that RQ
    retries, never a crash of the delivery job."""
    from training.webhooks import WebhookDeliveryError, webhook_deliver

    settings.WEBHOOK_RETRY_INTERVALS = [1]
    for url in ("https://hooks.example.invalid/hook", "https://xn--nxasmq6b.invalid/hook"):
        delivery = _delivery(owner.tenant, url)
        with pytest.raises(WebhookDeliveryError):
            webhook_deliver(delivery_id=delivery.id)
        delivery.refresh_from_db()
        assert delivery.status == "pending" and delivery.attempts == 1
        assert delivery.last_error.startswith("gaierror: "), delivery.last_error


@pytest.mark.django_db
def test_malformed_hosts_and_ports_are_a_validation_error(owner):
    from training.models import Webhook

    for url in ("http://hooks.example.com:99999/x", "http://hooks.example.com:abc/x",
                "http://[::1/x", "http://hooks.example.com:0/x"):
        response = owner.client.post(owner.url("webhooks"), {"url": url}, format="json")
        error = assert_envelope(response, 400, "validation_error")
        assert "url" in error["details"], url
    assert not Webhook.objects.exists()


def _self_signed(tmp_path, name: str):
    """A certificate for `name` and its key (the test's own CA: it signs itself)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.django_db
def test_https_is_pinned_to_the_checked_address_and_still_verifies_the_host_name(
        owner, settings, tmp_path, monkeypatch):
    """The connection goes to the address the check resolved (127.0.0.1, allow-listed here),
    while TLS sends the URL's host name as SNI and verifies the certificate against it. The
    trust store is the one edge replaced: no public CA signs a certificate for a loopback test
    server, so certifi's bundle is pointed at the test's self-signed certificate."""
    import ssl

    import certifi

    from training.webhooks import WebhookDeliveryError, webhook_deliver

    cert, key = _self_signed(tmp_path, "localhost")
    monkeypatch.setattr(certifi, "where", lambda: str(cert))
    receiver = WebhookReceiver()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
    settings.WEBHOOK_ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
    settings.WEBHOOK_RETRY_INTERVALS = [1]
    try:
        delivery = _delivery(owner.tenant, f"https://localhost:{receiver.port}/hook")
        assert webhook_deliver(delivery_id=delivery.id) == 200
        assert [c["headers"]["Host"] for c in receiver.calls] == [f"localhost:{receiver.port}"]
        # The same server under its IP: the certificate names localhost, so TLS refuses.
        delivery = _delivery(owner.tenant, f"https://127.0.0.1:{receiver.port}/hook")
        with pytest.raises(WebhookDeliveryError):
            webhook_deliver(delivery_id=delivery.id)
        delivery.refresh_from_db()
        assert "SSLError" in delivery.last_error and len(receiver.calls) == 1
    finally:
        receiver.close()
