"""PII is redacted before storage in every training-facing field; counts show, values never."""

import pytest

from feedback.models import DatasetRecord, Feedback, Message
from feedback.pii import pii_redact

REDACT = [
    ("Write to jane.doe+work@example.co.uk please", "Write to [EMAIL] please", {"email": 1}),
    ("Call (415) 555-2671 or +358 40 1234567", "Call [PHONE] or [PHONE]", {"phone": 2}),
    ("Soita 040 123 4567", "Soita [PHONE]", {"phone": 1}),
    ("Card 4111 1111 1111 1111 exp 12/27", "Card [CARD] exp 12/27", {"card": 1}),
    ("Card 5555-5555-5555-4444", "Card [CARD]", {"card": 1}),
    ("IBAN FI21 1234 5600 0007 85 ok", "IBAN [IBAN] ok", {"iban": 1}),
    ("Pay DE89370400440532013000 now", "Pay [IBAN] now", {"iban": 1}),
    ("SSN 123-45-6789", "SSN [NATIONAL_ID]", {"national_id": 1}),
    ("Hetu 131052-308T here", "Hetu [NATIONAL_ID] here", {"national_id": 1}),
]
KEEP = [
    "The correct answer is 500mg, not 250mg",
    "Our store is open Monday-Friday 9am-6pm, Saturday 10am-4pm.",
    "For adults, the typical dosage is 200-400mg every 4-6 hours...",
    "We offer free shipping on orders over $50. Standard shipping takes 3-5 business days...",
    "Items can be returned within 30 days, price $1,299.99 or 49.99 EUR.",
    "Order 12345678 shipped on 2024-05-01, version 2.3.4",
    "Card-like but not Luhn: 4111 1111 1111 1112",
    "IBAN-like but bad checksum: FI21 1234 5600 0007 86",
    "Hetu-like but bad check: 131052-308U; SSN-like 000-12-3456",
    "ISBN 978-3-16-148410-0",
]


@pytest.mark.parametrize("text,expected,counts", REDACT, ids=[r[1] for r in REDACT])
def test_it_redacts(text, expected, counts):
    assert pii_redact(text) == (expected, counts)


@pytest.mark.parametrize("text", KEEP)
def test_it_does_not_over_redact(text):
    assert pii_redact(text) == (text, {})


@pytest.mark.django_db
def test_stored_rows_are_redacted_and_counted(owner):
    owner.client.post(owner.url("conversations"), {"conversation_id": "c1", "messages": [
        {"message_id": "u", "role": "user", "content": "I am jane@example.com, 415-555-2671"},
        {"message_id": "a", "role": "assistant", "content": "Thanks, noted."}]}, format="json")
    response = owner.client.post(owner.url("feedback"), {
        "conversation_id": "c1", "message_id": "a", "type": "correction",
        "correction": "Say: we will refund card 4111111111111111 to IBAN GB82WEST12345698765432 "
                      "within five working days"}, format="json")
    assert response.status_code == 201
    assert "4111" not in response.json()["correction"]

    message = Message.objects.get(external_id="u")
    assert message.content == "I am [EMAIL], [PHONE]"
    assert message.pii_redactions == {"email": 1, "phone": 1}
    row = Feedback.objects.get()
    assert row.correction == ("Say: we will refund card [CARD] to IBAN [IBAN] within five "
                              "working days")
    assert row.pii_redactions == {"card": 1, "iban": 1} and row.excluded_reason == ""

    pii = owner.client.get(owner.url("feedback/stats")).json()["pii_redactions"]
    assert pii["feedback"] == {"email": 0, "iban": 1, "card": 1, "national_id": 0, "phone": 0}
    assert pii["messages"]["email"] == 1 and pii["messages"]["phone"] == 1
    assert pii["total"] == 4


@pytest.mark.django_db
def test_a_correction_that_is_mostly_pii_is_held_back(owner):
    owner.client.post(owner.url("conversations"), {"conversation_id": "c1", "messages": [
        {"message_id": "u", "role": "user", "content": "q"},
        {"message_id": "a", "role": "assistant", "content": "a"}]}, format="json")
    body = owner.client.post(owner.url("feedback"), {
        "conversation_id": "c1", "message_id": "a", "type": "correction",
        "correction": "email bob@corp.com"}, format="json").json()
    assert body["excluded_reason"] == "pii_hold" and body["usable_for_training"] is False
    stats = owner.client.get(owner.url("feedback/stats")).json()
    assert stats["pii_holds"] == 1 and stats["usable_for_training"] == 0


@pytest.mark.django_db
def test_dataset_records_are_redacted_and_counts_show_in_the_detail(owner):
    dataset_id = owner.client.post(owner.url("datasets/register"),
                                   {"name": "d", "type": "conversations"},
                                   format="json").json()["id"]
    response = owner.client.post(owner.url(f"datasets/{dataset_id}/upload/conversations"), {
        "conversations": [
            {"messages": [{"role": "user", "content": "My SSN is 123-45-6789"},
                          {"role": "assistant", "content": "Never share it; mail help@shop.fi"}]},
            {"messages": [{"role": "user", "content": "Open hours?"},
                          {"role": "assistant", "content": "9am-6pm"}]}]}, format="json")
    assert response.status_code == 201
    assert response.json()["pii_redactions"] == {"national_id": 1, "email": 1}
    first = DatasetRecord.objects.order_by("id").first()
    assert first.data["messages"][0]["content"] == "My SSN is [NATIONAL_ID]"
    assert first.data["messages"][1]["content"] == "Never share it; mail [EMAIL]"
    assert first.pii_redactions == {"national_id": 1, "email": 1}
    detail = owner.client.get(owner.url(f"datasets/{dataset_id}")).json()
    assert detail["pii_redactions"] == {"national_id": 1, "email": 1}
    assert detail["last_validation_report"]["pii_redactions"] == {"national_id": 1, "email": 1}
