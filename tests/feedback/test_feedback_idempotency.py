"""Idempotency-Key: a retry replays the first response and writes nothing twice."""

import io
import threading

import pytest
import requests
from django.db import connection

from feedback.models import DatasetRecord, Feedback
from tenants.models import IdempotencyRecord

BODY = {"conversation_id": "conv_1", "message_id": "msg_1", "type": "correction",
        "correction": "Take 500mg."}


@pytest.mark.django_db
def test_a_retried_feedback_post_writes_once(owner):
    headers = {"HTTP_IDEMPOTENCY_KEY": "retry-1"}
    first = owner.client.post(owner.url("feedback"), BODY, format="json", **headers)
    again = owner.client.post(owner.url("feedback"), BODY, format="json", **headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Feedback.objects.count() == 1
    assert owner.client.get(owner.url("feedback/stats")).json()["corrections"] == 1


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_a_conflict(owner, row_counts, assert_envelope):
    owner.client.post(owner.url("feedback"), BODY, format="json", HTTP_IDEMPOTENCY_KEY="k")
    before = row_counts()
    response = owner.client.post(owner.url("feedback"), {**BODY, "correction": "Other."},
                                 format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert_envelope(response, 409, "idempotency_key_reused")
    assert row_counts() == before


@pytest.mark.django_db
def test_keys_are_per_tenant_and_refusals_are_not_remembered(owner, make_tenant,
                                                             assert_envelope):
    other = make_tenant("initech")
    bad = {**BODY, "type": "rating"}
    assert_envelope(owner.client.post(owner.url("feedback"), bad, format="json",
                                      HTTP_IDEMPOTENCY_KEY="k"), 400, "validation_error")
    assert IdempotencyRecord.objects.count() == 0
    assert owner.client.post(owner.url("feedback"), BODY, format="json",
                             HTTP_IDEMPOTENCY_KEY="k").status_code == 201
    assert other.client.post(other.url("feedback"), BODY, format="json",
                             HTTP_IDEMPOTENCY_KEY="k").status_code == 201
    assert Feedback.objects.count() == 2
    assert_envelope(owner.client.post(owner.url("feedback"), BODY, format="json",
                                      HTTP_IDEMPOTENCY_KEY="x" * 256), 400,
                    "invalid_idempotency_key")


@pytest.mark.django_db
def test_retried_uploads_write_once(owner):
    dataset_id = owner.client.post(owner.url("datasets/register"),
                                   {"name": "d", "type": "conversations"},
                                   format="json").json()["id"]
    records = {"conversations": [{"messages": [{"role": "user", "content": f"q{i}"},
                                               {"role": "assistant", "content": "a"}]}
                                 for i in range(3)]}
    url = owner.url(f"datasets/{dataset_id}/upload/conversations")
    first = owner.client.post(url, records, format="json", HTTP_IDEMPOTENCY_KEY="up-1")
    again = owner.client.post(url, records, format="json", HTTP_IDEMPOTENCY_KEY="up-1")
    assert first.json() == again.json() and first.json()["stored"] == 3
    assert again["Idempotent-Replayed"] == "true"

    def jsonl():
        upload = io.BytesIO(b'{"messages": [{"role": "user", "content": "file q"}, '
                            b'{"role": "assistant", "content": "a"}]}\n')
        upload.name = "d.jsonl"
        return upload

    file_url = owner.url(f"datasets/{dataset_id}/upload")
    first = owner.client.post(file_url, {"file": jsonl()}, format="multipart",
                              HTTP_IDEMPOTENCY_KEY="file-1")
    again = owner.client.post(file_url, {"file": jsonl()}, format="multipart",
                              HTTP_IDEMPOTENCY_KEY="file-1")
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert DatasetRecord.objects.count() == 4
    detail = owner.client.get(owner.url(f"datasets/{dataset_id}")).json()
    assert detail["record_count"] == 4 and detail["duplicate_count"] == 0


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_duplicates_write_once(live_server, make_tenant):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent requests need a server database (SQLite tests share one "
                    "in-memory connection across live-server threads)")
    ctx = make_tenant("race")
    url = f"{live_server.url}/v1/tenants/race/feedback"
    headers = {"Authorization": f"Bearer {ctx.secret}", "Idempotency-Key": "same-key"}
    barrier = threading.Barrier(6)
    responses = []

    def hit():
        barrier.wait()
        responses.append(requests.post(url, json=BODY, headers=headers, timeout=30))

    threads = [threading.Thread(target=hit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status_code for r in responses) == [201] * 6
    assert len({r.json()["id"] for r in responses}) == 1
    assert Feedback.objects.count() == 1 and IdempotencyRecord.objects.count() == 1
