"""DataHub: register, upload (JSON bodies and JSONL files), validation, duplicates, data use."""

import io
import json
import tracemalloc

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile

from feedback.models import DatasetRecord
from feedback.selectors import dataset_records_for_training
from feedback.validation import jsonl_lines

pytestmark = pytest.mark.django_db


def register(ctx, name="d", type="conversations", **data_use):
    response = ctx.client.post(ctx.url("datasets/register"),
                               {"name": name, "type": type, "data_use": data_use}, format="json")
    assert response.status_code in (200, 201), response.content
    return response.json()["id"]


def conv(q="q", a="a"):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def jsonl(*records, raw_lines=()) -> SimpleUploadedFile:
    lines = [json.dumps(r).encode() for r in records] + list(raw_lines)
    return SimpleUploadedFile("data.jsonl", b"\n".join(lines) + b"\n")


def test_it_lists_every_bad_record_with_its_path(owner, assert_envelope):
    dataset_id = register(owner)
    bad = {"messages": [{"role": "user", "content": ""}, {"role": "bot", "content": "a"}]}
    response = owner.client.post(owner.url(f"datasets/{dataset_id}/upload/conversations"),
                                 {"conversations": [conv(), bad, conv("q2"), bad]},
                                 format="json")
    error = assert_envelope(response, 400, "invalid_records")
    records = error["details"]["invalid_records"]
    assert [r["index"] for r in records] == [1, 3]
    assert [e["field"] for e in records[0]["errors"]] == [
        "conversations[1].messages[0].content", "conversations[1].messages[1].role"]
    assert error["details"]["invalid"] == 2 and error["details"]["received"] == 4
    detail = owner.client.get(owner.url(f"datasets/{dataset_id}")).json()
    assert detail["record_count"] == 0
    assert detail["last_validation_report"]["accepted"] is False
    assert detail["last_validation_report"]["invalid"] == 2


def test_skip_invalid_stores_the_good_records_and_lists_the_skipped(owner):
    dataset_id = register(owner)
    bad = {"messages": [{"role": "user", "content": "only a question"}]}
    url = owner.url(f"datasets/{dataset_id}/upload/conversations")
    response = owner.client.post(f"{url}?skip_invalid=true",
                                 {"conversations": [conv(), bad, conv("q2")]}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["stored"], body["skipped"], body["received"]) == (2, 1, 3)
    assert body["skipped_records"][0]["index"] == 1
    assert body["skipped_records"][0]["errors"][0]["field"] == "conversations[1].messages"
    # The body flag works too.
    response = owner.client.post(url, {"conversations": [bad, conv("q3")], "skip_invalid": True},
                                 format="json")
    assert response.json()["stored"] == 1
    assert DatasetRecord.objects.count() == 3


def test_duplicates_are_counted_not_stored(owner):
    dataset_id = register(owner)
    url = owner.url(f"datasets/{dataset_id}/upload/conversations")
    body = owner.client.post(url, {"conversations": [conv(), conv(), conv("q2")]},
                             format="json").json()
    assert (body["stored"], body["duplicates"]) == (2, 1)
    assert body["duplicate_records"] == [{"index": 1}]
    body = owner.client.post(url, {"conversations": [conv("q2"), conv("q3")]},
                             format="json").json()
    assert (body["stored"], body["duplicates"], body["record_count"]) == (1, 1, 3)
    detail = owner.client.get(owner.url(f"datasets/{dataset_id}")).json()
    assert (detail["record_count"], detail["duplicate_count"]) == (3, 2)
    # The same pair in another dataset is not a duplicate there.
    other = register(owner, "other")
    body = owner.client.post(owner.url(f"datasets/{other}/upload/conversations"),
                             {"conversations": [conv()]}, format="json").json()
    assert body["stored"] == 1


def test_a_jsonl_file_upload_names_lines_and_stores_atomically(owner, assert_envelope):
    dataset_id = register(owner)
    url = owner.url(f"datasets/{dataset_id}/upload")
    bad = {"messages": [{"role": "user", "content": 7}, {"role": "assistant", "content": "a"}]}
    records = [conv(f"q{i}") for i in range(6)]
    upload = jsonl(*records, bad, raw_lines=[b"", b'{"messages": "nope"}'])
    error = assert_envelope(owner.client.post(url, {"file": upload}, format="multipart"), 400,
                            "invalid_records")
    found = error["details"]["invalid_records"]
    assert [r["line"] for r in found] == [7, 9]  # the blank line 8 is skipped, not an error
    assert found[0]["errors"][0]["field"] == "line 7: messages[0].content"
    assert DatasetRecord.objects.count() == 0

    upload = jsonl(*records, bad)
    response = owner.client.post(f"{url}?skip_invalid=true", {"file": upload},
                                 format="multipart")
    assert response.status_code == 201
    body = response.json()
    assert (body["stored"], body["skipped"], body["source"], body["filename"]) == (
        6, 1, "jsonl", "data.jsonl")
    assert owner.client.get(owner.url(f"datasets/{dataset_id}")).json()["record_count"] == 6


