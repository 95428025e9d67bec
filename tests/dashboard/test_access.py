"""Who may see and do what: members only see their tenants (404 otherwise, pages and chart data
alike), viewers read but cannot act (403 and nothing changes), only staff open /staff/."""

import pytest
from django.urls import reverse

from adapters.selectors import ab_test_settings
from tests.factories import adapter_version, finished_job

pytestmark = pytest.mark.django_db


def tenant_urls(tenant, *, job, version, dataset, key) -> dict[str, str]:
    """Every GET page and JSON endpoint of one tenant."""
    s = tenant.slug
    return {
        "overview": reverse("dashboard:overview", args=[s]),
        "overview_data": reverse("dashboard:overview_data", args=[s]),
        "datasets": reverse("dashboard:datasets", args=[s]),
        "dataset": reverse("dashboard:dataset", args=[s, dataset.pk]),
        "training": reverse("dashboard:training", args=[s]),
        "job": reverse("dashboard:job", args=[s, job.id]),
        "job_data": reverse("dashboard:job_data", args=[s, job.id]),
        "adapters": reverse("dashboard:adapters", args=[s]),
        "adapters_data": reverse("dashboard:adapters_data", args=[s]),
        "adapter_activate": reverse("dashboard:adapter_activate", args=[s, version.number]),
        "api_keys": reverse("dashboard:api_keys", args=[s]),
        "settings": reverse("dashboard:settings", args=[s]),
    }


def post_urls(tenant, *, job, version, key) -> dict[str, str]:
    s = tenant.slug
    return {
        "datasets": reverse("dashboard:datasets", args=[s]),
        "training": reverse("dashboard:training", args=[s]),
        "job_cancel": reverse("dashboard:job_cancel", args=[s, job.id]),
        "adapter_activate": reverse("dashboard:adapter_activate", args=[s, version.number]),
        "ab_test": reverse("dashboard:ab_test", args=[s]),
        "api_keys": reverse("dashboard:api_keys", args=[s]),
        "api_key_revoke": reverse("dashboard:api_key_revoke", args=[s, key.pk]),
        "settings": reverse("dashboard:settings", args=[s]),
    }


@pytest.fixture
def b_world(tenant_b):
    """Tenant B's rows that an outsider might try to reach."""
    from feedback.models import Dataset
    from tenants.models import ApiKey

    job = finished_job(tenant_b, status="running")
    v1 = adapter_version(tenant_b, 1, active=True)
    adapter_version(tenant_b, 2, parent=v1)
    dataset = Dataset.objects.create(tenant=tenant_b, name="b-data", type="conversations")
    key = ApiKey.objects.filter(tenant=tenant_b).first()
    return {"job": job, "version": v1, "dataset": dataset, "key": key}


def test_it_shows_a_member_every_page_of_their_tenant(client_for, admin_b, tenant_b, b_world):
    c = client_for(admin_b)
    for name, url in tenant_urls(tenant_b, **b_world).items():
        response = c.get(url)
        assert response.status_code == 200, (name, response.status_code)


def test_it_hides_every_page_and_chart_of_another_tenant(client_for, admin_a, tenant_b,
                                                         b_world):
    c = client_for(admin_a)
    for name, url in tenant_urls(tenant_b, **b_world).items():
        response = c.get(url)
        assert response.status_code == 404, (name, response.status_code)
        assert b"globex" not in response.content


def test_it_refuses_every_action_on_another_tenant(client_for, admin_a, tenant_b, b_world):
    from adapters.models import AdapterVersion
    from tenants.models import ApiKey

    c = client_for(admin_a)
    urls = post_urls(tenant_b, job=b_world["job"], version=b_world["version"],
                     key=b_world["key"])
    # v2 is the one an attacker would try to activate
    urls["adapter_activate"] = reverse("dashboard:adapter_activate", args=[tenant_b.slug, 2])
    for name, url in urls.items():
        response = c.post(url, {"name": "x", "type": "conversations", "method": "sft",
                                "access": "read_write", "weight_v1": "1", "enabled": "on",
                                "min_new_feedback": "5"})
        assert response.status_code == 404, (name, response.status_code)
    b_world["job"].refresh_from_db()
    assert b_world["job"].cancel_requested is False and b_world["job"].status == "running"
    assert AdapterVersion.objects.get(tenant=tenant_b, is_active=True).number == 1
    assert ApiKey.objects.get(pk=b_world["key"].pk).revoked_at is None
    assert ApiKey.objects.filter(tenant=tenant_b).count() == 1


