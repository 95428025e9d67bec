"""The dashboard's training form with the KTO method: its defaults, the parameters it sends (beta
and the minimum feedback, never the DPO pair threshold), the API's bounds and a dry-run estimate
on lone thumbs, through the real services (no browser)."""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def _lone_thumbs(tenant, n: int) -> None:
    from feedback.services import conversation_log, feedback_submit

    for i in range(n):
        conversation_log(tenant=tenant, conversation_id=f"c{i}", messages=[
            {"message_id": f"u{i}", "role": "user", "content": f"Question {i}?"},
            {"message_id": f"a{i}", "role": "assistant", "content": f"Answer {i}."},
        ])
        feedback_submit(tenant=tenant, conversation_id=f"c{i}", message_id=f"a{i}",
                        type="thumbs_up" if i % 3 else "thumbs_down")


def test_the_form_offers_kto_with_its_defaults(client_for, admin_a, tenant_a):
    page = client_for(admin_a).get(reverse("dashboard:training", args=["acme"]))
    assert ("kto", "KTO: thumbs and ratings, no pairs needed") in \
        page.context["form"].fields["method"].choices
    defaults = page.context["method_defaults"]["kto"]
    assert defaults["beta"] == 0.1 and defaults["min_feedback_count"] == 50
    assert "min_preference_pairs" not in defaults
    assert 'data-only="dpo kto"' in page.content.decode()  # beta's row, for the method switch


def test_a_kto_dry_run_from_the_form_estimates_a_job_on_lone_thumbs(client_for, admin_a,
                                                                    tenant_a):
    from training.models import TrainingJob

    _lone_thumbs(tenant_a, 12)
    url = reverse("dashboard:training", args=["acme"])
    refused = client_for(admin_a).post(url, {"method": "kto", "batch_size": "1"})
    assert refused.status_code == 400 and "batch_size" in refused.content.decode()
    response = client_for(admin_a).post(url, {
        "method": "kto", "min_feedback_count": "10", "beta": "0.2",
        "min_preference_pairs": "500"})  # a DPO field: not sent for KTO
    assert response.status_code == 200, response.content.decode()[:2000]
    assert response.context["estimate"]["training_samples"] + \
        response.context["estimate"]["eval_samples"] == 12
    params = response.context["confirm_params"]
    assert params["beta"] == 0.2 and "min_preference_pairs" not in params
    assert not TrainingJob.objects.exists()


def test_the_form_starts_from_the_defaults_of_the_tenants_base(client_for, admin_a, tenant_a,
                                                               settings):
    """The form states every number it shows, and stated values win over a base's recipe; so on
    a base with a recipe (the embedded SmolLM2 has `small_base`) it must show the recipe's values,
    not the seed's, or every job started from it would train with the seed's (lr 2e-4 x 3 epochs
    taught the 135M base nothing)."""
    from training.services.recipes import RECIPES

    url = reverse("dashboard:training", args=["acme"])
    settings.BASE_MODEL_RECIPES = {}
    seeded = client_for(admin_a).get(url).context
    assert seeded["method_defaults"]["sft"]["learning_rate"] == 2e-4
    assert seeded["form"].initial["learning_rate"] == 2e-4
    assert "sft_weight" not in seeded["method_defaults"]["dpo"]  # blank: plain DPO

    settings.BASE_MODEL_RECIPES = {settings.DEFAULT_BASE_MODEL: "small_base"}
    small = client_for(admin_a).get(url).context
    recipe = RECIPES["small_base"]
    assert small["method_defaults"]["sft"]["learning_rate"] == recipe["sft"]["learning_rate"]
    assert small["form"].initial["epochs"] == recipe["sft"]["epochs"]
    assert small["method_defaults"]["dpo"]["sft_weight"] == recipe["dpo"]["sft_weight"]
    assert small["method_defaults"]["dpo"]["learning_rate"] == 5e-5  # the recipe leaves it
    assert small["method_defaults"]["kto"]["beta"] == 0.1
