"""End to end on a real RQ worker and the tiny base: an OpenAI preference (DPO) JSONL file,
multi-turn inputs included, uploaded unchanged -> POST /train/dpo -> a completed job and an
adapter version; deleting the dataset afterwards flags that version and empties its snapshot."""

from __future__ import annotations

import json

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.training.conftest import run_worker_burst


def preference_line(i: int) -> dict:
    history = [{"role": "user", "content": f"Which shelf holds item {i}?"}]
    if i % 2:  # every other line: a multi-turn input with a system turn
        history = [{"role": "system", "content": "You are the store's assistant."},
                   {"role": "user", "content": "Hi!"},
                   {"role": "assistant", "content": "Hello, how can I help?"}] + history
    return {"input": {"messages": history, "tools": [], "parallel_tool_calls": True},
            "preferred_output": [{"role": "assistant", "content": f"Item {i} is on shelf {i}."}],
            "non_preferred_output": [{"role": "assistant", "content": "No idea, sorry."}]}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_openai_preference_file_trains_a_dpo_adapter(make_tenant, rq_connection,
                                                       training_paths, base_model):
    from adapters.models import AdapterVersion
    from training.models import TrainingJob

    ctx = make_tenant("importer", plan="hybrid")
    dataset_id = ctx.client.post(ctx.url("datasets/register"),
                                 {"name": "openai-dpo", "type": "preferences"},
                                 format="json").json()["id"]
    data = "".join(json.dumps(preference_line(i)) + "\n" for i in range(12)).encode()
    upload = ctx.client.post(ctx.url(f"datasets/{dataset_id}/upload"),
                             {"file": SimpleUploadedFile("dpo.jsonl", data)}, format="multipart")
    assert upload.status_code == 201 and upload.json()["stored"] == 12, upload.content

    response = ctx.client.post(ctx.url("train/dpo"), {
        "min_preference_pairs": 10, "epochs": 1, "batch_size": 4, "learning_rate": 1e-3,
    }, format="json")
    assert response.status_code == 201, response.content
    job = TrainingJob.objects.get(pk=response.json()["job_id"])
    with default_storage.open(f"{job.snapshot_prefix}/train.jsonl") as handle:
        records = [json.loads(line) for line in handle.read().decode().splitlines()]
    multi = [r for r in records if "messages" in r]
    assert multi and all(r["messages"][0]["role"] == "system" for r in multi)
    assert all(r["messages"][-1] == {"role": "user", "content": r["prompt"]} for r in multi)

    run_worker_burst(queues=("training",))
    job.refresh_from_db()
    assert job.status == "completed", (job.failure_reason, job.log_tail)
    version = AdapterVersion.objects.get(tenant=ctx.tenant, job=job)
    assert not version.needs_retraining

    deleted = ctx.client.delete(ctx.url(f"datasets/{dataset_id}")).json()
    assert deleted["adapter_versions_needing_retraining"] == [version.version]
    assert deleted["snapshots_rewritten"] == [{"job_id": job.id, "examples_removed": 12}]
    version.refresh_from_db()
    assert version.needs_retraining
    with default_storage.open(f"{job.snapshot_prefix}/train.jsonl") as handle:
        assert handle.read() == b""
