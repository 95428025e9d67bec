"""Batched serving (adapters.runtime, issue 16 section 4): greedy chat requests that arrive
together are generated in one `generate` call whatever adapter each needs (PEFT's mixed-adapter
batch), and each gets exactly the answer it gets alone; a tampered adapter fails only its own
requests. On the real instruct base, with adapters whose answers differ from the base's and
from each other, so a row served by the wrong adapter would show."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from adapters.runtime import AdapterRef, ModelRuntime
from adapters.services import AdapterIntegrityError

pytestmark = pytest.mark.django_db

PROMPTS = ["What is the capital of France?",
           "Name three colours of the rainbow, please, in one short sentence.",
           "What is 2 plus 2?"]


def _perturbed_result_dir(base_path: Path, out: Path, *, seed: int) -> Path:
    """A LoRA on the real base whose B matrices are random enough to change its answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tests.factories import write_manifest

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_path))
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16,
                                                  target_modules=["q_proj", "v_proj", "up_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.add_(torch.randn_like(param) * 0.03)
    (out / "adapter").mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out / "adapter"), safe_serialization=True)
    write_manifest(out, base_model=str(base_path))
    return out


def _runtime(tmp_path: Path, *, max_batch: int, window: float = 0.0) -> ModelRuntime:
    return ModelRuntime(cache_size=4, cache_dir=tmp_path / f"cache-{max_batch}",
                        max_batch=max_batch, batch_window=window)


def _together(runtime: ModelRuntime, calls: list[tuple[str, AdapterRef | None, int]]) -> list:
    """Send the calls at once from threads; each result is a Completion or the exception."""
    results: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def call(i, prompt, adapter, max_new_tokens):
        start.wait()
        try:
            results[i] = runtime.generate(messages=[{"role": "user", "content": prompt}],
                                          adapter=adapter, max_new_tokens=max_new_tokens)
        except Exception as exc:  # noqa: BLE001 - compared by the test
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i, *c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture
def real_versions(owner, settings, real_base_path, tmp_path):
    """Two versions on the real base, created through the real success signal."""
    from tests.factories import job
    from training.models import TrainingJob
    from training.signals import training_job_succeeded

    settings.BASE_MODEL_PATH = str(real_base_path)
    settings.BASE_MODEL_HF_ID = ""
    versions = []
    for seed in (1, 2):
        result = _perturbed_result_dir(real_base_path, tmp_path / f"adapter-{seed}", seed=seed)
        origin = job(owner.tenant, method="sft", status=TrainingJob.COMPLETED,
                     base_model=str(real_base_path), training_samples=10,
                     snapshot_manifest={"train_records": 10, "eval_records": 0,
                                        "sha256": "cd" * 32})
        responses = training_job_succeeded.send(sender=TrainingJob, job=origin,
                                                result_dir=result)
        versions += [v for _, v in responses if v is not None]
    return versions


def test_a_mixed_batch_answers_each_row_as_its_adapter_does_alone(real_versions, tmp_path):
    v1, v2 = (AdapterRef.of(v) for v in real_versions)
    # Same prompt and length on the first three rows (base, v1, v2); other prompts, lengths and
    # so padding on the rest.
    calls = [(PROMPTS[1], None, 16), (PROMPTS[1], v1, 16), (PROMPTS[1], v2, 16),
             (PROMPTS[0], v2, 12), (PROMPTS[2], v1, 20), (PROMPTS[0], None, 8)]

    alone = _runtime(tmp_path, max_batch=1)
    expected = [alone.generate(messages=[{"role": "user", "content": p}], adapter=a,
                               max_new_tokens=n) for p, a, n in calls]
    assert alone.stats["batches"] == 0
    # The adapters really answer differently from the base and from each other.
    same_prompt = [c.text for c in expected[:3]]
    print("alone:", [c.text for c in expected])
    assert len(set(same_prompt)) == 3, same_prompt

    batched = _runtime(tmp_path, max_batch=8, window=0.5)
    got = _together(batched, calls)
    print("batched:", [getattr(c, "text", c) for c in got], batched.stats)
    assert [(c.text, c.completion_tokens, c.finish_reason, c.prompt_tokens) for c in got] == [
        (c.text, c.completion_tokens, c.finish_reason, c.prompt_tokens) for c in expected]
    assert batched.stats["batched_requests"] == len(calls)
    assert batched.stats["largest_batch"] >= 3 and batched.stats["mixed_batches"] >= 1