def test_it_lets_a_viewer_read_but_not_activate_or_cancel(client_for, viewer_a, tenant_a):
    from adapters.models import AdapterVersion
    from training.models import TrainingJob

    job = finished_job(tenant_a, status="running")
    v1 = adapter_version(tenant_a, 1, active=True)
    adapter_version(tenant_a, 2, parent=v1)
    c = client_for(viewer_a)

    page = c.get(reverse("dashboard:job", args=[tenant_a.slug, job.id]))
    assert page.status_code == 200
    assert b"Cancel job" not in page.content  # no button for a viewer
    page = c.get(reverse("dashboard:adapters", args=[tenant_a.slug]))
    assert b"Activate v2" not in page.content

    response = c.post(reverse("dashboard:adapter_activate", args=[tenant_a.slug, 2]))
    assert response.status_code == 403
    response = c.post(reverse("dashboard:job_cancel", args=[tenant_a.slug, job.id]))
    assert response.status_code == 403
    response = c.post(reverse("dashboard:ab_test", args=[tenant_a.slug]),
                      {"enabled": "on", "weight_v1": "0.5", "weight_v2": "0.5"})
    assert response.status_code == 403

    assert AdapterVersion.objects.get(tenant=tenant_a, is_active=True).number == 1
    job = TrainingJob.objects.get(pk=job.pk)
    assert job.status == "running" and job.cancel_requested is False
    assert ab_test_settings(tenant_a)["enabled"] is False


def test_it_refuses_a_viewer_every_write(client_for, viewer_a, tenant_a):
    from tenants.models import ApiKey

    key = ApiKey.objects.filter(tenant=tenant_a).first()
    job = finished_job(tenant_a, status="running")
    version = adapter_version(tenant_a, 1)
    c = client_for(viewer_a)
    for name, url in post_urls(tenant_a, job=job, version=version, key=key).items():
        assert c.post(url, {"name": "x"}).status_code == 403, name
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_it_sends_anonymous_visitors_to_the_login_page(client, tenant_a):
    for url in ["/", reverse("dashboard:overview", args=[tenant_a.slug]),
                reverse("dashboard:overview_data", args=[tenant_a.slug]), "/staff/"]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/")


def test_it_refuses_the_staff_dashboard_to_non_staff(client_for, admin_a):
    c = client_for(admin_a)
    assert c.get("/staff/").status_code == 403
    assert c.get("/staff/data.json").status_code == 403
    job = finished_job(admin_a.memberships.first().tenant)
    assert c.get(f"/staff/jobs/{job.id}/curves.json").status_code == 403


def test_it_opens_the_staff_dashboard_to_staff(client_for, make_user, tenant_a, tenant_b):
    finished_job(tenant_a, gpu_hours=1.5)
    finished_job(tenant_b, status="failed", failure_reason="trainer crash: out of memory")
    staff = make_user("operator", is_staff=True)
    c = client_for(staff)
    page = c.get("/staff/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "acme" in body and "globex" in body
    assert "trainer crash: out of memory" in body


def test_it_lists_only_the_users_own_tenants_on_the_home_page(client_for, make_user,
                                                              tenant_a, tenant_b):
    from tenants.models import Membership

    user = make_user("carol", tenant=tenant_a, role="viewer")
    Membership.objects.create(user=user, tenant=tenant_b, role="admin")
    outsider_tenant_page = client_for(make_user("dave", tenant=tenant_a)).get("/")
    # a single membership goes straight to that tenant's overview
    assert outsider_tenant_page.status_code == 302
    assert outsider_tenant_page["Location"] == reverse("dashboard:overview", args=["acme"])
    page = client_for(user).get("/")
    assert page.status_code == 200
    assert b"/t/acme/" in page.content and b"/t/globex/" in page.content


def test_it_refuses_a_post_without_a_csrf_token_and_actions_by_get(admin_a, tenant_a):
    from django.test import Client

    from tenants.models import ApiKey

    job = finished_job(tenant_a, status="running")
    c = Client(enforce_csrf_checks=True)
    c.force_login(admin_a)
    before = ApiKey.objects.filter(tenant=tenant_a).count()
    assert c.post(reverse("dashboard:api_keys", args=["acme"]), {"name": "x"}
                  ).status_code == 403
    assert c.post(reverse("dashboard:job_cancel", args=["acme", job.id])).status_code == 403
    assert ApiKey.objects.filter(tenant=tenant_a).count() == before
    # actions are POST only: a link or an image tag cannot trigger them
    assert c.get(reverse("dashboard:job_cancel", args=["acme", job.id])).status_code == 405
    assert c.get(reverse("dashboard:ab_test", args=["acme"])).status_code == 405
    job.refresh_from_db()
    assert job.status == "running" and not job.cancel_requested
    # every form the admin sees carries the token
    for name in ["datasets", "training", "adapters", "api_keys", "settings"]:
        body = c.get(reverse(f"dashboard:{name}", args=["acme"])).content.decode()
        assert body.count('method="post"') == body.count("csrfmiddlewaretoken"), name
