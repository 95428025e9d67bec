"""The dashboard pages and their JSON chart data, through Django's test client (no browser):
what they show, and what their forms change, through the apps' real services."""

import pytest
from django.urls import reverse

from adapters.selectors import ab_test_settings
from tests.factories import adapter_version, finished_job
from training.selectors import training_settings_get

pytestmark = pytest.mark.django_db


def submit_feedback(tenant, kinds: dict[str, int]) -> None:
    """Log one assistant answer per feedback and react to it, through the feedback services."""
    from feedback.services import conversation_log, feedback_submit

    n = 0
    for kind, count in kinds.items():
        for _ in range(count):
            n += 1
            conversation_log(tenant=tenant, conversation_id=f"c{n}", messages=[
                {"message_id": f"u{n}", "role": "user", "content": "What are the store hours?"},
                {"message_id": f"a{n}", "role": "assistant", "content": "9 to 5."},
            ])
            extra = {"correction": "Call me at +1 415 555 0134, we open 9am-6pm."} \
                if kind == "correction" else {}
            feedback_submit(tenant=tenant, conversation_id=f"c{n}", message_id=f"a{n}",
                            type=kind, **extra)


def test_it_shows_readiness_pii_and_feedback_by_day_on_the_overview(client_for, admin_a,
                                                                    tenant_a):
    submit_feedback(tenant_a, {"correction": 5, "thumbs_up": 20, "thumbs_down": 10})
    c = client_for(admin_a)
    page = c.get(reverse("dashboard:overview", args=["acme"]))
    body = page.content.decode()
    assert page.status_code == 200
    # readiness bars toward 50 corrections / 100 thumbs, with their ARIA values
    assert 'id="ready-sft"' in body and 'aria-valuenow="10"' in body
    assert 'id="ready-dpo"' in body and 'aria-valuenow="30"' in body
    assert "5 / 50" in body and "30 / 100" in body
    assert "Not ready yet" in body
    # the phone number in the corrections was redacted and counted
    assert 'data-field="pii-total"' in body
    assert page.context["pii_total"] >= 5

    data = c.get(reverse("dashboard:overview_data", args=["acme"])).json()
    series = data["feedback"]["series"]
    assert len(data["feedback"]["dates"]) == 30
    assert sum(series["correction"]) == 5
    assert sum(series["thumbs_up"]) == 20 and sum(series["thumbs_down"]) == 10
    assert series["correction"][-1] == 5  # all of it today


def test_it_serves_the_curves_and_events_the_job_page_polls(client_for, admin_a, tenant_a):
    job = finished_job(tenant_a, method="dpo", steps=10, eval_every=5)
    data = client_for(admin_a).get(reverse("dashboard:job_data", args=["acme", job.id])).json()
    assert data["job"]["status"] == "completed" and data["job"]["progress"] == 1.0
    assert data["curves"]["train"]["step"] == list(range(1, 11))
    assert len(data["curves"]["train"]["loss"]) == 10
    assert data["curves"]["eval"]["step"] == [5, 10]
    assert data["curves"]["dpo"]["margin"][0] == pytest.approx(0.2)
    assert [e["to_status"] for e in data["events"]] == ["completed"]


def test_it_refuses_to_estimate_a_job_without_enough_data(client_for, admin_a, tenant_a):
    from training.models import TrainingJob

    response = client_for(admin_a).post(reverse("dashboard:training", args=["acme"]), {
        "method": "sft", "epochs": "3", "learning_rate": "0.0002", "min_feedback_count": "50"})
    assert response.status_code == 400
    assert "Not enough training data" in response.content.decode()
    assert not TrainingJob.objects.exists()


def test_it_refuses_parameters_outside_the_apis_ranges(client_for, admin_a, tenant_a):
    response = client_for(admin_a).post(reverse("dashboard:training", args=["acme"]), {
        "method": "sft", "learning_rate": "0.5", "lora_r": "999"})
    body = response.content.decode()
    assert response.status_code == 400
    assert "learning_rate" in body and "lora_r" in body


