"""Serving a real instruct model (SmolLM2-135M-Instruct): it answers, stops at its template's
end-of-turn, streams OpenAI chunks, logs a streamed reply even when the client drops, lists the
`model` values chat accepts, and serves each version on the base it was trained on.

Generation on two busy CPU cores is about 1-3 s per 30 tokens: max_tokens stays small."""

import json

import pytest

from adapters.runtime import runtime_get
from adapters.serving import chat_completion_stream
from feedback.models import Message

pytestmark = pytest.mark.django_db

CAPITAL = "What is the capital of France?"


@pytest.fixture
def real_base(settings, real_base_path):
    settings.BASE_MODEL_PATH = str(real_base_path)
    settings.BASE_MODEL_HF_ID = ""
    return real_base_path


def _chat(ctx, content=CAPITAL, **extra):
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 24, **extra}
    return ctx.client.post(ctx.url("chat/completions"), body, format="json")


def _events(raw: bytes) -> list:
    """SSE `data:` payloads in order (JSON decoded, "[DONE]" kept as is); every event must be
    one `data: ...` line followed by a blank line."""
    text = raw.decode()
    assert text.endswith("\n\n")
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: ") and "\n" not in block, block
        payload = block[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_the_real_base_answers_and_stops_at_its_end_of_turn(owner, real_base):
    response = _chat(owner)

    assert response.status_code == 200, response.content
    body = response.json()
    text = body["choices"][0]["message"]["content"]
    assert "Paris" in text
    assert "<|im_end|>" not in text and "<|im_start|>" not in text
    assert body["choices"][0]["finish_reason"] == "stop"
    assert 0 < body["usage"]["completion_tokens"] < 24
    assert Message.objects.get(external_id=body["message_id"]).content == text


def test_a_stream_is_openai_chunks_whose_deltas_make_the_logged_message(owner, real_base):
    response = _chat(owner, stream=True)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    events = _events(b"".join(response.streaming_content))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["model"] == "base"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert "Paris" in text and "<|im_end|>" not in text
    reply = Message.objects.get(tenant=owner.tenant, external_id=chunks[0]["message_id"])
    assert chunks[0]["id"] == f"chatcmpl-{reply.external_id}"
    assert reply.content == text and reply.served_by_version is None
    assert [m.role for m in reply.conversation.messages.all()] == ["user", "assistant"]


def test_a_dropped_stream_still_logs_its_message(owner, real_base):
    """The client goes away after two events: the server closes the response, which closes
    the event stream (StreamingHttpResponse registers its close()); the whole reply is logged
    under the message id the client was already given."""
    stream = chat_completion_stream(
        tenant=owner.tenant, messages=[{"role": "user", "content": "Write one sentence about "
                                        "the sea."}], max_tokens=16, temperature=0.0)
    first = _events(next(stream))[0]
    second = _events(next(stream))[0]
    assert not Message.objects.filter(tenant=owner.tenant, role="assistant").exists()

    stream.close()

    reply = Message.objects.get(tenant=owner.tenant, external_id=first["message_id"])
    assert reply.role == "assistant" and reply.served_by_version is None
    assert reply.content.startswith(second["choices"][0]["delta"]["content"])
    assert len(reply.content) > len(second["choices"][0]["delta"]["content"])
    stream.close()  # closing twice logs nothing more
    assert Message.objects.filter(tenant=owner.tenant, role="assistant").count() == 1


def test_models_lists_base_and_ready_versions_as_chat_accepts_them(owner, outsider, base_model,
                                                                  make_version):
    make_version(owner.tenant)
    archived = make_version(owner.tenant)
    make_version(owner.tenant)
    assert owner.client.delete(owner.url(f"lora/{archived.version}")).status_code == 200

    body = owner.client.get(owner.url("models")).json()

    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == ["base", "acme:v1", "acme:v3"]
    assert all(m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"]
               for m in body["data"])
    for model_id, served in [("base", None), ("acme:v1", "v1"), ("acme:v3", "v3")]:
        answer = _chat(owner, content="Hi", model=model_id, max_tokens=2).json()
        assert answer["model"] == model_id and answer["adapter_version"] == served

    assert outsider.client.get(owner.url("models")).status_code == 404
    assert [m["id"] for m in outsider.client.get(outsider.url("models")).json()["data"]] == [
        "base"]


def test_each_version_is_served_on_the_base_it_was_trained_on(owner, real_base, make_version,
                                                              tiny_base_path):
    version = make_version(owner.tenant)  # trained on the tiny base (make_job records it)
    assert version.base_model == str(tiny_base_path)

    on_tiny = _chat(owner, content="Hi", adapter_version="v1", max_tokens=4)
    on_real = _chat(owner, adapter_version="base")

    assert on_tiny.status_code == 200 and on_tiny.json()["adapter_version"] == "v1"
    assert "Paris" in on_real.json()["choices"][0]["message"]["content"]
    resident = runtime_get().loaded_bases
    assert str(tiny_base_path) in resident and str(real_base) in resident
