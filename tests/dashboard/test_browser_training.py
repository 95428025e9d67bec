"""Start a real training job from the dashboard and watch it in the browser.

Nothing is simulated: the form calls the training service (dry-run estimate, then the job row
and the RQ enqueue), a real RQ worker runs the job, the local backend starts the real trainer on
the tiny offline base model, and the runner turns its events into the rows the job page polls.
The worker runs in this (main) thread while Chromium keeps polling on its own; a
MutationObserver in the page records every value the progress bar took.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.django_db(transaction=True, serialized_rollback=True)]

REPO = Path(__file__).resolve().parents[2]

RECORD_PROGRESS = """() => {
  const bar = document.querySelector('[role=progressbar]');
  window.__progress = [Number(bar.getAttribute('aria-valuenow'))];
  new MutationObserver(() => window.__progress.push(Number(bar.getAttribute('aria-valuenow'))))
    .observe(bar, {attributes: true, attributeFilter: ['aria-valuenow']});
}"""


@pytest.fixture
def training_env(settings, tmp_path, tiny_base_path, rq_connection, media_root):
    from tests.dashboard.conftest import sqlite_in_memory

    if sqlite_in_memory():
        pytest.skip("a worker and the live server need a file or PostgreSQL test database "
                    "(run tests/dashboard on its own, or on PostgreSQL)")
    settings.BASE_MODEL_PATH = str(tiny_base_path)
    settings.BASE_MODEL_HF_ID = ""
    settings.TRAINING_WORK_DIR = tmp_path / "jobs"
    settings.TRAINING_BACKEND = "local"
    # The tiny base has no recipe: the form shows the seed's defaults (a base with one:
    # tests/dashboard/test_kto_form.py).
    settings.BASE_MODEL_RECIPES = {}
    settings.TRAINING_POLL_SECONDS = 0.2
    # the page polls faster than its 1.5 s default, so a quick run still shows steps between
    settings.DASHBOARD_JOB_POLL_MS = 250
    return rq_connection


def conversations_dataset(tenant, n: int = 40):
    """A dataset of `n` short Q&A conversations, stored through the feedback services."""
    from feedback.services import dataset_register, dataset_upload, upload_items_from_list

    dataset, _ = dataset_register(tenant=tenant, name="faq", type="conversations")
    records = [{"messages": [
        {"role": "user", "content": f"What is the opening time of store {i}?"},
        {"role": "assistant", "content": f"Store {i} opens at {8 + i % 4} am."},
    ]} for i in range(n)]
    dataset_upload(tenant=tenant, dataset=dataset, items=upload_items_from_list(records))
    return dataset


def start_job_from_form(page, live_server, *, epochs: str, screenshot=None) -> str:
    """Fill the training form, read the dry-run estimate, confirm; returns the job id."""
    page.goto(f"{live_server.url}/t/acme/training/")
    page.get_by_label("Method").select_option("dpo")
    assert page.get_by_label("Beta").is_visible()
    assert page.get_by_label("Epochs").input_value() == "2"  # DPO's default
    assert page.get_by_label("Supervised loss weight (DPO)").is_visible()
    page.get_by_label("Method").select_option("kto")
    assert page.get_by_label("Beta").is_visible()  # DPO and KTO
    assert page.get_by_label("Supervised loss weight (DPO)").is_hidden()
    assert page.get_by_label("Minimum preference pairs (DPO)").is_hidden()
    assert page.get_by_label("Minimum feedback (SFT, KTO)").is_visible()
    page.get_by_label("Method").select_option("sft")
    assert page.get_by_label("Beta").is_hidden()  # DPO and KTO only
    assert page.get_by_label("Epochs").input_value() == "3"  # SFT's default
    page.get_by_label("Preset").select_option("small_corrections")
    assert page.get_by_label("LoRA r").input_value() == "8"  # the preset filled it in
    page.get_by_label("Epochs").fill(epochs)
    page.get_by_label("Learning rate").fill("0.005")
    page.get_by_label("Batch size").fill("4")
    page.get_by_label("Minimum feedback (SFT, KTO)").fill("10")
    page.get_by_role("button", name="Estimate").click()
    estimate = page.locator("#estimate")
    assert estimate.get_by_role("heading", name="Confirm: dry-run estimate").is_visible()
    assert float(page.locator("[data-field=estimated-minutes]").inner_text()) > 0
    assert page.locator("[data-field=estimated-cost]").inner_text().startswith("$")
    if screenshot:
        screenshot(page, "07-training-estimate")
    page.get_by_role("button", name="Confirm and start").click()
    page.wait_for_url(f"{live_server.url}/t/acme/training/train_*/")
    return page.url.rstrip("/").rsplit("/", 1)[-1]


@pytest.mark.timeout(600)
def test_it_starts_a_job_and_the_progress_bar_moves_while_it_trains(
        live_server, page, login, screenshot, tenant_a, admin_a, training_env):
    import django_rq
    from rq import SimpleWorker

    from adapters.models import AdapterVersion
    from training.models import TrainingJob, TrainingMetric

    conversations_dataset(tenant_a, n=32)
    login(page, "alice")
    job_id = start_job_from_form(page, live_server, epochs="6", screenshot=screenshot)
    job = TrainingJob.objects.get(pk=job_id)
    assert job.status == "queued" and job.tenant == tenant_a
    assert job.params["lora_r"] == 8 and job.params["epochs"] == 6
    assert page.locator("[data-field=status]").inner_text() == "queued"
    page.evaluate(RECORD_PROGRESS)
    screenshot(page, "08-job-queued")

    # A real RQ worker runs the job to its end; the page keeps polling meanwhile.
    queue = django_rq.get_queue("training")
    SimpleWorker([queue], connection=training_env).work(burst=True)

    job.refresh_from_db()
    assert job.status == "completed", (job.failure_reason, job.log_tail[-2000:])
    page.wait_for_selector("[data-job-live][data-status=completed]")
    seen = page.evaluate("window.__progress")
    assert seen[0] == 0 and seen[-1] == 100
    assert any(0 < value < 100 for value in seen), seen  # it moved, not jumped
    assert seen == sorted(seen)

    train_rows = TrainingMetric.objects.filter(job=job, kind="train").count()
    assert train_rows > 1
    page.wait_for_function(
        "n => document.querySelectorAll('#loss-chart .scatterlayer .trace:nth-child(1) "
        ".points path').length === n", arg=min(train_rows, 400))
    assert page.locator("#cancel-form").is_hidden()
    events = page.locator("#event-rows tr").all_inner_texts()
    assert any("completed" in row for row in events)
    screenshot(page, "09-job-trained")
    assert AdapterVersion.objects.filter(tenant=tenant_a, job=job).exists()


def test_it_cancels_a_job_from_its_page(live_server, page, login, screenshot, tenant_a,
                                        admin_a, training_env):
    from training.models import TrainingEvent, TrainingJob

    conversations_dataset(tenant_a, n=12)
    login(page, "alice")
    job_id = start_job_from_form(page, live_server, epochs="2")
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel job").click()
    page.wait_for_url(f"{live_server.url}/t/acme/training/{job_id}/")

    assert page.locator("[data-field=status]").inner_text() == "cancelled"
    assert page.get_by_text(f"Job {job_id}: cancelled by user.").is_visible()
    assert page.locator("#cancel-button").count() == 0
    job = TrainingJob.objects.get(pk=job_id)
    assert job.status == "cancelled" and job.cancel_requested
    assert TrainingEvent.objects.filter(job=job, to_status="cancelled").exists()
    screenshot(page, "10-job-cancelled")
