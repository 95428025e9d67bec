"""Hostile input: every refusal is a 4xx in the error envelope and nothing is partially written.

Run against PostgreSQL too (CI does): there a NUL character that slipped through would be a
500 at the INSERT, which is exactly what these tests exist to catch.
"""

from __future__ import annotations

import csv
import io

import pytest
from django.apps import apps

from synapsex_site.csv_export import csv_export_rows, csv_safe_cell
from tests.security.helpers import assert_envelope
from tests.security.urlmatrix import API_ENDPOINTS

pytestmark = pytest.mark.django_db

NUL = "\x00"


# Columns written on purpose by a refused request: the key's last use (authentication ran), and
# a refused upload's validation report, kept on the dataset so the tenant can read why (no
# record is stored: DatasetRecord rows are compared in full).
VOLATILE_COLUMNS = {"tenants.ApiKey": {"last_used_at"},
                    "feedback.Dataset": {"last_validation_report", "updated_at"}}


def _rows() -> dict[str, list[dict]]:
    """Every row of the apps' tables, all columns, by primary key."""
    rows = {}
    for label in ("feedback", "tenants", "training", "adapters"):
        for model in apps.get_app_config(label).get_models():
            skip = VOLATILE_COLUMNS.get(model._meta.label, set())
            rows[model._meta.label] = [
                {k: v for k, v in row.items() if k not in skip}
                for row in model.objects.order_by("pk").values()]
    return rows


@pytest.fixture
def unchanged():
    """Call it after a refusal: asserts no row was added, removed or changed (row contents, not
    counts) since the fixture ran."""
    before = _rows()

    def check():
        after = _rows()
        changed = {k: {"before": before[k], "after": after[k]} for k in before
                   if before[k] != after[k]}
        assert not changed, f"rows written by a refused request: {changed}"

    return check


@pytest.fixture
def datasets(owner):
    ids = {}
    for kind in ("conversations", "preferences"):
        response = owner.client.post(owner.url("datasets/register"),
                                     {"name": f"ds-{kind}", "type": kind}, format="json")
        assert response.status_code == 201
        ids[kind] = response.json()["id"]
    return ids


def _jsonl_file(content: bytes, name: str = "data.jsonl") -> io.BytesIO:
    handle = io.BytesIO(content)
    handle.name = name
    return handle


# --- size ----------------------------------------------------------------------------------