def test_a_tampered_adapter_fails_only_its_own_requests(owner, base_model, make_version,
                                                        tmp_path):
    from tests.factories import stored_file_tamper

    good, bad = (AdapterRef.of(make_version(owner.tenant)) for _ in range(2))
    stored_file_tamper(f"{bad.storage_prefix}/adapter_model.safetensors")

    runtime = _runtime(tmp_path, max_batch=8, window=0.5)
    got = _together(runtime, [("Hello", good, 12), ("Hello", bad, 12), ("Hello", None, 12)])
    assert isinstance(got[1], AdapterIntegrityError)
    assert got[0].text == runtime.generate(messages=[{"role": "user", "content": "Hello"}],
                                           adapter=good, max_new_tokens=12).text
    assert got[2].completion_tokens > 0
    assert runtime.stats["integrity_errors"] == 1


def test_sampled_requests_are_not_batched(owner, base_model, tmp_path):
    runtime = _runtime(tmp_path, max_batch=8)
    completion = runtime.generate(messages=[{"role": "user", "content": "Hi"}], adapter=None,
                                  max_new_tokens=4, temperature=0.7)
    assert completion.completion_tokens > 0 and runtime.stats["batches"] == 0
    runtime.generate(messages=[{"role": "user", "content": "Hi"}], adapter=None,
                     max_new_tokens=4)
    assert runtime.stats["batches"] == 1


@pytest.mark.parametrize("regroup", [True, False])
def test_clients_answered_together_are_batched_together_again(settings, real_base_path,
                                                              tmp_path, monkeypatch, regroup):
    """Four clients, each sending its next request as soon as it has its answer; one of them
    starts before the others, so the first batch holds it alone and the other three wait through
    it. With the regroup wait the batcher waits, after that batch, for the client it answered to
    come back, and from then on all four are generated together; without it (`REGROUP_WINDOWS`
    0, the batcher before this change) the batches stay split (1, 3, 1, 3, ...), halving
    throughput."""
    from adapters import runtime as runtime_module

    if not regroup:
        monkeypatch.setattr(runtime_module, "REGROUP_WINDOWS", 0)
    settings.BASE_MODEL_PATH = str(real_base_path)
    settings.BASE_MODEL_HF_ID = ""
    runtime = _runtime(tmp_path, max_batch=4, window=0.01)
    prompt = [{"role": "user", "content": "Explain step by step how a bicycle works, describing "
                                          "each part and what it does."}]
    runtime.generate(messages=prompt, adapter=None, max_new_tokens=1)  # the base, loaded
    first_sent = threading.Event()

    def client(index: int) -> None:
        if index > 0:
            first_sent.wait()
            time.sleep(0.2)  # the first client's batch is running (24 tokens take longer)
        for _ in range(3):
            if index == 0:
                first_sent.set()
            runtime.generate(messages=prompt, adapter=None, max_new_tokens=24)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = runtime.stats
    print("regroup" if regroup else "no regroup", stats)
    assert stats["batched_requests"] == 1 + 12
    if regroup:
        # [A1], [A2 B1 C1 D1], [A3 B2 C2 D2], [B3 C3 D3]
        assert stats["regrouped"] >= 1 and stats["largest_batch"] == 4
        assert stats["batches"] == 1 + 4
    else:
        # [A1], [B1 C1 D1], [A2], [B2 C2 D2], [A3], [B3 C3 D3]
        assert stats["largest_batch"] == 3 and stats["batches"] == 1 + 6
