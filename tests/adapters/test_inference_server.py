"""The hand-off of generation to a multi-LoRA inference server (adapters.inference_server):
versions registered as <tenant>-v<N> through vLLM's runtime LoRA API, chat requests routed there,
registrations that survive a server restart, unloading on archive, a 503 when it is down.

The server is `tests/inference_standin.py`, a local stand-in: vLLM needs a GPU and cannot be
installed on this machine, so a separate process speaks the part of vLLM's documented HTTP API
the platform calls (same paths, bodies, status codes and messages) and really generates with
the adapters it was told to load (transformers + PEFT on the tiny base). What vLLM itself does
with them (batching, its kernels) is not tested here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from adapters.models import AdapterVersion
from adapters.runtime import AdapterRef
from adapters.services import sha256_of_file
from tests.adapters.conftest import SECRET_PROMPT, TRAINED_ANSWERS
from tests.training.conftest import run_worker_burst

pytestmark = pytest.mark.django_db

STANDIN = Path(__file__).resolve().parents[1] / "inference_standin.py"
API_KEY = "standin-key"


class Standin:
    def __init__(self, model: Path):
        self.model = model
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(STANDIN), "--model", str(self.model), "--served-model-name",
             "base", "--port", str(self.port), "--api-key", API_KEY],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("READY "), line
        self.port = int(line.split()[1])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> list[dict]:
        return requests.get(f"{self.url}/standin/log", timeout=10).json()

    def loaded(self) -> list[str]:
        response = requests.get(f"{self.url}/v1/models", timeout=10,
                                headers={"Authorization": f"Bearer {API_KEY}"})
        return [card["id"] for card in response.json()["data"]]


@pytest.fixture(scope="module")
def standin(tiny_base_path):
    server = Standin(tiny_base_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def remote(settings, standin, tmp_path, base_model):
    """Chat requests go to the stand-in; a clean server (restarted) for each test."""
    standin.stop()
    standin.start()
    settings.INFERENCE_SERVER_URL = standin.url
    settings.INFERENCE_SERVER_API_KEY = API_KEY
    settings.INFERENCE_SERVER_BASE_MODEL = "base"
    settings.INFERENCE_SERVER_ADAPTER_DIR = str(tmp_path / "served-adapters")
    return standin


def _ask(ctx, **extra):
    body = {"messages": [{"role": "user", "content": SECRET_PROMPT}], "max_tokens": 24,
            "temperature": 0, **extra}
    return ctx.client.post(ctx.url("chat/completions"), body, format="json")


def _chats(log: list[dict]) -> list[tuple[str, int]]:
    return [(e["model"], e["status"]) for e in log if e["path"] == "/v1/chat/completions"]


def test_chat_is_generated_by_the_server_with_the_routed_version(
        owner, remote, make_version, trained_result_dirs, rq_connection, settings,
        django_capture_on_commit_callbacks):
    from adapters.services.versions import adapter_version_activate

    with django_capture_on_commit_callbacks(execute=True):
        v1 = make_version(owner.tenant, result_dir=trained_result_dirs["apple"])
        v2 = make_version(owner.tenant, result_dir=trained_result_dirs["river"])
    # Each new version's registration was queued after its commit; a real worker runs them.
    assert remote.loaded() == ["base"]
    run_worker_burst(("default",))
    assert sorted(remote.loaded()) == ["acme-v1", "acme-v2", "base"]
    loads = [e for e in remote.log() if e["path"] == "/v1/load_lora_adapter"]
    assert [(e["model"], e["status"]) for e in loads] == [("acme-v1", 200), ("acme-v2", 200)]

    body = _ask(owner).json()
    assert (body["adapter_version"], body["model"]) == ("v1", "acme:v1")
    assert body["choices"][0]["message"]["content"] == TRAINED_ANSWERS["apple"]
    assert body["usage"]["completion_tokens"] > 0
    adapter_version_activate(version=v2, force=True)
    assert _ask(owner).json()["choices"][0]["message"]["content"] == TRAINED_ANSWERS["river"]
    base = _ask(owner, model="base").json()
    assert base["adapter_version"] is None
    assert base["choices"][0]["message"]["content"] not in TRAINED_ANSWERS.values()
    assert _chats(remote.log()) == [("acme-v1", 200), ("acme-v2", 200), ("base", 200)]
    # The folders the server read hold the verified files, nothing else.
    root = Path(settings.INFERENCE_SERVER_ADAPTER_DIR)
    files = sorted(p.name for p in root.rglob("*") if p.is_file())
    assert files == sorted(["adapter_config.json", "adapter_model.safetensors"] * 2)
    assert v1.files["adapter_model.safetensors"] == sha256_of_file(
        root / str(owner.tenant.pk) / AdapterRef.of(v1).name / "adapter_model.safetensors")


def test_a_restarted_server_gets_the_version_registered_again(owner, remote, make_version,
                                                              trained_result_dirs):
    make_version(owner.tenant, result_dir=trained_result_dirs["apple"])
    # Never registered (no worker ran): the first request finds the model unknown, registers
    # it and asks again.
    assert _ask(owner).json()["choices"][0]["message"]["content"] == TRAINED_ANSWERS["apple"]
    assert _chats(remote.log()) == [("acme-v1", 404), ("acme-v1", 200)]

    remote.stop()
    remote.start()  # vLLM forgets adapters loaded at run time
    assert remote.loaded() == ["base"]
    assert _ask(owner).json()["choices"][0]["message"]["content"] == TRAINED_ANSWERS["apple"]
    assert _chats(remote.log()) == [("acme-v1", 404), ("acme-v1", 200)]


def test_streaming_goes_through_the_server(owner, remote, make_version, trained_result_dirs):
    make_version(owner.tenant, result_dir=trained_result_dirs["river"])
    response = _ask(owner, stream=True)
    assert response.status_code == 200
    events = [line[6:] for line in b"".join(response.streaming_content).decode().split("\n\n")
              if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == TRAINED_ANSWERS["river"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert ("acme-v1", 200) in _chats(remote.log())


def test_archiving_a_version_unloads_it_and_sync_registers_the_rest(
        owner, remote, make_version, trained_result_dirs, rq_connection,
        django_capture_on_commit_callbacks):
    from django.core.management import call_command

    from adapters.services.versions import adapter_version_activate, adapter_version_archive

    v1 = make_version(owner.tenant, result_dir=trained_result_dirs["apple"])
    v2 = make_version(owner.tenant, result_dir=trained_result_dirs["river"])
    out = _call(call_command, "inference_sync")
    assert sorted(out["registered"]) == ["acme-v1", "acme-v2"] and out["unloaded"] == []
    assert _call(call_command, "inference_sync")["registered"] == []  # nothing left to do

    adapter_version_activate(version=v2, force=True)
    with django_capture_on_commit_callbacks(execute=True):
        adapter_version_archive(version=v1)
    run_worker_burst(("default",))
    assert sorted(remote.loaded()) == ["acme-v2", "base"]
    assert AdapterVersion.objects.get(pk=v1.pk).status == AdapterVersion.ARCHIVED


def _call(call_command, name: str) -> dict:
    import io

    out = io.StringIO()
    call_command(name, stdout=out)
    return json.loads(out.getvalue())


def test_a_server_that_is_down_is_a_503_envelope(owner, remote, make_version,
                                                  trained_result_dirs):
    make_version(owner.tenant, result_dir=trained_result_dirs["apple"])
    remote.stop()
    response = _ask(owner)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"
    assert "cannot be reached" in response.json()["error"]["message"]
    remote.start()


def test_a_wrong_api_key_is_refused_by_the_server_and_said_so(owner, remote, settings):
    settings.INFERENCE_SERVER_API_KEY = "wrong"
    response = _ask(owner)
    assert response.status_code == 503
    assert "401" in response.json()["error"]["message"]
