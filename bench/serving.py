"""Serving: chat completions with a tenant's adapter vs the base model, cold vs warm adapter
loads, memory per resident adapter, and 20 tenants' adapters in rotation vs one.

Everything goes through `POST /v1/tenants/{t}/chat/completions` over HTTP to gunicorn with ONE
worker process (4 threads): the runtime (base model once + an LRU of PEFT adapters, one
generation at a time) lives per process, so one process makes its memory and its cache
behaviour measurable. Adapters: r 16, alpha 32, all linear layers (what a default job trains),
random LoRA weights scaled so small that the answers (and so the number of generated tokens)
stay the base model's: the comparison is of compute, not of answer length. They are stored as
real versions through the product's own path (`adapters.services.adapter_version_create_from_job`:
manifest, sha256, storage), so serving verifies and loads them exactly as trained ones.
Prompt: one user turn, `max_tokens` 32, temperature 0.

1. Latency, adapter vs base alone: a tenant whose active adapter answers vs a tenant with no
   adapter, sequential requests, both warm. Goal: p50 ratio <= 1.15.
2. Cold vs warm: activate a version never loaded (`POST .../lora/vN/activate`), then the first
   request (fetch from storage, sha256 check, PEFT load) vs the warm requests after it.
3. Memory per resident adapter: the worker's RSS after the base model alone vs after 8 adapters
   (the default LRU size), divided by 8; and the adapter file size.
4. Throughput with 20 tenants' adapters in rotation vs one adapter (4 concurrent clients). With
   the default `ADAPTER_CACHE_SIZE` (8) a round-robin over 20 misses the LRU on every request.
   Informational: the same rotation on a server with `ADAPTER_CACHE_SIZE=24`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench import common, env
from bench.common import CannotRun, Comparison, Fact, Report
from bench.loadgen import run_load

TITLE = "6. Serving: adapter vs base latency, cold vs warm load, memory, 20-tenant rotation"
PROMPT = [{"role": "user", "content": "What are the store hours on Saturday?"}]
MAX_TOKENS = 32
TENANTS = 20


def configure(p) -> None:
    p.add_argument("--requests", type=int, default=None, help="sequential per run (30; quick 4)")
    p.add_argument("--seconds", type=float, default=None, help="per rotation run (8; quick 2)")
    p.add_argument("--tenants", type=int, default=None, help="in rotation (20; quick 4)")


def make_results(base: Path, out: Path, count: int) -> list[Path]:
    """`count` trainer-like result folders (adapter/ + manifest.json), distinct weights each."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.trainer.manifest import adapter_files_digest, write_manifest

    model = AutoModelForCausalLM.from_pretrained(str(base))
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                  target_modules="all-linear",
                                                  task_type="CAUSAL_LM"))
    folders = []
    for seed in range(count):
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn_like(param) * 1e-5)
        folder = out / f"result-{seed}"
        (folder / "adapter").mkdir(parents=True, exist_ok=True)
        peft_model.save_pretrained(str(folder / "adapter"), safe_serialization=True)
        for extra in (folder / "adapter").iterdir():
            if extra.suffix not in (".safetensors", ".json"):
                extra.unlink()
        write_manifest(folder / "manifest.json", {
            "format": "synapsex-adapter-manifest/1", "job_id": f"bench-{seed}", "method": "sft",
            "adapter": {"dir": "adapter", "files": adapter_files_digest(folder / "adapter")},
            "base_model": {"path": str(base)}, "metrics": {"train_loss": 0.1, "eval_loss": 0.5},
            "hyperparameters": {"lora": {"r": 16, "alpha": 32}},
            "data": {"snapshot_sha256": "ab" * 32},
        })
        folders.append(folder)
    return folders


def add_version(tenant, result: Path, base: Path):
    from adapters.services import adapter_version_create_from_job
    from training.models import TrainingJob

    job = TrainingJob.objects.create(tenant=tenant, method="sft", base_model=str(base),
                                     status=TrainingJob.COMPLETED, training_samples=100)
    return adapter_version_create_from_job(job=job, result_dir=result)


