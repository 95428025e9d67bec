"""Operators browse feedback, conversations/messages and datasets, filtered by tenant, type and
date; the stored (redacted) records are visible."""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("operator", "op@example.com", "pw-12345!")
    client.force_login(user)
    return client


@pytest.fixture
def data(owner, outsider):
    for ctx, word in ((owner, "owner-question"), (outsider, "outsider-question")):
        ctx.client.post(ctx.url("conversations"), {"conversation_id": f"conv-{word}", "messages": [
            {"message_id": f"u-{word}", "role": "user", "content": f"{word} mail a@b.com"},
            {"message_id": f"a-{word}", "role": "assistant", "content": "answer"}]},
            format="json")
        ctx.client.post(ctx.url("feedback"), {"conversation_id": f"conv-{word}",
                                              "message_id": f"a-{word}", "type": "thumbs_down"},
                        format="json")
        dataset = ctx.client.post(ctx.url("datasets/register"),
                                  {"name": f"ds-{word}", "type": "conversations"},
                                  format="json").json()
        ctx.client.post(ctx.url(f"datasets/{dataset['id']}/upload/conversations"),
                        {"conversations": [{"messages": [
                            {"role": "user", "content": f"record {word}"},
                            {"role": "assistant", "content": "ok"}]}]}, format="json")
    return owner, outsider


def test_it_filters_by_tenant_type_and_date(staff_client, data):
    owner, _ = data
    tenant = f"tenant__id__exact={owner.tenant.pk}"
    page = staff_client.get(reverse("admin:feedback_feedback_changelist") +
                            f"?{tenant}&type__exact=thumbs_down&created_at__year=2000")
    assert page.status_code == 200 and "a-owner-question" not in page.content.decode()
    page = staff_client.get(reverse("admin:feedback_feedback_changelist") +
                            f"?{tenant}&type__exact=thumbs_down")
    html = page.content.decode()
    assert "a-owner-question" in html and "a-outsider-question" not in html
    page = staff_client.get(reverse("admin:feedback_conversation_changelist") + f"?{tenant}")
    html = page.content.decode()
    assert "conv-owner-question" in html and "conv-outsider-question" not in html
    page = staff_client.get(reverse("admin:feedback_message_changelist") +
                            f"?{tenant}&role__exact=user")
    assert "u-owner-question" in page.content.decode()
    page = staff_client.get(reverse("admin:feedback_dataset_changelist") +
                            f"?{tenant}&type__exact=conversations")
    html = page.content.decode()
    assert "ds-owner-question" in html and "ds-outsider-question" not in html


def test_conversation_and_dataset_pages_show_their_contents(staff_client, data):
    from feedback.models import Conversation, Dataset

    owner, _ = data
    conversation = Conversation.objects.get(tenant=owner.tenant)
    html = staff_client.get(reverse("admin:feedback_conversation_change",
                                    args=[conversation.pk])).content.decode()
    assert "owner-question mail [EMAIL]" in html and "a@b.com" not in html
    dataset = Dataset.objects.get(tenant=owner.tenant)
    html = staff_client.get(reverse("admin:feedback_dataset_change",
                                    args=[dataset.pk])).content.decode()
    assert "1 records" in html
    html = staff_client.get(reverse("admin:feedback_datasetrecord_changelist") +
                            f"?dataset__id__exact={dataset.pk}").content.decode()
    assert html.count("/change/") >= 1
    record = dataset.records.get()
    html = staff_client.get(reverse("admin:feedback_datasetrecord_change",
                                    args=[record.pk])).content.decode()
    assert "record owner-question" in html
    assert staff_client.get(reverse("admin:feedback_feedbackcountershard_changelist")).status_code \
        == 200
