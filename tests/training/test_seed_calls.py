"""Every call of the seed's "Triggering Training" and "Monitoring Training" sections, run as
written (only the base URL, tenant slug and key changed) against a live server, printing what
the seed prints."""

from __future__ import annotations

import re

import pytest

from tests.training.conftest import run_worker_burst

TRIGGER_LORA = '''
import requests
response = requests.post(
"https://api.synapsex.ai/v1/tenants/my_tenant/train/lora",
headers={"Authorization": "Bearer sk-xxx"},
json={
"min_feedback_count": 100,
"lora_r": 16,
"lora_alpha": 32,
"epochs": 3,
"learning_rate": 2e-4,
"batch_size": 4
}
)
job = response.json()
print(f"Training job: {job['job_id']}")
print(f"Estimated time: {job['estimated_duration_minutes']} minutes")
'''

TRIGGER_DPO = '''
response = requests.post(
"https://api.synapsex.ai/v1/tenants/my_tenant/train/dpo",
headers={"Authorization": "Bearer sk-xxx"},
json={
"min_preference_pairs": 100,
"beta": 0.1,
"epochs": 2,
"learning_rate": 5e-5
}
)
'''

MONITOR = '''
response = requests.get(
f"https://api.synapsex.ai/v1/tenants/my_tenant/train/{job_id}",
headers={"Authorization": "Bearer sk-xxx"}
)
status = response.json()
print(f"Status: {status['status']}")
print(f"Progress: {status['progress'] * 100:.1f}%")
print(f"Current epoch: {status['current_epoch']}/{status['total_epochs']}")
print(f"Loss: {status['metrics']['loss']:.4f}")
'''


def _as_written(code: str, base_url: str, slug: str, key: str) -> str:
    return (code.replace("https://api.synapsex.ai", base_url)
            .replace("my_tenant", slug).replace("sk-xxx", key))


def _seed_data(tenant, n: int) -> None:
    """n corrections of logged answers (each is an SFT example and a preference pair)."""
    from feedback.services import conversation_log, feedback_submit

    for i in range(n):
        conversation_log(tenant=tenant, conversation_id=f"conv_{i}", messages=[
            {"message_id": f"msg_{i}_q", "role": "user",
             "content": f"What is the dosage for medicine {i}?"},
            {"message_id": f"msg_{i}_a", "role": "assistant", "content": "250mg"},
        ])
        feedback_submit(tenant=tenant, conversation_id=f"conv_{i}", message_id=f"msg_{i}_a",
                        type="correction", correction=f"The correct answer is {i}00mg.",
                        metadata={"user_id": f"user_{i % 7}", "category": "dosage"})


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_seed_triggering_and_monitoring_calls_run_as_written(
        live_server, make_tenant, rq_connection, base_model, capsys):
    from training.models import TrainingJob

    ctx = make_tenant("my-pharmacy", plan="enterprise")
    _seed_data(ctx.tenant, 105)
    scope: dict = {}
    exec(_as_written(TRIGGER_LORA, live_server.url, ctx.tenant.slug, ctx.secret), scope)
    out = capsys.readouterr().out
    assert scope["response"].status_code == 201, scope["response"].text
    match = re.fullmatch(r"Training job: (train_[0-9a-f]+)\nEstimated time: ([0-9.]+) minutes\n",
                         out)
    assert match, out
    job_id = match.group(1)
    with capsys.disabled():
        print("\n" + out, end="")

    exec(_as_written(TRIGGER_DPO, live_server.url, ctx.tenant.slug, ctx.secret), scope)
    assert scope["response"].status_code == 201, scope["response"].text
    dpo_id = scope["response"].json()["job_id"]
    assert scope["response"].json()["params"]["beta"] == 0.1
    # Only the LoRA job is trained here; the DPO one is cancelled while queued.
    scope["requests"].post(f"{live_server.url}/v1/tenants/{ctx.tenant.slug}/train/{dpo_id}"
                           "/cancel", headers={"Authorization": f"Bearer {ctx.secret}"})
    assert TrainingJob.objects.get(pk=dpo_id).status == "cancelled"

    scope["job_id"] = job_id
    # Before a worker ran there is no loss yet (null until the first step is logged), so the
    # seed's last line cannot format it; the first three print.
    with pytest.raises(TypeError):
        exec(_as_written(MONITOR, live_server.url, ctx.tenant.slug, ctx.secret), scope)
    queued = capsys.readouterr().out
    assert queued == "Status: queued\nProgress: 0.0%\nCurrent epoch: 0/3\n"

    run_worker_burst(queues=("training",))
    exec(_as_written(MONITOR, live_server.url, ctx.tenant.slug, ctx.secret), scope)
    out = capsys.readouterr().out
    with capsys.disabled():
        print(out, end="")
    assert re.fullmatch(r"Status: completed\nProgress: 100\.0%\nCurrent epoch: 3/3\n"
                        r"Loss: \d+\.\d{4}\n", out), out
