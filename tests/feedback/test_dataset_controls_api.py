"""DataHub controls through the API: deleting records (one or many), changing a dataset's data
use and name; refusals get the envelope, other tenants get 404, read-only keys 403."""

import pytest

from feedback.models import Dataset, DatasetRecord
from tenants.models import AuditLogEntry

pytestmark = pytest.mark.django_db


def register(ctx, name="d", type="conversations", **data_use) -> int:
    response = ctx.client.post(ctx.url("datasets/register"),
                               {"name": name, "type": type, "data_use": data_use}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def conv(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Question {i}?"},
                         {"role": "assistant", "content": f"Answer {i}."}]}


def seeded(ctx, n: int = 4) -> tuple[int, list[int]]:
    dataset_id = register(ctx)
    response = ctx.client.post(ctx.url(f"datasets/{dataset_id}/upload/conversations"),
                               {"conversations": [conv(i) for i in range(n)]}, format="json")
    assert response.status_code == 201, response.content
    ids = list(DatasetRecord.objects.filter(dataset_id=dataset_id).order_by("id")
               .values_list("id", flat=True))
    return dataset_id, ids


def test_it_deletes_one_record_and_then_several(owner):
    dataset_id, ids = seeded(owner, 4)
    one = owner.client.delete(owner.url(f"datasets/{dataset_id}/records/{ids[0]}"))
    assert one.status_code == 200, one.content
    assert one.json()["records_deleted"] == 1 and one.json()["record_count"] == 3
    many = owner.client.post(owner.url(f"datasets/{dataset_id}/records/delete"),
                             {"ids": ids[1:3]}, format="json")
    assert many.status_code == 200, many.content
    assert many.json()["record_ids"] == ids[1:3] and many.json()["record_count"] == 1
    assert list(DatasetRecord.objects.filter(dataset_id=dataset_id)
                .values_list("id", flat=True)) == [ids[3]]
    listed = owner.client.get(owner.url(f"datasets/{dataset_id}/records")).json()
    assert [r["id"] for r in listed["results"]] == [ids[3]]
    assert AuditLogEntry.objects.filter(action="dataset.records_deleted").count() == 2


def test_a_bulk_delete_with_an_unknown_id_deletes_nothing(owner, assert_envelope):
    dataset_id, ids = seeded(owner, 2)
    other_id = register(owner, "other")
    response = owner.client.post(owner.url(f"datasets/{dataset_id}/records/delete"),
                                 {"ids": [ids[0], 999999]}, format="json")
    error = assert_envelope(response, 404, "not_found")
    assert error["details"]["missing_record_ids"] == [999999]
    # A record of the same tenant but another dataset is not this dataset's.
    wrong = owner.client.delete(owner.url(f"datasets/{other_id}/records/{ids[0]}"))
    assert_envelope(wrong, 404, "not_found")
    assert DatasetRecord.objects.filter(dataset_id=dataset_id).count() == 2
    for bad in ({}, {"ids": []}, {"ids": ["x"]}, {"ids": [1], "extra": 1}):
        assert_envelope(owner.client.post(owner.url(f"datasets/{dataset_id}/records/delete"),
                                          bad, format="json"), 400, "validation_error")


def test_it_changes_data_use_and_name_and_refuses_bad_changes(owner, assert_envelope):
    dataset_id = register(owner, "first")
    register(owner, "taken")
    response = owner.client.patch(owner.url(f"datasets/{dataset_id}"),
                                  {"name": "renamed", "data_use": {"allow_rag": True}},
                                  format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["name"] == "renamed" and body["consent_revoked"] is False
    assert body["data_use"] == {"allow_rag": True, "allow_private_training": True,
                                "evaluation_only": False}
    entry = AuditLogEntry.objects.get(action="dataset.data_use_changed")
    assert entry.details["changed"] == {"name": "renamed", "allow_rag": True}
    url = owner.url(f"datasets/{dataset_id}")
    assert_envelope(owner.client.patch(url, {"name": "taken"}, format="json"), 409,
                    "dataset_name_taken")
    for bad in ({"data_use": {"allow_training": False}}, {"data_use": "no"},
                {"data_use": {"allow_rag": "maybe"}}, {"nmae": "x"}, {"name": ""}):
        assert_envelope(owner.client.patch(url, bad, format="json"), 400, "validation_error")
    assert Dataset.objects.get(pk=dataset_id).allow_private_training is True


def test_other_tenants_get_404_and_read_only_keys_403(owner, outsider, read_only,
                                                      assert_envelope):
    dataset_id, ids = seeded(owner, 2)
    own = f"/v1/tenants/{owner.tenant.slug}/datasets/{dataset_id}"
    crossed_calls = [
        ("delete", own, None), ("patch", own, {"name": "mine"}),
        ("delete", f"{own}/records/{ids[0]}", None),
        ("post", f"{own}/records/delete", {"ids": [ids[0]]}),
        ("get", f"{own}/export", None),
    ]
    for method, url, body in crossed_calls:
        # The owner's URL with the outsider's key, and the owner's ids on the outsider's URL.
        theirs = url.replace(f"/tenants/{owner.tenant.slug}/", f"/tenants/{outsider.tenant.slug}/")
        for target in (url, theirs):
            response = getattr(outsider.client, method)(target, body, format="json")
            assert_envelope(response, 404)
    for method, url, body in crossed_calls[:4]:
        response = getattr(read_only.client, method)(url, body, format="json")
        assert_envelope(response, 403)
    assert DatasetRecord.objects.filter(dataset_id=dataset_id).count() == 2
    assert Dataset.objects.get(pk=dataset_id).name == "d"


def test_a_write_to_a_malformed_record_url_gets_the_404_envelope(owner, assert_envelope):
    """`.../records/1.5` matches no route; the catch-all answers with the envelope, not with
    CSRF's HTML 403 (a real client sends no CSRF token: the test client must check it)."""
    from rest_framework.test import APIClient

    dataset_id, _ = seeded(owner, 1)
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {owner.secret}")
    for method, path in (("delete", f"datasets/{dataset_id}/records/1.5"),
                         ("post", "feedback/review/x"), ("delete", "datasets/abc")):
        assert_envelope(getattr(client, method)(owner.url(path)), 404, "not_found")
    assert DatasetRecord.objects.filter(dataset_id=dataset_id).count() == 1
