"""The activation page shows the version's evaluation (score table, side-by-side samples) and
lets an admin force past the gate it explains. The evaluation rows are stored as the worker
writes them (their generation is tested in tests/adapters/test_evaluation.py)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import adapter_version

pytestmark = pytest.mark.django_db


def _evaluation(version, *, golden_new: int, golden_active: int, kept: int, known: int = 10):
    from adapters.models import AdapterEvaluation

    return AdapterEvaluation.objects.create(
        version=version, status="completed", compared_with="v1",
        scores={
            "golden": {"items": 4, "ids": ["fb_1", "fb_2", "fb_3", "fb_4"],
                       "new": {"right": golden_new, "share": golden_new / 4, "token_f1": 0.5},
                       "active": {"right": golden_active, "share": golden_active / 4,
                                  "token_f1": 0.5},
                       "base": {"right": 0, "share": 0.0, "token_f1": 0.1}},
            "trained": {"items": 2, "new": {"right": 2, "share": 1.0, "token_f1": 0.9}},
            "general": {"items": 20, "base_right": known,
                        "new": {"kept": kept, "kept_share": kept / known},
                        "active": {"kept": known, "kept_share": 1.0}},
            "safety": {"items": 0},
        },
        samples=[{"set": "golden", "id": "fb_1", "question": "What is the code of box 1?",
                  "expected": "Box 1 has code K1.", "new_answer": "Box 1 has code Q9.",
                  "active_answer": "Box 1 has code K1.", "base_answer": "No idea."}],
        regressions=[{"set": "golden", "id": "fb_1", "against": "active"}],
    )


def test_the_activation_page_shows_the_evaluation_and_forces_past_the_gate(
        client_for, admin_a, tenant_a):
    from adapters.models import AdapterVersion

    adapter_version(tenant_a, 1, active=True)
    v2 = adapter_version(tenant_a, 2)
    _evaluation(v2, golden_new=1, golden_active=3, kept=10)
    c = client_for(admin_a)
    url = reverse("dashboard:adapter_activate", args=["acme", 2])
    page = c.get(url).content.decode()
    assert 'id="evaluation-table"' in page
    assert "1/4 (25%)" in page and "3/4 (75%)" in page  # golden: v2 vs v1
    assert "Box 1 has code Q9." in page and "Box 1 has code K1." in page

    refused = c.post(url)
    assert refused.status_code == 409
    assert "fewer of the tenant&#x27;s golden" in refused.content.decode()
    assert refused.context["can_force"] is True
    assert AdapterVersion.objects.get(tenant=tenant_a, is_active=True).number == 1
    assert c.post(url, {"force": "1"}).status_code == 302
    assert AdapterVersion.objects.get(tenant=tenant_a, is_active=True).number == 2


def test_a_version_that_lost_general_knowledge_is_refused_with_the_numbers(
        client_for, admin_a, tenant_a, settings):
    settings.ACTIVATION_MIN_GENERAL_KEPT = 0.8
    adapter_version(tenant_a, 1, active=True)
    v2 = adapter_version(tenant_a, 2)
    _evaluation(v2, golden_new=4, golden_active=3, kept=5)
    refused = client_for(admin_a).post(reverse("dashboard:adapter_activate", args=["acme", 2]))
    assert refused.status_code == 409
    body = refused.content.decode()
    assert "50%" in body and "80%" in body


def test_lost_general_answers_are_listed_with_how_firmly_the_base_held_them(
        client_for, admin_a, tenant_a):
    """The worker annotates each general regression with the base's lead (adapters.services.
    evaluation._annotate_base_leads, measured on the real base in tests/bench/
    test_learning_margins.py); the page lists them and says which were the base's near ties."""
    adapter_version(tenant_a, 1, active=True)
    v2 = adapter_version(tenant_a, 2)
    evaluation = _evaluation(v2, golden_new=4, golden_active=3, kept=8)
    evaluation.scores["general"]["new"]["lost_near_ties"] = 1
    evaluation.regressions = [
        {"set": "general", "id": "gk-040", "question": "What is the capital of India?",
         "base_answer": "The capital of India is New Delhi.",
         "new_answer": "The capital of India is Mumbai.", "base_flip_margin": 0.159,
         "base_near_tie": True},
        {"set": "general", "id": "gk-041", "question": "Who was the first person on the Moon?",
         "base_answer": "Neil Armstrong.", "new_answer": "Jack Horne.",
         "base_flip_margin": None, "base_near_tie": False}]
    evaluation.save()
    page = client_for(admin_a).get(reverse("dashboard:adapter_activate",
                                           args=["acme", 2])).content.decode()
    assert "8/10 (80%); lost near ties of the base: 1" in page
    assert 'id="evaluation-regressions"' in page and "General answers lost (2)" in page
    assert "near tie (0.159 nats)" in page and "The capital of India is Mumbai." in page
    assert "<td>firm</td>" in page and "Jack Horne." in page


def test_a_version_with_a_scope_says_how_many_items_its_adapter_answered(
        client_for, admin_a, tenant_a):
    """A version trained with a scope (scope_gate) was scored as served: the evaluation counts
    how many items of each set reached its adapter, and the page says so beside its score."""
    adapter_version(tenant_a, 1, active=True)
    v2 = adapter_version(tenant_a, 2)
    evaluation = _evaluation(v2, golden_new=4, golden_active=3, kept=10)
    evaluation.scores["scope"] = {"new": {"threshold": 0.5, "golden": 4, "trained": 2,
                                          "general": 1, "safety": 0}}
    evaluation.save()
    page = client_for(admin_a).get(reverse("dashboard:adapter_activate",
                                           args=["acme", 2])).content.decode()
    assert "4/4 (100%); 4 of 4 within its scope" in page
    assert "10/10 (100%); 1 of 20 within its scope" in page
