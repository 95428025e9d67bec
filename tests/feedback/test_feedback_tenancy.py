"""Every feedback/DataHub endpoint: the owner's key works, another tenant's key gets 404, no key
401, a read-only key 403 on writes; nothing of one tenant shows to another."""

import io

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(owner):
    owner.client.post(owner.url("conversations"), {"conversation_id": "conv_1", "messages": [
        {"message_id": "m_u", "role": "user", "content": "q"},
        {"message_id": "m_a", "role": "assistant", "content": "a"}]}, format="json")
    dataset = owner.client.post(owner.url("datasets/register"),
                                {"name": "d", "type": "conversations"}, format="json").json()
    prefs = owner.client.post(owner.url("datasets/register"),
                              {"name": "p", "type": "preferences"}, format="json").json()
    owner.client.post(owner.url("feedback"), {"conversation_id": "conv_1", "message_id": "m_a",
                                              "type": "thumbs_up"}, format="json")
    return {"dataset": dataset["id"], "prefs": prefs["id"]}


def jsonl_file():
    upload = io.BytesIO(b'{"messages": [{"role": "user", "content": "file"}, '
                        b'{"role": "assistant", "content": "a"}]}\n')
    upload.name = "d.jsonl"
    return upload


CONV = {"conversations": [{"messages": [{"role": "user", "content": "x"},
                                        {"role": "assistant", "content": "y"}]}]}
ENDPOINTS = [
    # (method, path, body, format, owner's status)
    ("get", "feedback", None, None, 200),
    ("get", "feedback/stats", None, None, 200),
    ("get", "conversations", None, None, 200),
    ("get", "conversations/conv_1", None, None, 200),
    ("get", "datasets", None, None, 200),
    ("get", "datasets/{dataset}", None, None, 200),
    ("get", "datasets/{dataset}/records", None, None, 200),
    ("post", "feedback", {"conversation_id": "conv_1", "message_id": "m_a",
                          "type": "thumbs_down"}, "json", 201),
    ("post", "conversations", {"conversation_id": "conv_2", "messages": [
        {"role": "user", "content": "q"}]}, "json", 201),
    ("post", "datasets/register", {"name": "new", "type": "preferences"}, "json", 201),
    ("post", "datasets/{dataset}/upload/conversations", CONV, "json", 201),
    ("post", "datasets/{prefs}/upload/preferences",
     {"preferences": [{"prompt": "p", "chosen": "a", "rejected": "b"}]}, "json", 201),
    ("post", "datasets/{dataset}/upload", "FILE", "multipart", 201),
    ("post", "datasets/{dataset}/upload/jsonl", "FILE", "multipart", 201),
]
IDS = [f"{m} {p}" for m, p, *_ in ENDPOINTS]


def call(client, ctx_url, setup, method, path, body, fmt):
    url = ctx_url(path.format(**setup))
    if method == "get":
        return client.get(url)
    if body == "FILE":
        body = {"file": jsonl_file()}
    return client.post(url, body, format=fmt)


@pytest.mark.parametrize("method,path,body,fmt,status", ENDPOINTS, ids=IDS)
def test_owner_outsider_anonymous_read_only(owner, outsider, read_only, anon, setup,
                                            row_counts, assert_envelope, method, path, body, fmt,
                                            status):
    before = row_counts()
    assert_envelope(call(outsider.client, owner.url, setup, method, path, body, fmt), 404,
                    "not_found")
    assert_envelope(call(anon, owner.url, setup, method, path, body, fmt), 401,
                    "not_authenticated")
    ro = call(read_only.client, owner.url, setup, method, path, body, fmt)
    if method == "get":
        assert ro.status_code == 200
    else:
        assert_envelope(ro, 403, "read_only_key")
    assert row_counts() == before
    response = call(owner.client, owner.url, setup, method, path, body, fmt)
    assert response.status_code == status, response.content


def test_other_tenants_see_none_of_it(owner, outsider, setup):
    """The outsider's own endpoints show nothing of the owner's data."""
    assert outsider.client.get(outsider.url("feedback")).json()["count"] == 0
    assert outsider.client.get(outsider.url("conversations")).json()["count"] == 0
    assert outsider.client.get(outsider.url("datasets")).json() == {"datasets": []}
    assert outsider.client.get(outsider.url("feedback/stats")).json()["total"] == 0
    assert outsider.client.get(
        outsider.url(f"datasets/{setup['dataset']}")).status_code == 404
    assert outsider.client.get(outsider.url("conversations/conv_1")).status_code == 404
    # Ids are per tenant: the outsider may use the same conversation/message ids freely.
    response = outsider.client.post(outsider.url("conversations"), {
        "conversation_id": "conv_1", "messages": [
            {"message_id": "m_u", "role": "user", "content": "other q"},
            {"message_id": "m_a", "role": "assistant", "content": "other a"}]}, format="json")
    assert response.status_code == 201 and response.json()["created"] is True
    # ... and uploads to the owner's dataset id through its own tenant path are 404.
    response = outsider.client.post(
        outsider.url(f"datasets/{setup['dataset']}/upload/conversations"), CONV, format="json")
    assert response.status_code == 404
    assert owner.client.get(owner.url("feedback/stats")).json()["total"] == 1
