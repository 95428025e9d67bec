"""Serving: chat/completions answers with the active adapter or the A/B arm, logs every turn,
follows activation without a restart, and never loads a tampered adapter."""

import json

import pytest

from adapters.runtime import runtime_get, runtime_reset
from adapters.services import ab_route
from feedback.models import Conversation, Message
from tests.adapters.conftest import SECRET_PROMPT, TRAINED_ANSWERS
from tests.factories import stored_file_tamper

pytestmark = pytest.mark.django_db


def _ask(ctx, conversation_id=None, content=SECRET_PROMPT, **extra):
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 24,
            "temperature": 0, **extra}
    if conversation_id:
        body["conversation_id"] = conversation_id
    return ctx.client.post(ctx.url("chat/completions"), body, format="json")


@pytest.fixture
def trained_versions(owner, base_model, make_version, trained_result_dirs):
    """v1 answers 'apple' (active: the tenant's first version), v2 answers 'river'."""
    v1 = make_version(owner.tenant, result_dir=trained_result_dirs["apple"])
    v2 = make_version(owner.tenant, result_dir=trained_result_dirs["river"])
    return v1, v2


def test_it_answers_with_the_base_model_in_openai_shape(owner, base_model):
    response = _ask(owner, content="Hello there")

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["adapter_version"] is None and body["model"] == "base"
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in {"stop", "length"}
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    reply = Message.objects.get(tenant=owner.tenant, external_id=body["message_id"])
    assert reply.role == "assistant" and reply.served_by_version is None
    assert reply.conversation.external_id == body["conversation_id"]
    assert reply.conversation.source == Conversation.SOURCE_CHAT
    assert [m.role for m in reply.conversation.messages.all()] == ["user", "assistant"]


def test_activation_and_rollback_switch_the_served_answer_without_a_restart(owner,
                                                                            trained_versions):
    runtime = runtime_get()
    base_loads = runtime.stats["base_loads"]

    first = _ask(owner).json()
    assert (first["adapter_version"], first["choices"][0]["message"]["content"]) == (
        "v1", TRAINED_ANSWERS["apple"])

    assert owner.client.post(owner.url("lora/v2/activate"), {"force": True},
                             format="json").status_code == 200
    second = _ask(owner).json()
    assert (second["adapter_version"], second["choices"][0]["message"]["content"]) == (
        "v2", TRAINED_ANSWERS["river"])

    assert owner.client.post(owner.url("lora/v1/activate")).status_code == 200  # rollback
    third = _ask(owner).json()
    assert (third["adapter_version"], third["choices"][0]["message"]["content"]) == (
        "v1", TRAINED_ANSWERS["apple"])

    base = _ask(owner, adapter_version="base").json()
    assert base["adapter_version"] is None
    assert base["choices"][0]["message"]["content"] not in TRAINED_ANSWERS.values()

    assert runtime_get() is runtime  # same process, same runtime: nothing was restarted
    assert runtime.stats["base_loads"] <= base_loads + 1  # the tiny base, loaded once at most
    assert Message.objects.get(external_id=second["message_id"]).served_by_version == \
        trained_versions[1]


def test_the_ab_split_is_sticky_per_conversation(owner, trained_versions):
    owner.client.patch(owner.url("settings"), {"lora_ab_test": {
        "enabled": True, "versions": {"v1": 0.5, "v2": 0.5}}}, format="json")
    ids = [f"conv_sticky_{i}" for i in range(6)]
    expected = {cid: ab_route(cid, {"v1": 0.5, "v2": 0.5}) for cid in ids}
    assert set(expected.values()) == {"v1", "v2"}  # both arms are exercised
    answer_of = {"v1": TRAINED_ANSWERS["apple"], "v2": TRAINED_ANSWERS["river"]}

    for cid in ids:
        body = _ask(owner, cid).json()
        assert body["adapter_version"] == expected[cid]
        assert body["choices"][0]["message"]["content"] == answer_of[expected[cid]]

    # Re-weighting the split does not move a running conversation to the other arm.
    owner.client.patch(owner.url("settings"), {"lora_ab_test": {
        "enabled": True, "versions": {"v1": 0.01, "v2": 0.99}}}, format="json")
    for cid in ids:
        history = list(Message.objects.filter(conversation__external_id=cid)
                       .order_by("position").values("role", "content"))
        body = owner.client.post(owner.url("chat/completions"), {
            "conversation_id": cid, "max_tokens": 24,
            "messages": [*history, {"role": "user", "content": SECRET_PROMPT}],
        }, format="json").json()
        assert body["adapter_version"] == expected[cid]
        served = set(Message.objects.filter(conversation__external_id=cid, role="assistant")
                     .values_list("served_by_version__number", flat=True))
        assert served == {int(expected[cid][1:])}
        # the re-sent history was not logged twice: user, assistant, user, assistant
        assert Message.objects.filter(conversation__external_id=cid).count() == 4