def test_it_refuses_an_oversized_body_from_its_content_length_before_reading_it(owner, anon,
                                                                                unchanged,
                                                                                settings):
    """The header alone decides: the body sent here is tiny, so a 413 proves nothing was read
    (and nobody, not even an anonymous caller, can make the server buffer 10 GB)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    for client in (owner.client, anon):
        response = client.generic("POST", owner.url("feedback"), b"{}",
                                  content_type="application/json",
                                  CONTENT_LENGTH=str(10 * 1024**3))
        error = assert_envelope(response, 413, "payload_too_large")
        assert error["details"]["limit_bytes"] == limit
    # Just under the limit is read and judged on its content.
    body = b'{"type": "thumbs_up", "conversation_id": "' + b"c" * (limit - 100) + b'"}'
    response = owner.client.generic("POST", owner.url("feedback"), body,
                                    content_type="application/json")
    assert_envelope(response, 400, "validation_error")
    unchanged()


def test_it_caps_multipart_uploads_before_parsing_them(owner, datasets, unchanged, settings):
    settings.MAX_UPLOAD_FILE_BYTES = 4096
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * 200_000 + b'"}]}\n'
    response = owner.client.post(owner.url(f"datasets/{datasets['conversations']}/upload"),
                                 {"file": _jsonl_file(big)}, format="multipart")
    assert_envelope(response, 413, "payload_too_large")
    unchanged()


# --- nesting -------------------------------------------------------------------------------

WRITE_ENDPOINTS = [(e, m) for e in API_ENDPOINTS for m in e.methods
                   if m in ("post", "put", "patch")]


def test_it_refuses_10000_levels_of_json_on_every_write_endpoint(owner, datasets, unchanged):
    deep = b"[" * 10_000 + b"]" * 10_000
    deep_object = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    fill = {"tenant": owner.tenant.slug, "dataset_id": datasets["conversations"],
            "conversation_id": "c", "job_id": "train_x", "version": "v1", "key_id": 1,
            "webhook_id": 1, "number": 1}
    assert len(WRITE_ENDPOINTS) >= 10
    for endpoint, method in WRITE_ENDPOINTS:
        url = "/" + endpoint.route
        for name, value in fill.items():
            url = url.replace(f"<slug:{name}>", str(value)).replace(f"<int:{name}>", str(value))
            url = url.replace(f"<str:{name}>", str(value)).replace(f"<{name}>", str(value))
        for body in (deep, deep_object):
            response = owner.client.generic(method.upper(), url, body,
                                            content_type="application/json")
            error = assert_envelope(response, 400, "json_too_deep")
            assert error["details"]["max_depth"] >= 8
    unchanged()


def test_it_refuses_deep_nesting_inside_a_jsonl_upload(owner, datasets, unchanged):
    line = b"[" * 100_000 + b"]" * 100_000 + b"\n"
    response = owner.client.post(owner.url(f"datasets/{datasets['conversations']}/upload"),
                                 {"file": _jsonl_file(line)}, format="multipart")
    error = assert_envelope(response, 400)
    assert "nested too deeply" in str(error["details"]), error
    unchanged()


def test_it_accepts_ordinary_nesting_in_metadata(owner):
    nested = {"a": {"b": {"c": {"d": [1, [2, [3]]]}}}}
    response = owner.client.post(owner.url("feedback"), {
        "conversation_id": "c", "message_id": "m", "type": "thumbs_up", "metadata": nested},
        format="json")
    assert response.status_code == 201, response.content
    assert response.json()["metadata"] == nested


# --- NUL characters ------------------------------------------------------------------------

FB = {"conversation_id": "conv", "message_id": "msg", "type": "thumbs_up"}
CONV_MESSAGES = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def _nul_cases(ds: dict) -> list[tuple[str, str, str, dict, str]]:
    """(name, method, path, body, field path the details must name)."""
    conv, pref = ds["conversations"], ds["preferences"]
    return [
        ("feedback correction", "post", "feedback",
         {**FB, "type": "correction", "correction": f"a{NUL}b"}, "correction"),
        ("feedback conversation_id", "post", "feedback", {**FB, "conversation_id": f"c{NUL}"},
         "conversation_id"),
        ("feedback metadata value", "post", "feedback",
         {**FB, "metadata": {"user_id": f"u{NUL}"}}, "metadata.user_id"),
        ("feedback metadata key", "post", "feedback", {**FB, "metadata": {f"k{NUL}": 1}},
         "metadata"),
        ("conversation content", "post", "conversations",
         {"conversation_id": "c1", "messages": [{"role": "user", "content": f"x{NUL}y"},
                                                CONV_MESSAGES[1]]}, "messages[0].content"),
        ("conversation metadata", "post", "conversations",
         {"conversation_id": "c1", "messages": CONV_MESSAGES, "metadata": {"k": [f"{NUL}"]}},
         "metadata.k[0]"),
        ("message id", "post", "conversations",
         {"messages": [{"message_id": f"m{NUL}", "role": "user", "content": "x"}]},
         "messages[0].message_id"),
        ("dataset name", "post", "datasets/register",
         {"name": f"n{NUL}", "type": "conversations"}, "name"),
        ("dataset record content", "post", f"datasets/{conv}/upload/conversations",
         {"conversations": [{"messages": [{"role": "user", "content": "q"},
                                          {"role": "assistant", "content": f"a{NUL}"}]}]},
         "conversations[0].messages[1].content"),
        ("preference prompt", "post", f"datasets/{pref}/upload/preferences",
         {"preferences": [{"prompt": f"p{NUL}", "chosen": "a", "rejected": "b"}]},
         "preferences[0].prompt"),
        ("api key name", "post", "api-keys", {"name": f"k{NUL}"}, "name"),
        ("webhook url", "post", "webhooks", {"url": f"https://example.com/{NUL}"}, "url"),
        ("settings", "patch", "settings",
         {"auto_training": {"enabled": False, "method": f"s{NUL}"}}, "auto_training.method"),
        ("chat message", "post", "chat/completions",
         {"messages": [{"role": "user", "content": f"hi{NUL}"}]}, "messages[0].content"),
        ("erasure user id", "post", "erasure", {"user_id": f"u{NUL}"}, "user_id"),
    ]


def test_it_refuses_nul_characters_in_every_text_field_path(owner, datasets, unchanged):
    cases = _nul_cases(datasets)
    for name, method, path, body, field in cases:
        response = getattr(owner.client, method)(owner.url(path), body, format="json")
        assert response.status_code == 400, (name, response.status_code, response.content)
        error = assert_envelope(response, 400)
        assert field in error["details"], (name, error)
    unchanged()


def test_it_refuses_nul_characters_in_jsonl_records_query_strings_and_headers(owner, datasets,
                                                                              unchanged):
    record = (b'{"messages": [{"role": "user", "content": "q\\u0000"}, '
              b'{"role": "assistant", "content": "a"}]}\n')
    response = owner.client.post(owner.url(f"datasets/{datasets['conversations']}/upload"),
                                 {"file": _jsonl_file(record)}, format="multipart")
    error = assert_envelope(response, 400)
    assert "Null characters" in str(error["details"]), error

    for query in ("conversation_id=a%00b", "type=%00", "page=1%00"):
        response = owner.client.get(owner.url("feedback") + "?" + query)
        assert_envelope(response, 400, "null_character")
    response = owner.client.get(owner.url("conversations/abc%00def"))
    assert response.status_code in (400, 404), response.content
    assert_envelope(response, response.status_code)

    response = owner.client.post(owner.url("feedback"), FB, format="json",
                                 HTTP_IDEMPOTENCY_KEY=f"key{NUL}")
    error = assert_envelope(response, 400, "null_character")
    assert "Idempotency-Key" in error["details"]
    unchanged()


def test_it_keeps_an_escaped_backslash_u0000_as_plain_text(owner):
    """`"\\\\u0000"` in JSON is the six characters \\u0000, not a NUL: stored as written."""
    response = owner.client.generic(
        "POST", owner.url("feedback"),
        b'{"conversation_id": "c", "message_id": "m", "type": "correction", '
        b'"correction": "literally \\\\u0000 here"}', content_type="application/json")
    assert response.status_code == 201, response.content
    assert response.json()["correction"] == "literally \\u0000 here"


# --- encodings, lengths, names -------------------------------------------------------------

def test_it_refuses_invalid_utf8_in_bodies_and_files(owner, datasets, unchanged):
    response = owner.client.generic(
        "POST", owner.url("feedback"),
        b'{"conversation_id": "\xff\xfe", "message_id": "m", "type": "thumbs_up"}',
        content_type="application/json")
    assert_envelope(response, 400, "malformed_json")
    bad_line = b'{"messages": [{"role": "user", "content": "\xc3\x28"}]}\n'
    response = owner.client.post(owner.url(f"datasets/{datasets['conversations']}/upload"),
                                 {"file": _jsonl_file(bad_line)}, format="multipart")
    error = assert_envelope(response, 400)
    assert "UTF-8" in str(error["details"]), error
    response = owner.client.get(owner.url("feedback") + "?conversation_id=%ff%fe")
    assert response.status_code == 200, response.content
    unchanged()


def test_it_refuses_very_long_strings_with_field_details(owner, datasets, unchanged):
    huge = "x" * 1_000_000
    cases = [
        ("feedback", {**FB, "type": "correction", "correction": huge}, "correction"),
        ("feedback", {**FB, "conversation_id": huge}, "conversation_id"),
        ("conversations", {"messages": [{"role": "user", "content": huge}]},
         "messages[0].content"),
        ("datasets/register", {"name": huge, "type": "conversations"}, "name"),
        ("api-keys", {"name": huge}, "name"),
    ]
    for path, body, field in cases:
        response = owner.client.post(owner.url(path), body, format="json")
        error = assert_envelope(response, 400)
        assert field in error["details"], (path, error)
    for path in (f"train/train_{'a' * 5000}", f"lora/v{'9' * 5000}", f"lora/v{'9' * 20}",
                 "lora/v\u00b2", "lora/v\u0663", f"conversations/{'c' * 5000}",
                 f"datasets/{'1' * 5000}", f"datasets/{'9' * 20}", f"webhooks/{'9' * 30}",
                 f"api-keys/{'9' * 30}/revoke"):
        method = "post" if path.endswith("revoke") else "get"
        response = getattr(owner.client, method)(owner.url(path))
        assert response.status_code in (400, 404), (path[:40], response.status_code)
        assert_envelope(response, response.status_code)
    unchanged()


def test_it_never_turns_names_into_paths(owner, datasets, unchanged, tmp_path):
    """Traversal strings are data: a dataset may be called `../../etc` (it is only a label);
    a version label or job id like that finds nothing, and no file appears anywhere (MEDIA_ROOT
    is this test's own folder: the storage fixture)."""
    for label in ("../../etc", "..%2F..%2Fetc", "..\\..\\etc", "v1/../../../etc"):
        for path in (f"lora/{label}", f"lora/{label}/activate", f"lora/{label}/download",
                     f"train/{label}", f"train/{label}/cancel"):
            method = "post" if path.endswith(("activate", "cancel")) else "get"
            response = getattr(owner.client, method)(owner.url(path))
            assert response.status_code in (400, 404), (path, response.status_code)
            assert_envelope(response, response.status_code)
    unchanged()
    response = owner.client.post(owner.url("datasets/register"),
                                 {"name": "../../../../tmp/evil", "type": "conversations"},
                                 format="json")
    assert response.status_code == 201
    assert response.json()["name"] == "../../../../tmp/evil"
    dataset_id = response.json()["id"]
    response = owner.client.post(owner.url(f"datasets/{dataset_id}/upload"), {
        "file": _jsonl_file(b'{"messages": [{"role": "user", "content": "q"}, '
                            b'{"role": "assistant", "content": "a"}]}\n',
                            name="../../../../tmp/evil.jsonl")}, format="multipart")
    assert response.status_code == 201, response.content
    assert not (tmp_path.parent / "evil").exists()
    assert list(tmp_path.rglob("*evil*")) == []


# --- CSV -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)",
                                  "\t=1", "\r=1", "  =HYPERLINK(\"http://x\")"])
