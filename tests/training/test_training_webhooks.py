"""Webhook registration: only http(s) URLs, removal."""

from __future__ import annotations


def test_webhooks_refuse_non_http_urls_and_can_be_removed(owner):
    for url in ("ftp://example.com/x", "file:///etc/passwd", "javascript:alert(1)", "example"):
        response = owner.client.post(owner.url("webhooks"), {"url": url}, format="json")
        assert response.status_code == 400, url
        assert "url" in response.json()["error"]["details"]
    response = owner.client.post(owner.url("webhooks"),
                                 {"url": "https://hooks.example.com/x", "events": ["completed"]},
                                 format="json")
    assert response.status_code == 201
    hook = response.json()
    assert hook["signing_secret"] == owner.tenant.webhook_secret
    listed = owner.client.get(owner.url("webhooks")).json()["webhooks"]
    assert [h["id"] for h in listed] == [hook["id"]] and "signing_secret" not in listed[0]
    assert owner.client.delete(owner.url(f"webhooks/{hook['id']}")).status_code == 204
    assert owner.client.get(owner.url("webhooks")).json()["webhooks"] == []
