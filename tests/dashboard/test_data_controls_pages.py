"""Dashboard pages for the data a tenant controls: deleting a dataset behind a confirmation
page, changing its data use, and the corrections review queue (one by one and in bulk). Admins
act; viewers read and get 403 on every action; another tenant's admin gets 404."""

import pytest
from django.urls import reverse

from feedback.models import Dataset, DatasetRecord, Feedback

pytestmark = pytest.mark.django_db


def dataset_with_records(tenant, n: int = 3) -> Dataset:
    from feedback.services import dataset_register, dataset_upload, upload_items_from_list

    dataset, _ = dataset_register(tenant=tenant, name="faq", type="conversations")
    dataset_upload(tenant=tenant, dataset=dataset, items=upload_items_from_list([
        {"messages": [{"role": "user", "content": f"Q{i}?"},
                      {"role": "assistant", "content": f"A{i}."}]} for i in range(n)]))
    dataset.refresh_from_db()
    return dataset


def corrections(tenant, n: int) -> list[int]:
    from feedback.services import conversation_log, feedback_submit

    ids = []
    for i in range(n):
        conversation_log(tenant=tenant, conversation_id=f"c{i}", messages=[
            {"message_id": f"c{i}u", "role": "user", "content": f"Question {i}?"},
            {"message_id": f"c{i}a", "role": "assistant", "content": f"Wrong answer {i}."}])
        result = feedback_submit(tenant=tenant, conversation_id=f"c{i}", message_id=f"c{i}a",
                                 type="correction", correction=f"Right answer {i}.",
                                 metadata={"user_id": f"u{i}"})
        ids.append(result.feedback.pk)
    return ids


def test_an_admin_deletes_a_dataset_after_confirming(client_for, admin_a, tenant_a):
    dataset = dataset_with_records(tenant_a)
    client = client_for(admin_a)
    page = client.get(reverse("dashboard:dataset", args=[tenant_a.slug, dataset.pk]))
    assert page.status_code == 200 and b'id="delete-dataset"' in page.content
    url = reverse("dashboard:dataset_delete", args=[tenant_a.slug, dataset.pk])
    confirm = client.get(url)
    assert confirm.status_code == 200
    assert b"cannot be undone" in confirm.content and b'id="confirm-delete"' in confirm.content
    assert Dataset.objects.filter(pk=dataset.pk).exists()  # the GET deleted nothing
    done = client.post(url, follow=True)
    assert done.status_code == 200
    assert "“faq” and its 3 records deleted" in done.content.decode()
    assert not Dataset.objects.filter(pk=dataset.pk).exists()
    assert not DatasetRecord.objects.filter(dataset_id=dataset.pk).exists()


def test_an_admin_revokes_and_grants_training_consent(client_for, admin_a, tenant_a):
    dataset = dataset_with_records(tenant_a)
    client = client_for(admin_a)
    url = reverse("dashboard:dataset_consent", args=[tenant_a.slug, dataset.pk])
    revoked = client.post(url, {"allow_rag": "on"}, follow=True)
    assert "Training consent revoked" in revoked.content.decode()
    dataset.refresh_from_db()
    assert not dataset.allow_private_training and dataset.allow_rag
    client.post(url, {"allow_private_training": "on"})
    dataset.refresh_from_db()
    assert dataset.allow_private_training and not dataset.allow_rag


def test_viewers_cannot_act_and_other_tenants_get_404(client_for, admin_a, viewer_a, admin_b,
                                                      tenant_a):
    dataset = dataset_with_records(tenant_a)
    ids = corrections(tenant_a, 1)
    s = tenant_a.slug
    actions = [
        (reverse("dashboard:dataset_delete", args=[s, dataset.pk]), {}),
        (reverse("dashboard:dataset_consent", args=[s, dataset.pk]), {}),
        (reverse("dashboard:review", args=[s]), {"action": f"approve:{ids[0]}"}),
    ]
    viewer, outsider = client_for(viewer_a), client_for(admin_b)
    confirm = viewer.get(actions[0][0])
    assert confirm.status_code == 200 and b'id="confirm-delete"' not in confirm.content
    assert viewer.get(reverse("dashboard:review", args=[s])).status_code == 200
    for url, body in actions:
        assert viewer.post(url, body).status_code == 403
        assert outsider.post(url, body).status_code == 404
        assert outsider.get(url).status_code in (404, 405)
    dataset.refresh_from_db()
    assert dataset.allow_private_training and dataset.record_count == 3
    assert Feedback.objects.get(pk=ids[0]).review_status == ""


def test_the_review_page_lists_answers_and_reviews_one_or_many(client_for, admin_a, tenant_a):
    ids = corrections(tenant_a, 4)
    client = client_for(admin_a)
    url = reverse("dashboard:review", args=[tenant_a.slug])
    page = client.get(url).content.decode()
    assert 'data-field="pending-count">4<' in page
    assert "Wrong answer 2." in page and "Right answer 2." in page
    bulk = client.post(url, {"action": "approve", "ids": [str(ids[0]), str(ids[1])]},
                       follow=True)
    assert "2 corrections approved." in bulk.content.decode()
    client.post(url, {"action": f"edit:{ids[2]}", f"correction_{ids[2]}": "Better answer 2."})
    client.post(url, {"action": f"reject:{ids[3]}"})
    rows = {f.pk: f for f in Feedback.objects.filter(pk__in=ids)}
    assert [rows[i].review_status for i in ids] == ["approved", "approved", "approved",
                                                    "rejected"]
    assert rows[ids[2]].correction == "Better answer 2." and rows[ids[0]].correction == \
        "Right answer 0."
    assert 'data-field="pending-count">0<' in client.get(url).content.decode()
    empty = client.post(url, {"action": "approve"}, follow=True)
    assert "Tick at least one correction." in empty.content.decode()


def test_the_review_page_changes_the_review_setting_and_the_cap(client_for, admin_a, viewer_a,
                                                                tenant_a):
    from tenants.models import AuditLogEntry
    from tenants.selectors import tenant_settings_document

    url = reverse("dashboard:review", args=[tenant_a.slug])
    client = client_for(admin_a)
    saved = client.post(url, {"section": "settings", "review_corrections": "on",
                              "max_examples_per_user": "5"}, follow=True)
    assert "Review settings saved." in saved.content.decode()
    document = tenant_settings_document(tenant=tenant_a)
    assert document["review_corrections"] is True and document["max_examples_per_user"] == 5
    assert AuditLogEntry.objects.filter(action="settings.updated",
                                        details__via="dashboard").exists()
    refused = client.post(url, {"section": "settings", "max_examples_per_user": "-3"},
                          follow=True)
    assert "max_examples_per_user" in refused.content.decode()
    assert tenant_settings_document(tenant=tenant_a)["max_examples_per_user"] == 5
    client.post(url, {"section": "settings", "max_examples_per_user": ""})
    document = tenant_settings_document(tenant=tenant_a)
    assert document["review_corrections"] is False and document["max_examples_per_user"] is None
    viewer = client_for(viewer_a)
    assert viewer.post(url, {"section": "settings", "review_corrections": "on"}).status_code \
        == 403
    assert b"Save review settings" not in viewer.get(url).content