def test_a_preferences_jsonl_upload_through_the_jsonl_alias(owner):
    dataset_id = register(owner, "prefs", "preferences")
    upload = jsonl({"prompt": "p", "chosen": "good", "rejected": "bad"},
                   {"prompt": "p2", "chosen": "good", "rejected": "bad"})
    response = owner.client.post(owner.url(f"datasets/{dataset_id}/upload/jsonl"),
                                 {"file": upload, "skip_invalid": "false"}, format="multipart")
    assert response.status_code == 201 and response.json()["stored"] == 2


def test_a_larger_jsonl_file_goes_through(owner):
    dataset_id = register(owner)
    lines = b"".join(json.dumps(conv(f"question {i}", f"answer {i}")).encode() + b"\n"
                     for i in range(3000))
    # Padded past the 10 MB limit of JSON bodies: files have their own (200 MB) limit.
    upload = SimpleUploadedFile("big.jsonl", lines + b"\n" * (11 * 1024 * 1024))
    response = owner.client.post(owner.url(f"datasets/{dataset_id}/upload"), {"file": upload},
                                 format="multipart")
    assert response.status_code == 201
    assert response.json()["stored"] == 3000 and DatasetRecord.objects.count() == 3000


@pytest.mark.django_db(False)
def test_jsonl_reading_streams_instead_of_loading_the_file():
    line = json.dumps(conv("q" * 400, "a" * 400)).encode() + b"\n"
    content = line * (40 * 1024 * 1024 // len(line))  # about 40 MB
    upload = TemporaryUploadedFile("big.jsonl", "application/jsonl", len(content), None)
    upload.write(content)
    del content
    tracemalloc.start()
    count = sum(1 for _ in jsonl_lines(upload))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == upload.size // len(line)
    assert peak < 2 * 1024 * 1024, peak  # a few chunks, never the whole 40 MB


@pytest.mark.django_db(False)
def test_jsonl_reading_reports_an_overlong_line():
    upload = io.BytesIO(b'{"a": 1}\n' + b"x" * 150_000 + b"\n" + b'{"b": 2}')
    rows = list(jsonl_lines(upload, max_line_bytes=100_000))
    assert [(n, v, e is not None) for n, v, e in rows] == [
        (1, {"a": 1}, False), (2, None, True), (3, {"b": 2}, False)]


def test_register_list_detail_and_name_conflicts(owner, assert_envelope):
    first = owner.client.post(owner.url("datasets/register"), {
        "name": "support", "type": "preferences",
        "data_use": {"allow_rag": True, "allow_private_training": False}}, format="json")
    assert first.status_code == 201
    body = first.json()
    assert body["data_use"] == {"allow_rag": True, "allow_private_training": False,
                                "evaluation_only": False}
    assert body["record_count"] == 0 and body["type"] == "preferences"
    again = owner.client.post(owner.url("datasets/register"), {
        "name": "support", "type": "preferences",
        "data_use": {"allow_rag": True, "allow_private_training": False}}, format="json")
    assert again.status_code == 200 and again.json()["id"] == body["id"]
    conflict = owner.client.post(owner.url("datasets/register"), {
        "name": "support", "type": "preferences",
        "data_use": {"allow_rag": True, "allow_private_training": True}}, format="json")
    assert assert_envelope(conflict, 409, "dataset_name_taken")["details"]["id"] == body["id"]
    listed = owner.client.get(owner.url("datasets")).json()["datasets"]
    assert [d["name"] for d in listed] == ["support"]
    assert "last_validation_report" in listed[0] and "record_count" in listed[0]


def test_data_without_training_consent_never_reaches_training(owner, outsider):
    allowed = register(owner, "allowed", allow_private_training=True)
    private = register(owner, "private", allow_private_training=False)
    for dataset_id, q in ((allowed, "ok"), (private, "secret")):
        owner.client.post(owner.url(f"datasets/{dataset_id}/upload/conversations"),
                          {"conversations": [conv(q)]}, format="json")
    other = register(outsider, "theirs")
    outsider.client.post(outsider.url(f"datasets/{other}/upload/conversations"),
                         {"conversations": [conv("theirs")]}, format="json")
    assert DatasetRecord.objects.count() == 3
    records = list(dataset_records_for_training(tenant=owner.tenant))
    assert [r.data["messages"][0]["content"] for r in records] == ["ok"]
    assert list(dataset_records_for_training(tenant=owner.tenant, type="preferences")) == []