def test_it_neutralises_formula_cells_in_csv_exports(cell):
    safe = csv_safe_cell(cell)
    assert safe.startswith("'"), safe
    document = csv_export_rows(["correction"], [[cell]])
    parsed = list(csv.reader(io.StringIO(document)))
    assert parsed[1][0] == safe
    assert not parsed[1][0].lstrip(" ").startswith(("=", "+", "-", "@"))


def test_it_keeps_ordinary_cells_and_numbers_in_csv_exports():
    document = csv_export_rows(["text", "rating", "delta"],
                               [["plain answer", 5, -1], ["a=b", None, 2.5]])
    rows = list(csv.reader(io.StringIO(document)))
    assert rows == [["text", "rating", "delta"], ["plain answer", "5", "-1"], ["a=b", "", "2.5"]]


def test_no_csv_export_endpoint_bypasses_the_safe_writer():
    """If a CSV export endpoint appears, it must use synapsex_site.csv_export (see SECURITY.md).
    Checked by source: any module that writes text/csv must import csv_export."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for app in ("tenants", "feedback", "training", "adapters", "synapsex_site"):
        for path in (root / app).rglob("*.py"):
            text = path.read_text(errors="replace")
            if "text/csv" in text and "csv_export" not in text and path.name != "csv_export.py":
                offenders.append(str(path.relative_to(root)))
    assert not offenders, f"CSV written without synapsex_site.csv_export: {offenders}"


def test_it_refuses_unpaired_surrogates_in_json_bodies_and_jsonl_records(owner, datasets,
                                                                         unchanged):
    """`"\\ud800"` decodes to a lone surrogate, which no encoder accepts (hashing or storing it
    was a 500): a 400 naming where it is. A proper pair (an emoji) is text and is stored."""
    body = (b'{"conversations": [{"messages": [{"role": "user", "content": "q\\ud800"}, '
            b'{"role": "assistant", "content": "a"}]}]}')
    response = owner.client.post(
        owner.url(f"datasets/{datasets['conversations']}/upload/conversations"), body,
        content_type="application/json")
    error = assert_envelope(response, 400, "invalid_unicode")
    assert "conversations[0].messages[0].content" in error["details"]
    record = (b'{"messages": [{"role": "user", "content": "q\\udfff x"}, '
              b'{"role": "assistant", "content": "a"}]}\n')
    response = owner.client.post(owner.url(f"datasets/{datasets['conversations']}/upload"),
                                 {"file": _jsonl_file(record)}, format="multipart")
    error = assert_envelope(response, 400)
    assert "surrogates" in str(error["details"]), error
    unchanged()

    paired = (b'{"conversations": [{"messages": [{"role": "user", "content": "q\\ud83d\\ude00"}, '
              b'{"role": "assistant", "content": "a"}]}]}')
    response = owner.client.post(
        owner.url(f"datasets/{datasets['conversations']}/upload/conversations"), paired,
        content_type="application/json")
    assert response.status_code == 201, response.content


def test_a_form_body_with_too_many_fields_gets_the_envelope(owner, settings):
    """Django stops form parsing at DATA_UPLOAD_MAX_NUMBER_FIELDS (TooManyFieldsSent, raised
    inside DRF's request.data): a 400 with the envelope, not a 500 (found by the schema fuzz on
    the review endpoint with a multipart body of repeated `ids`)."""
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    response = owner.client.post(owner.url("feedback/review"),
                                 {"ids": list(range(20)), "action": "approve"},
                                 format="multipart")
    assert_envelope(response, 400, "too_many_fields")