def test_a_tampered_adapter_is_refused_at_load(owner, base_model, make_version,
                                               adapter_cache_dir):
    runtime_reset()  # a cold runtime and local cache: nothing verified earlier may be reused
    version = make_version(owner.tenant)
    stored_file_tamper(f"{version.storage_prefix}/adapter_model.safetensors")

    response = _ask(owner)

    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "adapter_integrity_error"
    assert "integrity check" in error["message"]
    assert "sha256 mismatch" in error["details"]["files"]["adapter_model.safetensors"]
    runtime = runtime_get()
    assert runtime.loaded_adapters == [] and runtime.stats["integrity_errors"] == 1
    assert not Message.objects.filter(tenant=owner.tenant, role="assistant").exists()


def test_the_runtime_evicts_the_least_recently_used_adapter(owner, base_model, make_version,
                                                            settings):
    settings.ADAPTER_CACHE_SIZE = 1
    make_version(owner.tenant)
    make_version(owner.tenant)
    assert _ask(owner, adapter_version="v1").status_code == 200
    assert _ask(owner, adapter_version="v2").status_code == 200
    runtime = runtime_get()
    assert len(runtime.loaded_adapters) == 1 and runtime.loaded_adapters[0].startswith(
        f"t{owner.tenant.pk}_v2_")
    assert runtime.stats["evictions"] == 1
    assert _ask(owner, adapter_version="v1").json()["adapter_version"] == "v1"


@pytest.mark.parametrize("body, field", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "   "}]}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 2.5}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "stream": "sometimes"}, "stream"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_p": 0}, "top_p"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}, "top_p"),
    ({"messages": [{"role": "user", "content": "hi"},
                   {"role": "assistant", "content": "x"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}], "adapter_version": "latest"},
     "adapter_version"),
])
def test_it_refuses_bad_requests_with_the_envelope(owner, body, field):
    response = owner.client.post(owner.url("chat/completions"), body, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error" and field in error["details"]
    assert not Message.objects.exists()


def test_an_unknown_adapter_version_override_is_404(owner, base_model):
    response = _ask(owner, adapter_version="v7")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "version_not_found"


def test_a_version_with_a_scope_lets_the_base_answer_what_it_was_not_taught(
        owner, base_model, make_version, trained_result_dirs, scoped_result_dir):
    """The "apple" adapter trained with train.scope_gate answers its own question; a prompt
    unlike anything it trained on is answered by the base model, adapter off, exactly as
    `adapter_version: "base"` answers it, and the reply still counts for the version. The same
    adapter trained without a scope answers that prompt otherwise (so the gate is what
    changed it)."""
    other = "Tell me about the ocean waves."
    base_reply = _ask(owner, content=other, adapter_version="base").json()
    unscoped = make_version(owner.tenant, result_dir=trained_result_dirs["apple"])
    scoped = make_version(owner.tenant, result_dir=scoped_result_dir)
    assert scoped.manifest["scope"]["threshold"] == 0.5
    assert scoped.eval_metrics["scope_gate"]["trained_prompts"] == 1

    ungated = _ask(owner, content=other, adapter_version=unscoped.version).json()
    assert "scope" not in ungated
    assert ungated["choices"][0]["message"]["content"] != \
        base_reply["choices"][0]["message"]["content"]

    taught = _ask(owner, adapter_version=scoped.version).json()
    assert taught["choices"][0]["message"]["content"] == TRAINED_ANSWERS["apple"]
    assert taught["scope"] == {"in_scope": True, "similarity": 1.0, "threshold": 0.5}
    gated = _ask(owner, content=other, adapter_version=scoped.version).json()
    print(f"\nbase: {base_reply['choices'][0]['message']['content']!r}; without a scope: "
          f"{ungated['choices'][0]['message']['content']!r}; gated: {gated['scope']}")
    assert gated["scope"]["in_scope"] is False and gated["scope"]["similarity"] < 0.5
    assert gated["choices"][0]["message"]["content"] == \
        base_reply["choices"][0]["message"]["content"]
    assert gated["adapter_version"] == scoped.version
    assert Message.objects.get(external_id=gated["message_id"]).served_by_version == scoped

    # Streamed the same: the last chunk says what the gate decided.
    streamed = _ask(owner, content=other, adapter_version=scoped.version, stream=True)
    chunks = [json.loads(line[6:]) for line in
              b"".join(streamed.streaming_content).decode().split("\n\n")
              if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == \
        base_reply["choices"][0]["message"]["content"]
    assert chunks[-1]["scope"]["in_scope"] is False


def test_an_unreadable_scope_is_served_as_no_scope_and_logged(caplog):
    """Only the trainer writes a scope; should a manifest's be unreadable, the version answers
    every prompt (as a version without a scope does) and the log says why."""
    from adapters.models import AdapterVersion
    from adapters.scope import scope_decision, version_scope

    for number, scope in enumerate(({"format": "other"}, {"format": "synapsex-scope/1"}), 1):
        version = AdapterVersion(number=number, sha256=f"{number}" * 64,
                                 manifest={"scope": scope})
        assert version_scope(version) is None
        assert scope_decision(version, [{"role": "user", "content": "hi"}]) is None
    assert caplog.text.count("unreadable scope") == 2
