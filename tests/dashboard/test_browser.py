"""The tenant dashboard in a real browser (headless Debian Chromium driven by Playwright).

Assertions are on what a user sees: the points Plotly drew in the SVG, the progress bar's
aria-valuenow, the badges and the messages; and on the rows the actions changed.
"""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote

from adapters.selectors import ab_test_settings
from adapters.services import adapter_settings_update
from tests.factories import adapter_version, finished_job

# Transactional: the live server thread must see the rows; serialized_rollback keeps the plans
# of the data migration across the flushes.
pytestmark = [pytest.mark.browser,
              pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def trace_points(page, chart_id: str, trace: int) -> int:
    """How many markers Plotly drew for the `trace`-th scatter trace of a chart."""
    return page.locator(f"#{chart_id} .scatterlayer .trace:nth-child({trace}) .points path"
                        ).count()


def line_vertices(page, chart_id: str, trace: int) -> int:
    """Vertices of the trace's line: the moveto plus one lineto per further point."""
    d = page.locator(f"#{chart_id} .scatterlayer .trace:nth-child({trace}) path.js-line"
                     ).first.get_attribute("d")
    return d.count("M") + d.count("L")


def test_it_logs_in_a_tenant_admin_and_draws_the_loss_curve_of_a_completed_job(
        live_server, page, login, screenshot, tenant_a, admin_a):
    from training.models import TrainingMetric

    job = finished_job(tenant_a, steps=12, eval_every=4)
    train_rows = TrainingMetric.objects.filter(job=job, kind="train").count()
    eval_rows = TrainingMetric.objects.filter(job=job, kind="eval").count()

    login(page, "alice")
    # one membership: straight to the tenant's overview
    assert page.url == f"{live_server.url}/t/acme/"
    assert page.get_by_role("heading", name="Overview").is_visible()
    page.wait_for_selector("#feedback-chart .main-svg")
    screenshot(page, "01-overview")

    page.goto(f"{live_server.url}/t/acme/training/{job.id}/")
    page.wait_for_selector("#loss-chart .scatterlayer .trace .points path")
    assert trace_points(page, "loss-chart", 1) == train_rows == 12
    assert trace_points(page, "loss-chart", 2) == eval_rows == 3
    assert line_vertices(page, "loss-chart", 1) == train_rows
    bar = page.get_by_role("progressbar")
    assert bar.get_attribute("aria-valuenow") == "100"
    assert page.locator("[data-field=status]").inner_text() == "completed"
    assert page.locator("#cancel-button").count() == 0  # nothing to cancel
    screenshot(page, "02-job-completed")
    assert page.js_errors == []


def test_it_draws_dpo_reward_margins(live_server, page, login, tenant_a, admin_a):
    job = finished_job(tenant_a, method="dpo", steps=8, eval_every=4)
    login(page, "alice")
    page.goto(f"{live_server.url}/t/acme/training/{job.id}/")
    page.wait_for_selector("#margin-chart .scatterlayer .trace .points path")
    # margins are logged on every train step and on each eval (steps 4 and 8, merged by step)
    assert trace_points(page, "margin-chart", 1) == 8 + 2


def test_it_activates_an_older_version_after_confirmation(live_server, page, login, screenshot,
                                                          tenant_a, admin_a):
    from adapters.models import AdapterVersion

    v1 = adapter_version(tenant_a, 1, eval_loss=0.4)
    adapter_version(tenant_a, 2, parent=v1, active=True, eval_loss=0.45)
    login(page, "alice")
    page.goto(f"{live_server.url}/t/acme/adapters/")
    assert page.locator("tr[data-version=v2] [data-active]").is_visible()
    screenshot(page, "03-adapters")

    page.get_by_role("link", name="Roll back to v1").click()
    assert page.get_by_role("heading", name="Roll back to v1?").is_visible()
    screenshot(page, "04-activate-confirm")
    page.get_by_role("button", name="Confirm: activate v1").click()
    page.wait_for_url(f"{live_server.url}/t/acme/adapters/")

    assert page.locator("tr[data-version=v1] [data-active]").is_visible()
    assert page.locator("tr[data-version=v2] [data-active]").count() == 0
    assert page.get_by_text("v1 is now the active version.").is_visible()
    assert AdapterVersion.objects.get(tenant=tenant_a, is_active=True).number == 1


def test_it_refuses_an_invalid_ab_split_and_saves_a_valid_one(live_server, page, login,
                                                              screenshot, tenant_a, admin_a):
    v1 = adapter_version(tenant_a, 1, active=True)
    adapter_version(tenant_a, 2, parent=v1)
    login(page, "alice")
    page.goto(f"{live_server.url}/t/acme/adapters/")

    page.get_by_label("A/B test enabled").check()
    page.get_by_label("v1 (active)").fill("0.3")
    page.get_by_label("v2", exact=True).fill("0.6")
    assert "must be 1" in page.locator("#ab-sum").inner_text()
    # the live preview is a Plotly pie with one slice per weighted version
    page.wait_for_selector("#ab-editor-chart .slice")
    assert page.locator("#ab-editor-chart .slice").count() == 2
    page.get_by_role("button", name="Save split").click()

    errors = page.locator("#ab-errors")
    assert errors.is_visible()
    assert "sum to 1" in errors.inner_text()
    screenshot(page, "05-ab-refused")
    assert ab_test_settings(tenant_a) == {"enabled": False, "versions": {}}
    # what the user typed is still there to correct
    assert page.get_by_label("v2", exact=True).input_value() == "0.6"

    page.get_by_label("v1 (active)").fill("0.4")
    page.get_by_role("button", name="Save split").click()
    assert page.get_by_text("A/B split saved.").is_visible()
    assert ab_test_settings(tenant_a) == {"enabled": True,
                                          "versions": {"v1": 0.4, "v2": 0.6}}
    page.goto(f"{live_server.url}/t/acme/")
    page.wait_for_selector("#ab-chart .slice")
    assert page.locator("#ab-chart .slice").count() == 2


def test_it_shows_the_line_numbered_errors_of_a_bad_jsonl_upload(live_server, page, login,
                                                                 screenshot, tenant_a, admin_a):
    from feedback.models import Dataset, DatasetRecord

    login(page, "alice")
    page.goto(f"{live_server.url}/t/acme/datasets/")
    page.get_by_label("Name").fill("support-chats")
    page.get_by_label("Type").select_option("conversations")
    page.get_by_role("button", name="Register").click()
    assert page.get_by_role("heading", name="support-chats").is_visible()
    dataset = Dataset.objects.get(tenant=tenant_a, name="support-chats")

    good = ('{"messages": [{"role": "user", "content": "Store hours?"}, '
            '{"role": "assistant", "content": "9am-6pm."}]}')
    bad_json = '{"messages": [ this is not json'
    bad_role = ('{"messages": [{"role": "wizard", "content": "hi"}, '
                '{"role": "assistant", "content": "hello"}]}')
    body = "\n".join([good, bad_json, good.replace("9am", "10am"), bad_role]) + "\n"
    page.get_by_label("JSONL file", exact=True).set_input_files(
        files=[{"name": "chats.jsonl", "mimeType": "application/jsonl",
                "buffer": body.encode()}])
    page.get_by_role("button", name="Upload and validate").click()

    refused = page.locator("#upload-refused")
    assert refused.is_visible()
    assert "Nothing was stored" in refused.inner_text()
    lines = [int(t) for t in page.locator("tr.report-error td[data-line]").all_inner_texts()]
    assert sorted(set(lines)) == [2, 4]
    rows = page.locator("tr.report-error").all_inner_texts()
    assert any("Not valid JSON" in r for r in rows)
    assert any("wizard" in r or "role" in r for r in rows)
    screenshot(page, "06-upload-report")
    assert DatasetRecord.objects.filter(dataset=dataset).count() == 0

    # the same file, storing the valid lines
    page.get_by_label("JSONL file", exact=True).set_input_files(
        files=[{"name": "chats.jsonl", "mimeType": "application/jsonl",
                "buffer": body.encode()}])
    page.get_by_label("Store the valid lines and skip the invalid ones").check()
    page.get_by_role("button", name="Upload and validate").click()
    assert page.locator("[data-field=record-count]").inner_text() == "2"
    assert DatasetRecord.objects.filter(dataset=dataset).count() == 2


def test_it_overlays_loss_curves_on_the_staff_dashboard_and_the_admin_job_page(
        live_server, page, login, screenshot, make_user, tenant_a, tenant_b):
    a = finished_job(tenant_a, steps=12, params={"lora_r": 8, "epochs": 3}, gpu_hours=1.25)
    b = finished_job(tenant_b, steps=9, eval_every=3, params={"lora_r": 16, "epochs": 3},
                     gpu_hours=0.5)
    finished_job(tenant_b, status="failed", steps=2, failure_reason="bad data: empty snapshot")
    v1 = adapter_version(tenant_b, 1, active=True)
    adapter_version(tenant_b, 2, parent=v1)
    adapter_settings_update(tenant=tenant_b, changes={
        "lora_ab_test": {"enabled": True, "versions": {"v1": 0.3, "v2": 0.7}}})
    staff = make_user("operator", is_staff=True)
    staff.is_superuser = True
    staff.save()

    login(page, "operator")
    page.goto(f"{live_server.url}/staff/?jobs={a.id},{b.id}")
    page.wait_for_selector("#staff-loss-chart .scatterlayer .trace .points path")
    # train and eval curves of a, then of b
    assert trace_points(page, "staff-loss-chart", 1) == 12
    assert trace_points(page, "staff-loss-chart", 2) == 3
    assert trace_points(page, "staff-loss-chart", 3) == 9
    assert trace_points(page, "staff-loss-chart", 4) == 3
    assert page.locator("#param-diff tr.differs").filter(has_text="lora_r").count() == 1
    assert page.get_by_text("bad data: empty snapshot").is_visible()
    page.wait_for_selector("#staff-gpu-chart .barlayer .point")
    assert page.locator("#staff-gpu-chart .barlayer .point").count() == 2  # one per tenant
    page.wait_for_selector("#staff-ab-chart .barlayer .point")
    assert page.locator("#staff-ab-chart .barlayer .point").count() == 2  # v1 and v2 of globex
    screenshot(page, "11-staff")

    page.goto(f"{live_server.url}/admin/training/trainingjob/{quote(a.id)}/change/")
    page.wait_for_selector("#admin-loss-chart .scatterlayer .trace .points path")
    assert trace_points(page, "admin-loss-chart", 1) == 12
    screenshot(page, "12-admin-job")
    page.goto(f"{live_server.url}/admin/")
    assert page.get_by_role("link", name="RQ queue health").get_attribute("href") == \
        "/admin/django-rq/"
    assert page.js_errors == []
