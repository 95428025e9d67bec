"""Bad inputs: each one gets a 4xx in the error envelope and leaves the database unchanged."""

import io

import pytest

pytestmark = pytest.mark.django_db

GOOD = {"conversation_id": "conv_1", "message_id": "msg_1", "type": "thumbs_up"}


def fb(**changes):
    body = {**GOOD, **changes}
    return {key: value for key, value in body.items() if value is not ...}


# (name, path, body or raw bytes, expected status, expected code, a field named in details)
FEEDBACK_CASES = [
    ("wrong type of field", fb(rating="five", type="rating"), 400, "validation_error", "rating"),
    ("missing correction", fb(type="correction"), 400, "validation_error", "correction"),
    ("blank correction", fb(type="correction", correction="   "), 400, "validation_error",
     "correction"),
    ("rating 0", fb(type="rating", rating=0), 400, "validation_error", "rating"),
    ("rating 6", fb(type="rating", rating=6), 400, "validation_error", "rating"),
    ("rating missing", fb(type="rating"), 400, "validation_error", "rating"),
    ("rating 4.5", fb(type="rating", rating=4.5), 400, "validation_error", "rating"),
    ("rating on thumbs", fb(rating=3), 400, "validation_error", "rating"),
    ("unknown type", fb(type="love_it"), 400, "validation_error", "type"),
    ("no type", fb(type=...), 400, "validation_error", "type"),
    ("no message_id", fb(message_id=...), 400, "validation_error", "message_id"),
    ("numeric conversation_id", fb(conversation_id=123), 400, "validation_error",
     "conversation_id"),
    ("metadata not an object", fb(metadata=["user"]), 400, "validation_error", "metadata"),
    ("correction too long", fb(type="correction", correction="x" * 20_001), 400,
     "validation_error", "correction"),
    ("body is a list", [GOOD], 400, "validation_error", None),
]


@pytest.mark.parametrize("name,body,status,code,field", FEEDBACK_CASES,
                         ids=[c[0] for c in FEEDBACK_CASES])
def test_it_refuses_bad_feedback(owner, row_counts, assert_envelope, name, body, status, code,
                                 field):
    before = row_counts()
    response = owner.client.post(owner.url("feedback"), body, format="json")
    error = assert_envelope(response, status, code)
    if field:
        assert field in error["details"], error
    assert row_counts() == before


def test_it_refuses_malformed_json(owner, row_counts, assert_envelope):
    before = row_counts()
    for path in ("feedback", "conversations", "datasets/register"):
        response = owner.client.generic("POST", owner.url(path), b'{"type": "thumbs_up",',
                                        content_type="application/json")
        assert_envelope(response, 400, "malformed_json")
    assert row_counts() == before


def test_it_refuses_a_10_mb_body(owner, row_counts, assert_envelope):
    before = row_counts()
    huge = b'{"conversation_id": "c", "message_id": "m", "type": "correction", "correction": "' \
           + b"a" * (10 * 1024 * 1024) + b'"}'
    for path in ("feedback", "conversations", "datasets/register"):
        response = owner.client.generic("POST", owner.url(path), huge,
                                        content_type="application/json")
        assert_envelope(response, 413, "payload_too_large")
    assert row_counts() == before


def test_it_refuses_feedback_on_a_message_of_another_conversation(owner, log_conversation,
                                                                  row_counts, assert_envelope):
    log_conversation("conv_a")
    before = row_counts()
    response = owner.client.post(owner.url("feedback"), fb(conversation_id="conv_b",
                                                           message_id="conv_a_a1"), format="json")
    error = assert_envelope(response, 409, "conversation_mismatch")
    assert error["details"]["conversation_id"] == "conv_a"
    assert row_counts() == before


def test_it_refuses_a_thumbs_up_on_a_user_turn(owner, log_conversation, row_counts,
                                               assert_envelope):
    log_conversation("conv_a")
    before = row_counts()
    response = owner.client.post(owner.url("feedback"), fb(conversation_id="conv_a",
                                                           message_id="conv_a_u1"), format="json")
    assert_envelope(response, 400, "not_an_assistant_message")
    assert row_counts() == before


