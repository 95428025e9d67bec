"""OpenAI fine-tuning JSONL in and out: chat (`{"messages"}`) and preference (`{"input",
"preferred_output", "non_preferred_output"}`) files upload unchanged, with line-numbered errors,
and datasets and the tenant's training data export in the same formats."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from feedback.models import DatasetRecord

pytestmark = pytest.mark.django_db

CHAT_LINES = [
    {"messages": [{"role": "system", "content": "You are Marv, a sarcastic bot."},
                  {"role": "user", "content": "What's the capital of France?"},
                  {"role": "assistant", "content": "Paris, as if everyone doesn't know."}]},
    {"messages": [{"role": "user", "content": "Who wrote Romeo and Juliet?"},
                  {"role": "assistant", "content": "Some guy named Shakespeare.",
                   "weight": 1}]},
]
PREFERENCE_LINES = [
    {"input": {"messages": [{"role": "user", "content": "Hello, can you tell me how cold San "
                                                        "Francisco is today?"}],
               "tools": [], "parallel_tool_calls": True},
     "preferred_output": [{"role": "assistant",
                           "content": "Today in San Francisco, it is 14 degrees Celsius."}],
     "non_preferred_output": [{"role": "assistant", "content": "It is not particularly cold."}]},
    {"input": {"messages": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Capital of Finland?"},
                            {"role": "assistant", "content": "Helsinki."},
                            {"role": "user", "content": "And of Sweden?"}]},
     "preferred_output": [{"role": "assistant", "content": "Stockholm."}],
     "non_preferred_output": [{"role": "assistant", "content": "Oslo."}]},
]


def register(ctx, name, type) -> int:
    response = ctx.client.post(ctx.url("datasets/register"), {"name": name, "type": type},
                               format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def upload_file(ctx, dataset_id, lines: list, raw_lines=()):
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    data += b"".join(raw + b"\n" for raw in raw_lines)
    return ctx.client.post(ctx.url(f"datasets/{dataset_id}/upload"),
                           {"file": SimpleUploadedFile("train.jsonl", data)},
                           format="multipart")


def exported(response) -> list[dict]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/jsonl")
    assert "attachment" in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode()
    return [json.loads(line) for line in body.splitlines()]


def test_openai_chat_jsonl_uploads_unchanged_and_exports_back(owner):
    dataset_id = register(owner, "chat", "conversations")
    response = upload_file(owner, dataset_id, CHAT_LINES)
    assert response.status_code == 201, response.content
    assert response.json()["stored"] == 2
    lines = exported(owner.client.get(owner.url(f"datasets/{dataset_id}/export"),
                                      {"format": "openai-chat"}))
    expected = [{"messages": [{"role": m["role"], "content": m["content"]}
                              for m in line["messages"]]} for line in CHAT_LINES]
    assert lines == expected


def test_openai_preference_jsonl_uploads_unchanged_and_exports_back(owner):
    dataset_id = register(owner, "prefs", "preferences")
    response = upload_file(owner, dataset_id, PREFERENCE_LINES)
    assert response.status_code == 201, response.content
    assert response.json()["stored"] == 2
    records = [r.data for r in DatasetRecord.objects.filter(dataset_id=dataset_id).order_by("id")]
    assert records[0] == {"prompt": PREFERENCE_LINES[0]["input"]["messages"][0]["content"],
                          "chosen": "Today in San Francisco, it is 14 degrees Celsius.",
                          "rejected": "It is not particularly cold."}
    assert records[1]["prompt"] == "And of Sweden?" and len(records[1]["messages"]) == 4
    lines = exported(owner.client.get(owner.url(f"datasets/{dataset_id}/export")))
    for line, original in zip(lines, PREFERENCE_LINES, strict=True):
        assert line["input"]["messages"] == original["input"]["messages"]
        assert line["preferred_output"] == original["preferred_output"]
        assert line["non_preferred_output"] == original["non_preferred_output"]
    # The seed's own preference shape still uploads into the same dataset.
    seed = owner.client.post(owner.url(f"datasets/{dataset_id}/upload/preferences"),
                             {"preferences": [{"prompt": "p", "chosen": "c", "rejected": "r"}]},
                             format="json")
    assert seed.status_code == 201 and seed.json()["stored"] == 1


def test_bad_openai_preference_lines_are_named_by_line_and_field(owner, assert_envelope):
    dataset_id = register(owner, "prefs", "preferences")
    good = PREFERENCE_LINES[0]
    no_output = {**good, "preferred_output": []}
    ends_with_assistant = {**good, "input": {"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}}
    wrong_role = {**good, "non_preferred_output": [{"role": "user", "content": "x"}]}
    response = upload_file(owner, dataset_id, [good, no_output, ends_with_assistant, wrong_role],
                           raw_lines=[b"{not json"])
    error = assert_envelope(response, 400, "invalid_records")
    by_line = {r["line"]: [e["field"] for e in r["errors"]]
               for r in error["details"]["invalid_records"]}
    assert by_line == {
        2: ["line 2: preferred_output"],
        3: ["line 3: input.messages[1].role"],
        4: ["line 4: non_preferred_output[0].role"],
        5: ["line 5"],
    }
    assert not DatasetRecord.objects.filter(dataset_id=dataset_id).exists()


def test_export_refuses_a_format_of_the_other_kind(owner, assert_envelope):
    dataset_id = register(owner, "chat", "conversations")
    for fmt in ("openai-preference", "csv"):
        response = owner.client.get(owner.url(f"datasets/{dataset_id}/export"), {"format": fmt})
        error = assert_envelope(response, 400, "validation_error")
        assert "format" in error["details"]
    assert_envelope(owner.client.get(owner.url("export"), {"format": "xml"}), 400,
                    "validation_error")
    assert_envelope(owner.client.get(owner.url("export")), 400, "validation_error")


def test_tenant_export_streams_what_training_would_use(owner, outsider, assert_envelope):
    from tests.training.conftest import add_corrections, corrections

    add_corrections(owner, corrections(3))
    chat_id = register(owner, "chat", "conversations")
    assert upload_file(owner, chat_id, CHAT_LINES).status_code == 201
    private = register(owner, "private", "conversations")
    owner.client.patch(owner.url(f"datasets/{private}"),
                       {"data_use": {"allow_private_training": False}}, format="json")
    assert upload_file(owner, private, [{"messages": [
        {"role": "user", "content": "Private?"},
        {"role": "assistant", "content": "Never exported for training."}]}]).status_code == 201

    chat = exported(owner.client.get(owner.url("export"), {"format": "openai-chat"}))
    answers = sorted(line["messages"][-1]["content"] for line in chat)
    assert answers == sorted(["Box 0 has code K0.", "Box 1 has code K1.", "Box 2 has code K2.",
                              "Paris, as if everyone doesn't know.",
                              "Some guy named Shakespeare."])
    assert all(set(line) == {"messages"} for line in chat)
    preference = exported(owner.client.get(owner.url("export"),
                                           {"format": "openai-preference"}))
    assert sorted(line["preferred_output"][0]["content"] for line in preference) == [
        "Box 0 has code K0.", "Box 1 has code K1.", "Box 2 has code K2."]
    assert {line["non_preferred_output"][0]["content"] for line in preference} == {"No idea."}
    # Another tenant's key on the owner's export: 404, nothing streamed.
    crossed = outsider.client.get(f"/v1/tenants/{owner.tenant.slug}/export",
                                  {"format": "openai-chat"})
    assert_envelope(crossed, 404)