def test_it_refuses_training_on_the_free_plan(client_for, make_user, make_tenant):
    tenant = make_tenant("freebie", plan="free").tenant
    user = make_user("frank", tenant=tenant)
    response = client_for(user).post(reverse("dashboard:training", args=["freebie"]),
                                     {"method": "dpo"})
    assert response.status_code == 400
    assert "does not include training" in response.content.decode()


def test_it_prefills_the_training_form_with_the_seeds_defaults(client_for, admin_a, tenant_a,
                                                               settings):
    """On a base without a recipe (a base with one: tests/dashboard/test_kto_form.py)."""
    settings.BASE_MODEL_RECIPES = {}
    page = client_for(admin_a).get(reverse("dashboard:training", args=["acme"]))
    form = page.context["form"]
    assert form.initial["lora_r"] == 16 and form.initial["lora_alpha"] == 32
    assert form.initial["epochs"] == 3 and form.initial["learning_rate"] == 2e-4
    assert form.initial["batch_size"] == 4 and form.initial["min_feedback_count"] == 50
    defaults = page.context["method_defaults"]
    assert defaults["dpo"]["beta"] == 0.1 and defaults["dpo"]["epochs"] == 2
    assert defaults["dpo"]["learning_rate"] == 5e-5


def test_it_shows_a_new_api_key_once_and_revokes_it(client_for, admin_a, tenant_a):
    from rest_framework.test import APIClient

    from tenants.models import ApiKey

    c = client_for(admin_a)
    created = c.post(reverse("dashboard:api_keys", args=["acme"]),
                     {"name": "ci", "access": "read_only"})
    assert created.status_code == 201
    secret = created.context["new_secret"]
    assert secret.startswith("sk-") and secret in created.content.decode()
    assert created["Cache-Control"].startswith("max-age=0") or "no-cache" in \
        created["Cache-Control"]

    listing = c.get(reverse("dashboard:api_keys", args=["acme"])).content.decode()
    assert secret not in listing and secret[:10] in listing

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert api.get("/v1/tenants/acme/settings").status_code == 200
    key = ApiKey.objects.get(tenant=tenant_a, name="ci")
    assert key.access == "read_only" and key.created_by == admin_a

    assert c.post(reverse("dashboard:api_key_revoke", args=["acme", key.pk])).status_code == 302
    assert api.get("/v1/tenants/acme/settings").status_code == 401


def test_it_turns_automatic_training_on_and_off(client_for, admin_a, tenant_a):
    c = client_for(admin_a)
    url = reverse("dashboard:settings", args=["acme"])
    response = c.post(url, {"enabled": "on", "method": "dpo", "min_new_feedback": "25"})
    assert response.status_code == 302
    assert training_settings_get(tenant=tenant_a).auto_training == {
        "enabled": True, "method": "dpo", "min_new_feedback": 25}
    assert b'id="auto-state">on<' in c.get(url).content
    c.post(url, {"method": "dpo", "min_new_feedback": "25"})
    assert training_settings_get(tenant=tenant_a).auto_training_enabled is False