def body(args, report: Report) -> None:
    env.configure()
    env.require_route("/v1/tenants/x/chat/completions", "chat completions")
    env.require_route("/v1/tenants/x/lora/v1/activate", "adapter activation")
    from django.conf import settings

    n_req = args.requests or (4 if args.quick else 30)
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    n_tenants = args.tenants or (4 if args.quick else TENANTS)
    runs = args.runs
    base = env.tiny_base_path()
    work = env.VAR_DIR / "serving"
    common.log("building adapters")
    results = make_results(base, work, n_tenants + runs + 1)
    size = sum(p.stat().st_size for p in (results[0] / "adapter").iterdir())

    base_tenant, base_secret = env.tenant_make("bench-serve-base")
    rotation = []
    for k in range(n_tenants):
        tenant, secret = env.tenant_make(f"bench-serve-{k}")
        version = add_version(tenant, results[k], base)
        if not version.is_active:
            raise CannotRun("the first version of a tenant was not activated")
        rotation.append((tenant, secret))
    cold_tenant, cold_secret = env.tenant_make("bench-serve-cold")
    for k in range(runs + 1):
        add_version(cold_tenant, results[n_tenants + k], base)
    cache_size = int(settings.ADAPTER_CACHE_SIZE)
    report.inputs = {"model": "tiny Llama (CPU fp32)", "adapter": "r16 a32 all-linear",
                     "max_tokens": MAX_TOKENS, "sequential_requests_per_run": n_req,
                     "rotation_tenants": n_tenants, "rotation_clients": 4,
                     "rotation_seconds_per_run": seconds, "ADAPTER_CACHE_SIZE": cache_size,
                     "gunicorn": "1 worker x 4 threads"}
    report.facts.append(Fact("adapter files (safetensors + config)", round(size / 1024, 1),
                             "KiB"))
    body_bytes = json.dumps({"messages": PROMPT, "max_tokens": MAX_TOKENS,
                             "temperature": 0}).encode()

    def chat(server, tenant, secret) -> tuple[float, dict]:
        api = env.Api(server, tenant.slug, secret)
        started = time.perf_counter()
        _, data = api.call("POST", "chat/completions", raw_body=body_bytes,
                           content_type="application/json", expect=(200,))
        return (time.perf_counter() - started) * 1000, data

    def sequential(server, tenant, secret) -> dict:
        api = env.Api(server, tenant.slug, secret)
        result = run_load(server.base_url, method="POST",
                          path_for=lambda i: api.path("chat/completions"),
                          body_for=lambda i: body_bytes, headers=api.headers, concurrency=1,
                          total_requests=n_req, warmup_requests=1)
        if result.ok != n_req:
            raise CannotRun(f"chat failed: {result.summary()} {result.sample_bodies}")
        return result.summary()

    def rotation_load(server, tenants) -> dict:
        apis = [env.Api(server, t.slug, s) for t, s in tenants]
        result = run_load(server.base_url, method="POST",
                          path_for=lambda i: apis[i % len(apis)].path("chat/completions"),
                          body_for=lambda i: body_bytes, headers={},
                          headers_for=lambda i: apis[i % len(apis)].headers, concurrency=4,
                          duration_s=seconds)
        if result.ok == 0 or result.ok != sum(result.statuses.values()):
            raise CannotRun(f"chat failed: {result.summary()} {result.sample_bodies}")
        return result.summary()

    with env.Server(workers=1, threads=4) as server:
        [worker_pid] = server.worker_pids() or [None]
        # 3. memory: base alone, then as many adapters as the LRU keeps.
        _, base_answer = chat(server, base_tenant, base_secret)
        rss_base = env.rss_mib(worker_pid) if worker_pid else None
        resident = min(cache_size, n_tenants)
        for tenant, secret in rotation[:resident]:
            _, adapter_answer = chat(server, tenant, secret)
        rss_adapters = env.rss_mib(worker_pid) if worker_pid else None
        if rss_base is not None and rss_adapters is not None:
            report.facts.append(Fact(
                "worker RSS, base model loaded", round(rss_base, 1), "MiB"))
            report.facts.append(Fact(
                f"memory per resident adapter (RSS growth over {resident} adapters / "
                f"{resident})", round((rss_adapters - rss_base) / resident, 2), "MiB",
                "RSS is coarse (allocator arenas); compare with the file size above"))
        report.facts.append(Fact(
            "completion tokens, base vs adapter", f"{base_answer['usage']['completion_tokens']}"
            f" vs {adapter_answer['usage']['completion_tokens']}",
            note="equal: the latency comparison is of the same amount of generation"))

        # 1. latency with an adapter vs the base model alone (both warm).
        t0, s0 = rotation[0]
        lat = common.rotated(runs, {
            "baseline": lambda i: sequential(server, base_tenant, base_secret),
            "subject": lambda i: sequential(server, t0, s0)}, log=common.log)
        for metric, key, goal in (("latency p50", "p50_ms", "<= 1.15"),
                                  ("latency p99", "p99_ms", None)):
            report.comparisons.append(Comparison(
                metric=metric, unit="ms", baseline_label="base model alone (no adapter)",
                subject_label="tenant's active adapter",
                baseline_runs=[r[key] for r in lat["baseline"]],
                subject_runs=[r[key] for r in lat["subject"]], goal=goal,
                higher_is_better=False))

        # 2. cold (first request after activating a never-loaded version) vs warm.
        cold_runs, warm_runs = [], []
        cold_api = env.Api(server, cold_tenant.slug, cold_secret)
        for i in range(runs):
            label = f"v{i + 2}"
            cold_api.call("POST", f"lora/{label}/activate", {}, expect=(200,))
            cold_ms, answer = chat(server, cold_tenant, cold_secret)
            if answer.get("adapter_version") != label:
                raise CannotRun(f"activated {label} but {answer.get('adapter_version')} answered")
            warm = [chat(server, cold_tenant, cold_secret)[0] for _ in range(3)]
            cold_runs.append(cold_ms)
            warm_runs.append(common.median(warm))
            common.log(f"  cold {cold_ms:.1f} ms, warm {warm_runs[-1]:.1f} ms")
        report.comparisons.append(Comparison(
            metric="request latency", unit="ms", baseline_label="warm (adapter resident)",
            subject_label="first request after activation (cold load)",
            baseline_runs=warm_runs, subject_runs=cold_runs, higher_is_better=False))

        # 4. 20 tenants in rotation vs one adapter.
        rot = common.rotated(runs, {
            "baseline": lambda i: rotation_load(server, rotation[:1]),
            "subject": lambda i: rotation_load(server, rotation)}, log=common.log)
        report.comparisons.append(Comparison(
            metric="throughput", unit="requests/s", baseline_label="one tenant's adapter",
            subject_label=f"{n_tenants} tenants' adapters in rotation (cache {cache_size})",
            baseline_runs=[r["rps"] for r in rot["baseline"]],
            subject_runs=[r["rps"] for r in rot["subject"]]))
        report.comparisons.append(Comparison(
            metric="latency p50 under load", unit="ms", baseline_label="one tenant's adapter",
            subject_label=f"{n_tenants} tenants in rotation (cache {cache_size})",
            baseline_runs=[r["p50_ms"] for r in rot["baseline"]],
            subject_runs=[r["p50_ms"] for r in rot["subject"]], higher_is_better=False))

    if not args.quick and n_tenants > cache_size:
        big = n_tenants + 4
        with env.Server(workers=1, threads=4, env={"ADAPTER_CACHE_SIZE": str(big)}) as server:
            for tenant, secret in rotation:
                chat(server, tenant, secret)  # load all once
            both = common.rotated(max(2, runs - 1), {
                "baseline": lambda i: rotation_load(server, rotation[:1]),
                "subject": lambda i: rotation_load(server, rotation)}, log=common.log)
        report.comparisons.append(Comparison(
            metric="throughput", unit="requests/s", baseline_label="one tenant's adapter",
            subject_label=f"{n_tenants} tenants in rotation, ADAPTER_CACHE_SIZE={big}",
            baseline_runs=[r["rps"] for r in both["baseline"]],
            subject_runs=[r["rps"] for r in both["subject"]],
            note="informational: the same rotation when every adapter stays resident"))


def main(argv=None) -> int:
    return common.main("serving", TITLE, body, argv=argv, configure=configure, default_runs=5)


if __name__ == "__main__":
    raise SystemExit(main())
