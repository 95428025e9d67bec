"""The seed's "Feedback Collection" and "Data Preparation" calls, run as written against a live
server with the `requests` library: only the base URL and the key differ (the tenant is even
called `my_tenant`, as in the seed)."""

import pytest
import requests

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def seed(live_server, make_tenant):
    ctx = make_tenant("my_tenant")
    return live_server.url, ctx.secret


def test_it_submits_the_seed_feedback_and_reads_the_stats(seed, capsys):
    BASE, KEY = seed
    # --- Feedback Collection: "Submit feedback via API", copied from the seed ---
    response = requests.post(
    f"{BASE}/v1/tenants/my_tenant/feedback",
    headers={"Authorization": f"Bearer {KEY}"},
    json={
    "conversation_id": "conv_123",
    "message_id": "msg_456",
    "type": "correction",
    "correction": "The correct answer is 500mg, not 250mg",
    "metadata": {
    "user_id": "user_789",
    "category": "dosage"
    }
    }
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["conversation_id"] == "conv_123" and body["message_id"] == "msg_456"
    assert body["type"] == "correction"
    assert body["correction"] == "The correct answer is 500mg, not 250mg"  # not over-redacted
    assert body["metadata"] == {"user_id": "user_789", "category": "dosage"}
    assert body["linked"] is False and "conversations" in body["hint"]

    # --- "Check Training Readiness", copied from the seed ---
    response = requests.get(
    f"{BASE}/v1/tenants/my_tenant/feedback/stats",
    headers={"Authorization": f"Bearer {KEY}"}
    )
    stats = response.json()
    print(f"Total feedback: {stats['total']}")
    print(f"Ready for training: {stats['ready_for_training']}")
    # Ready when: corrections >= 50 or (thumbs_up + thumbs_down) >= 100

    assert response.status_code == 200
    assert capsys.readouterr().out == "Total feedback: 1\nReady for training: False\n"
    assert stats["corrections"] == 1 and stats["by_type"]["correction"] == 1
    assert stats["missing"] == {"sft": {"corrections_needed": 49},
                                "dpo": {"thumbs_needed": 100}}


def test_it_registers_a_dataset_and_uploads_the_seed_data(seed):
    BASE, KEY = seed
    # --- Data Preparation: "1. Register dataset", copied from the seed ---
    response = requests.post(
    f"{BASE}/v1/tenants/my_tenant/datasets/register",
    headers={"Authorization": f"Bearer {KEY}"},
    json={
    "name": "training_conversations",
    "type": "conversations",
    "data_use": {
    "allow_rag": False,
    "allow_private_training": True
    }
    }
    )
    dataset_id = response.json()['id']
    assert response.status_code == 201, response.text

    # --- "2. Upload conversations", copied from the seed ---
    response = requests.post(
    f"{BASE}/v1/tenants/my_tenant/datasets/{dataset_id}/upload/conversations",
    headers={"Authorization": f"Bearer {KEY}"},
    json={
    "conversations": [
    {
    "messages": [
    {"role": "user", "content": "What's your return policy?"},
    {"role": "assistant", "content": "Items can be returned within 30 days..."}
    ]
    }
    ]
    }
    )
    assert response.status_code == 201, response.text
    assert response.json()["stored"] == 1

    # --- "SFT Format", the seed's example body ---
    response = requests.post(
        f"{BASE}/v1/tenants/my_tenant/datasets/{dataset_id}/upload/conversations",
        headers={"Authorization": f"Bearer {KEY}"},
        json={
  "conversations": [
    {
      "messages": [
        {"role": "system", "content": "You are a helpful pharmacy assistant."},
        {"role": "user", "content": "What is the dosage for ibuprofen?"},
        {"role": "assistant", "content": "For adults, the typical dosage is 200-400mg every 4-6 hours..."}  # noqa: E501
      ]
    }
  ]
},
    )
    assert response.status_code == 201, response.text

    detail = requests.get(f"{BASE}/v1/tenants/my_tenant/datasets/{dataset_id}",
                          headers={"Authorization": f"Bearer {KEY}"}).json()
    assert detail["record_count"] == 2
    # The seed's two keys as sent, plus the platform's evaluation_only (off by default).
    assert detail["data_use"] == {"allow_rag": False, "allow_private_training": True,
                                  "evaluation_only": False}
    assert detail["last_validation_report"]["stored"] == 1

    records = requests.get(f"{BASE}/v1/tenants/my_tenant/datasets/{dataset_id}/records",
                           headers={"Authorization": f"Bearer {KEY}"}).json()["results"]
    assert records[1]["data"]["messages"][2]["content"] == (
        "For adults, the typical dosage is 200-400mg every 4-6 hours...")  # no over-redaction


def test_it_uploads_the_seed_dpo_format(seed):
    BASE, KEY = seed
    response = requests.post(
        f"{BASE}/v1/tenants/my_tenant/datasets/register",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"name": "prefs", "type": "preferences",
              "data_use": {"allow_rag": False, "allow_private_training": True}},
    )
    dataset_id = response.json()["id"]
    # --- "DPO Format", the seed's example body ---
    response = requests.post(
        f"{BASE}/v1/tenants/my_tenant/datasets/{dataset_id}/upload/preferences",
        headers={"Authorization": f"Bearer {KEY}"},
        json={
  "preferences": [
    {
      "prompt": "Explain our shipping policy",
      "chosen": "We offer free shipping on orders over $50. Standard shipping takes 3-5 business days...",  # noqa: E501
      "rejected": "Check the website for shipping info."
    }
  ]
},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["stored"], body["duplicates"], body["invalid"]) == (1, 0, 0)
    records = requests.get(f"{BASE}/v1/tenants/my_tenant/datasets/{dataset_id}/records",
                           headers={"Authorization": f"Bearer {KEY}"}).json()["results"]
    assert records[0]["data"]["chosen"].startswith("We offer free shipping on orders over $50.")


def test_it_runs_the_seed_script_twice_without_breaking(seed):
    """A user re-running the seed's setup script gets the same dataset id back."""
    BASE, KEY = seed
    ids = []
    for _ in range(2):
        response = requests.post(
            f"{BASE}/v1/tenants/my_tenant/datasets/register",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"name": "training_conversations", "type": "conversations",
                  "data_use": {"allow_rag": False, "allow_private_training": True}},
        )
        ids.append(response.json()["id"])
    assert ids[0] == ids[1]