def test_it_shows_and_changes_the_tenants_base_model(client_for, admin_a, viewer_a, tenant_a,
                                                    settings):
    """The settings page offers the operator's BASE_MODELS; the choice goes through the same
    settings service as the API (stored, audited, refused with the choices named)."""
    from tenants.models import AuditLogEntry

    settings.BASE_MODELS = {"main": "/models/main", "other": "/models/other"}
    settings.DEFAULT_BASE_MODEL = "main"
    c = client_for(admin_a)
    url = reverse("dashboard:settings", args=["acme"])
    page = c.get(url).content.decode()
    assert "the platform default (main)" in page
    assert '<option value="other">other</option>' in page

    response = c.post(url, {"section": "base_model", "base_model": "other"})
    assert response.status_code == 302
    assert training_settings_get(tenant=tenant_a).base_model == "other"
    assert 'id="base-model">other<' in c.get(url).content.decode()
    entry = AuditLogEntry.objects.filter(action="settings.updated").latest("pk")
    assert entry.details == {"changed": ["base_model"], "via": "dashboard"}

    refused = c.post(url, {"section": "base_model", "base_model": "gpt-9"})
    assert refused.status_code == 400
    assert "Unknown base model &#x27;gpt-9&#x27;. Choose one of: main, other." in \
        refused.content.decode()
    assert training_settings_get(tenant=tenant_a).base_model == "other"

    assert c.post(url, {"section": "base_model", "base_model": ""}).status_code == 302
    assert training_settings_get(tenant=tenant_a).base_model == ""
    # the automatic-training form beside it is unchanged by these posts
    assert training_settings_get(tenant=tenant_a).auto_training_enabled is False

    viewer = client_for(viewer_a)
    assert "Save base model" not in viewer.get(url).content.decode()
    assert viewer.post(url, {"section": "base_model", "base_model": "other"}).status_code == 403
    assert training_settings_get(tenant=tenant_a).base_model == ""


def test_it_shows_a_refused_ab_split_entry_as_the_field_error(client_for, admin_a, tenant_a):
    """A weight that is not a number is refused before the service (as a domain error, like the
    service's own refusals), and nothing is stored."""
    adapter_version(tenant_a, 1, active=True)
    adapter_version(tenant_a, 2)
    response = client_for(admin_a).post(reverse("dashboard:ab_test", args=["acme"]),
                                        {"enabled": "on", "weight_v1": "half",
                                         "weight_v2": "0.5"})
    assert response.status_code == 400
    assert "versions: v1: “half” is not a number." in response.content.decode()
    assert ab_test_settings(tenant_a)["enabled"] is False


def test_it_refuses_an_ab_split_naming_a_missing_version(client_for, admin_a, tenant_a):
    adapter_version(tenant_a, 1, active=True)
    response = client_for(admin_a).post(reverse("dashboard:ab_test", args=["acme"]),
                                        {"enabled": "on", "weight_v1": "0.5",
                                         "weight_v7": "0.5"})
    assert response.status_code == 400
    assert "v7 does not exist" in response.content.decode()
    assert ab_test_settings(tenant_a)["enabled"] is False


def test_it_asks_before_activating_a_version_with_a_worse_eval_loss(client_for, admin_a,
                                                                    tenant_a):
    from adapters.models import AdapterVersion

    adapter_version(tenant_a, 1, active=True, eval_loss=0.3)
    adapter_version(tenant_a, 2, eval_loss=0.9)
    c = client_for(admin_a)
    url = reverse("dashboard:adapter_activate", args=["acme", 2])
    refused = c.post(url)
    assert refused.status_code == 409
    assert "worse held-out eval loss" in refused.content.decode()
    assert refused.context["can_force"] is True
    assert AdapterVersion.objects.get(tenant=tenant_a, is_active=True).number == 1
    assert c.post(url, {"force": "1"}).status_code == 302
    assert AdapterVersion.objects.get(tenant=tenant_a, is_active=True).number == 2


def test_it_shows_per_version_metrics_with_intervals(client_for, admin_a, tenant_a):
    from feedback.services import conversation_log, feedback_submit

    v1 = adapter_version(tenant_a, 1, active=True)
    for i in range(6):
        conversation_log(tenant=tenant_a, conversation_id=f"c{i}", served_by_version=v1,
                         messages=[{"message_id": f"u{i}", "role": "user", "content": "hi"},
                                   {"message_id": f"a{i}", "role": "assistant",
                                    "content": "hello"}])
        feedback_submit(tenant=tenant_a, conversation_id=f"c{i}", message_id=f"a{i}",
                        type="thumbs_up" if i < 4 else "thumbs_down")
    data = client_for(admin_a).get(reverse("dashboard:adapters_data", args=["acme"])).json()
    row = data["metrics"]["versions"][0]
    assert row["version"] == "v1"
    assert row["thumbs_up_rate"]["value"] == pytest.approx(4 / 6)
    low, high = row["thumbs_up_rate"]["ci95"]
    assert low < 4 / 6 < high


