"""The adapters page shows the automatic decisions with their numbers: the A/B sequential test
per pair of arms, the auto-rollback check of the active version, and the decisions taken.
Traffic is placed in the past (`at`), so that its conversations are past their settle window;
conversations still inside it are shown as such."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from adapters.services import adapter_settings_update, adapter_version_activate
from adapters.services.decisions import adapter_auto_rollback
from feedback.services import conversation_log_turns, feedback_submit
from tests.factories import adapter_version

pytestmark = pytest.mark.django_db


def _serve(tenant, version, n, prefix, bad, *, hours_ago=2):
    """n conversations served `hours_ago`, the first `bad` thumbed down a minute later."""
    from feedback.models import Feedback, Message

    at = timezone.now() - timedelta(hours=hours_ago)
    for i in range(n):
        _, rows = conversation_log_turns(
            tenant=tenant, conversation_id=f"{prefix}-{i}", served_by_version=version,
            messages=[{"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}])
        Message.objects.filter(pk__in=[r.pk for r in rows]).update(created_at=at)
        if i < bad:
            result = feedback_submit(tenant=tenant, conversation_id=f"{prefix}-{i}",
                                     message_id=rows[-1].external_id, type="thumbs_down")
            Feedback.objects.filter(pk=result.feedback.pk).update(
                created_at=at + timedelta(minutes=1))


def _text(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}".*?</(p|table)>', html, re.S)
    assert match, f"#{element_id} missing"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(0)))


def test_the_rollback_check_and_the_decision_are_shown_with_their_numbers(
        client_for, admin_a, tenant_a):
    from adapters.models import AdapterVersion

    v1 = adapter_version(tenant_a, 1, active=True)
    v2 = adapter_version(tenant_a, 2)
    _serve(tenant_a, v1, 30, "old", bad=2, hours_ago=5)
    adapter_version_activate(version=v2)
    for version, hours in ((v1, 6), (v2, 4)):
        AdapterVersion.objects.filter(pk=version.pk).update(
            activated_at=timezone.now() - timedelta(hours=hours))
    _serve(tenant_a, v2, 30, "new", bad=20)
    _serve(tenant_a, v2, 3, "just-now", bad=0, hours_ago=0)
    url = reverse("dashboard:adapters", args=[tenant_a.slug])

    check = _text(client_for(admin_a).get(url).content.decode(), "rollback-check")

    assert "Auto-rollback (off)" in check
    assert "20/30 bad conversations" in check and "2/30" in check
    assert "3 more inside the 30-minute settle window" in check
    assert "roll back to v1" in check

    adapter_settings_update(tenant=tenant_a, changes={"auto_rollback": True})
    assert adapter_auto_rollback(tenant_id=tenant_a.pk).version == "v1"
    html = client_for(admin_a).get(url).content.decode()

    decisions = _text(html, "online-decisions")
    assert "rolled back" in decisions and "v2 20/30 vs v1 2/30" in decisions
    assert "not applicable" in _text(html, "rollback-check")


def test_the_ab_section_shows_the_sequential_test_per_pair(client_for, admin_a, tenant_a):
    v1 = adapter_version(tenant_a, 1, active=True)
    v2 = adapter_version(tenant_a, 2)
    adapter_settings_update(tenant=tenant_a, changes={
        "lora_ab_test": {"enabled": True, "versions": {"v1": 0.5, "v2": 0.5}}})
    _serve(tenant_a, v1, 40, "a", bad=16)
    _serve(tenant_a, v2, 40, "b", bad=2)

    html = client_for(admin_a).get(reverse("dashboard:adapters", args=[tenant_a.slug])
                                   ).content.decode()

    assert "v2 wins" in _text(html, "ab-decision")
    assert "30-minute settle window" in _text(html, "ab-decision")
    row = _text(html, "ab-comparisons")
    assert "2/40 (0.050)" in row and "16/40 (0.400)" in row and "37.39" in row
    assert "v2 better" in row