CONVERSATION_CASES = [
    ("bad role", {"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ("empty content", {"messages": [{"role": "user", "content": ""}]}, "messages[0].content"),
    ("whitespace content", {"messages": [{"role": "user", "content": " \n"}]},
     "messages[0].content"),
    ("content not a string", {"messages": [{"role": "user", "content": 42}]},
     "messages[0].content"),
    ("no messages", {"conversation_id": "c", "messages": []}, "messages"),
    ("missing messages", {"conversation_id": "c"}, "messages"),
    ("system not first", {"messages": [{"role": "user", "content": "a"},
                                       {"role": "system", "content": "b"}]}, "messages[1].role"),
    ("second bad message", {"messages": [{"role": "user", "content": "a"},
                                         {"role": "assistant"}]}, "messages[1].content"),
]


@pytest.mark.parametrize("name,body,field", CONVERSATION_CASES,
                         ids=[c[0] for c in CONVERSATION_CASES])
def test_it_refuses_bad_conversation_logs(owner, row_counts, assert_envelope, name, body, field):
    before = row_counts()
    response = owner.client.post(owner.url("conversations"), body, format="json")
    error = assert_envelope(response, 400)
    assert field in error["details"], error
    assert row_counts() == before


def test_it_refuses_a_message_id_used_by_another_conversation(owner, log_conversation,
                                                              row_counts, assert_envelope):
    log_conversation("conv_a")
    before = row_counts()
    response = owner.client.post(owner.url("conversations"), {
        "conversation_id": "conv_b",
        "messages": [{"message_id": "conv_a_u1", "role": "user", "content": "hi"}]},
        format="json")
    error = assert_envelope(response, 409, "message_id_conflict")
    assert error["details"]["conflicts"] == {"conv_a_u1": "conv_a"}
    assert row_counts() == before


REGISTER_CASES = [
    ("unknown dataset type", {"name": "d", "type": "images"}, "type"),
    ("missing name", {"type": "conversations"}, "name"),
    ("blank name", {"name": " ", "type": "conversations"}, "name"),
    ("data_use not an object", {"name": "d", "type": "conversations", "data_use": "all"},
     "data_use"),
    ("data_use flag not boolean", {"name": "d", "type": "conversations",
                                   "data_use": {"allow_private_training": "maybe"}},
     "data_use.allow_private_training"),
]


@pytest.mark.parametrize("name,body,field", REGISTER_CASES, ids=[c[0] for c in REGISTER_CASES])
def test_it_refuses_bad_dataset_registrations(owner, row_counts, assert_envelope, name, body,
                                              field):
    before = row_counts()
    error = assert_envelope(owner.client.post(owner.url("datasets/register"), body,
                                              format="json"), 400, "validation_error")
    assert field in error["details"], error
    assert row_counts() == before


@pytest.fixture
def datasets(owner):
    ids = {}
    for kind in ("conversations", "preferences"):
        response = owner.client.post(owner.url("datasets/register"),
                                     {"name": kind, "type": kind}, format="json")
        ids[kind] = response.json()["id"]
    return ids


def _conv(*turns):
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


UPLOAD_CASES = [
    ("bad role", "conversations", [_conv(("user", "q"), ("bot", "a"))],
     "conversations[0].messages[1].role"),
    ("empty content", "conversations", [_conv(("user", ""), ("assistant", "a"))],
     "conversations[0].messages[0].content"),
    ("ends with user", "conversations", [_conv(("user", "q"), ("assistant", "a"), ("user", "q"))],
     "conversations[0].messages[2].role"),
    ("two user turns", "conversations", [_conv(("user", "q"), ("user", "q2"), ("assistant", "a"))],
     "conversations[0].messages[1].role"),
    ("no messages key", "conversations", [{"turns": []}], "conversations[0].messages"),
    ("record not an object", "conversations", ["hello"], "conversations[0]"),
    ("content too long", "conversations", [_conv(("user", "q" * 32_001), ("assistant", "a"))],
     "conversations[0].messages[0].content"),
    ("chosen equals rejected", "preferences", [{"prompt": "p", "chosen": "x", "rejected": "x"}],
     "preferences[0].rejected"),
    ("missing rejected", "preferences", [{"prompt": "p", "chosen": "x"}],
     "preferences[0].rejected"),
    ("empty prompt", "preferences", [{"prompt": "", "chosen": "x", "rejected": "y"}],
     "preferences[0].prompt"),
]


@pytest.mark.parametrize("name,kind,records,field", UPLOAD_CASES,
                         ids=[c[0] for c in UPLOAD_CASES])
def test_it_refuses_bad_upload_records(owner, datasets, row_counts, assert_envelope, name, kind,
                                       records, field):
    good = (_conv(("user", "q"), ("assistant", "a")) if kind == "conversations"
            else {"prompt": "p", "chosen": "good", "rejected": "bad"})
    before = row_counts()
    response = owner.client.post(owner.url(f"datasets/{datasets[kind]}/upload/{kind}"),
                                 {kind: [good, *records]}, format="json")
    error = assert_envelope(response, 400, "invalid_records")
    fields = [e["field"] for r in error["details"]["invalid_records"] for e in r["errors"]]
    assert field.replace("[0]", "[1]", 1) in fields, fields
    assert error["details"]["invalid_records"][0]["index"] == 1
    assert row_counts() == before  # the good record was not stored either


def test_it_refuses_an_upload_to_a_dataset_of_the_other_type(owner, datasets, row_counts,
                                                             assert_envelope):
    before = row_counts()
    response = owner.client.post(
        owner.url(f"datasets/{datasets['preferences']}/upload/conversations"),
        {"conversations": [_conv(("user", "q"), ("assistant", "a"))]}, format="json")
    assert_envelope(response, 400, "dataset_type_mismatch")
    response = owner.client.post(
        owner.url(f"datasets/{datasets['conversations']}/upload/preferences"),
        {"preferences": [{"prompt": "p", "chosen": "a", "rejected": "b"}]}, format="json")
    assert_envelope(response, 400, "dataset_type_mismatch")
    assert row_counts() == before


@pytest.mark.parametrize("body,field", [
    ({"preferences": []}, "conversations"),
    ({"conversations": {"messages": []}}, "conversations"),
    ({"conversations": []}, "records"),
])
def test_it_refuses_upload_bodies_of_the_wrong_shape(owner, datasets, row_counts,
                                                     assert_envelope, body, field):
    before = row_counts()
    response = owner.client.post(owner.url(f"datasets/{datasets['conversations']}/upload/"
                                           "conversations"), body, format="json")
    error = assert_envelope(response, 400)
    assert field in error["details"]
    assert row_counts() == before


def test_it_refuses_a_jsonl_file_with_a_non_utf8_line(owner, datasets, row_counts,
                                                      assert_envelope):
    lines = [b'{"messages": [{"role": "user", "content": "q"}, '
             b'{"role": "assistant", "content": "a"}]}',
             b'{"messages": [{"role": "user", "content": "caf\xe9"}, '
             b'{"role": "assistant", "content": "a"}]}',
             b"not json at all"]
    upload = io.BytesIO(b"\n".join(lines) + b"\n")
    upload.name = "data.jsonl"
    before = row_counts()
    response = owner.client.post(owner.url(f"datasets/{datasets['conversations']}/upload"),
                                 {"file": upload}, format="multipart")
    error = assert_envelope(response, 400, "invalid_records")
    bad = error["details"]["invalid_records"]
    assert [r["line"] for r in bad] == [2, 3]
    assert "UTF-8" in bad[0]["errors"][0]["message"] and bad[0]["errors"][0]["field"] == "line 2"
    assert "JSON" in bad[1]["errors"][0]["message"]
    assert row_counts() == before


def test_it_refuses_a_file_upload_that_is_not_multipart(owner, datasets, row_counts,
                                                        assert_envelope):
    before = row_counts()
    response = owner.client.post(owner.url(f"datasets/{datasets['conversations']}/upload"),
                                 {"conversations": []}, format="json")
    assert_envelope(response, 415)
    response = owner.client.post(owner.url(f"datasets/{datasets['conversations']}/upload"),
                                 {"skip_invalid": "true"}, format="multipart")
    error = assert_envelope(response, 400, "validation_error")
    assert "file" in error["details"]
    assert row_counts() == before


def test_it_answers_404_for_an_unknown_dataset(owner, assert_envelope):
    assert_envelope(owner.client.get(owner.url("datasets/999999")), 404, "not_found")
    assert_envelope(owner.client.post(owner.url("datasets/999999/upload/conversations"),
                                      {"conversations": []}, format="json"), 404, "not_found")