def test_it_compares_jobs_with_a_diff_of_parameters_and_data(client_for, make_user, tenant_a,
                                                             tenant_b):
    a = finished_job(tenant_a, params={"lora_r": 8, "epochs": 3}, gpu_hours=2.0,
                     manifest={"train": {"records": 60}, "eval": {"records": 6}})
    b = finished_job(tenant_b, params={"lora_r": 16, "epochs": 3}, gpu_hours=0.5,
                     manifest={"train": {"records": 90}, "eval": {"records": 6}})
    c = client_for(make_user("operator", is_staff=True))
    data = c.get("/staff/data.json", {"jobs": f"{a.id},{b.id}"}).json()
    comparison = data["comparison"]
    assert [curve["job_id"] for curve in comparison["curves"]] == [a.id, b.id]
    assert all(len(curve["loss"]) == 12 for curve in comparison["curves"])
    params = {row["name"]: row for row in comparison["params"]}
    assert params["lora_r"]["differs"] and params["lora_r"]["values"] == [8, 16]
    assert not params["epochs"]["differs"]
    counts = {row["name"]: row for row in comparison["data"]}
    assert counts["train.records"]["values"] == [60, 90] and counts["train.records"]["differs"]
    assert not counts["eval.records"]["differs"]
    gpu = data["gpu_hours"]
    assert gpu["tenants"]["acme"] == [2.0] and gpu["tenants"]["globex"] == [0.5]

    page = c.get("/staff/", {"job": [a.id, b.id]}).content.decode()
    assert 'class="differs"' in page


def test_it_keeps_the_staff_dashboard_up_when_redis_is_down(client_for, make_user, settings):
    from synapsex_site.embedded_redis import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings.RQ_QUEUES = {name: {**conf, "URL": dead} for name, conf in
                          settings.RQ_QUEUES.items()}
    page = client_for(make_user("operator", is_staff=True)).get("/staff/")
    assert page.status_code == 200
    assert 'id="redis-down"' in page.content.decode()
    assert "Redis is not reachable" in page.content.decode()


def test_it_shows_queue_depth_from_redis(client_for, make_user, rq_connection):
    from rq import Queue

    # straight to Redis (django_rq's queue would wait for a commit this test never makes)
    Queue("training", connection=rq_connection).enqueue("training.jobs.training_job_execute",
                                                        "train_nope")
    page = client_for(make_user("operator", is_staff=True)).get("/staff/")
    queues = {q["name"]: q for q in page.context["queues"]["queues"]}
    assert page.context["queues"]["ok"] is True
    assert queues["training"]["queued"] == 1


def test_it_draws_the_loss_curve_on_the_admins_job_page(client_for, make_user, tenant_a):
    job = finished_job(tenant_a)
    admin = make_user("root", is_staff=True)
    admin.is_superuser = True
    admin.save()
    c = client_for(admin)
    page = c.get(reverse("admin:training_trainingjob_change", args=[job.id]))
    body = page.content.decode()
    assert page.status_code == 200
    assert 'id="admin-loss-chart"' in body and "vendor/plotly.min.js" in body
    assert f"/staff/jobs/{job.id}/curves.json" in body
    curves = c.get(f"/staff/jobs/{job.id}/curves.json").json()["curves"]
    assert len(curves["train"]["step"]) == 12

    index = c.get("/admin/").content.decode()
    assert 'href="/admin/django-rq/"' in index and "RQ queue health" in index
