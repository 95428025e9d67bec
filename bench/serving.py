"""Serving: chat completions with a tenant's adapter vs the base model, cold vs warm adapter
loads, memory per resident adapter, and 20 tenants' adapters in rotation vs one.

Everything goes through `POST /v1/tenants/{t}/chat/completions` over HTTP to gunicorn with ONE
worker process (4 threads): the runtime (base model once + an LRU of PEFT adapters, one
generation at a time) lives per process, so one process makes its memory and its cache
behaviour measurable.

Base (`--base`): `real` (the default) is the product's default instruct base, SmolLM2-135M-
Instruct, from where the product's setup converts it (`bench.env.real_base_path`), served as
the product serves it (CPU fp32, its chat template, stop at its end-of-turn); `tiny` is the
2.9M-parameter offline toy (the quick smoke run's default: it only shows the harness runs).
Adapters have the shape a default job on that base trains: the base's recipe
(`BASE_MODEL_RECIPES`, `small_base` for SmolLM2: r 16, alpha 32, all linear layers) over the
seed's defaults. Their LoRA weights are random and scaled so small that the answers (and so the
number of generated tokens) stay the base model's: the comparison is of compute, not of answer
length. They are stored as real versions through the product's own path
(`adapters.services.adapter_version_create_from_job`: manifest, sha256, storage), so serving
verifies and loads them exactly as trained ones. Prompt: one user turn asking for a long answer,
`max_tokens` 64 (`--max-tokens`), temperature 0; the completion tokens of both sides are
reported.

1. Latency, adapter vs base alone: a tenant whose active adapter answers vs a tenant with no
   adapter, sequential requests, both warm. Goal: p50 ratio <= 1.15.
2. Cold vs warm: activate a version never loaded (`POST .../lora/vN/activate`), then the first
   request (fetch from storage, sha256 check, PEFT load) vs the warm requests after it.
3. Memory per resident adapter: the worker's RSS after the base model alone vs after 8 adapters
   (the default LRU size), divided by 8; and the adapter file size.
4. Throughput with 20 tenants' adapters in rotation vs one adapter (4 concurrent clients), at
   the default `ADAPTER_CACHE_SIZE` (32: all 20 stay resident after the memory step loaded them).
   Goal: >= 0.9. A rotation batch mixes 4 adapters (`adapters.lora_rows`), one adapter's batch
   has one. When the cache is smaller than the rotation (`ADAPTER_CACHE_SIZE=8 python -m
   bench.serving`), a round-robin misses the LRU on every request and the figure measures
   loading; on the toy base the same rotation is also run on a server whose cache holds all.
5. Batching: 4 concurrent clients over 4 tenants' resident adapters, on a server that generates
   one request at a time (`SERVING_MAX_BATCH=1`) vs one that batches requests arriving together
   (the default; PEFT's mixed-adapter batch), both started side by side, runs interleaved.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench import common, env
from bench.common import CannotRun, Comparison, Fact, Report
from bench.loadgen import run_load

TITLE = "6. Serving: adapter vs base latency, cold vs warm load, memory, 20-tenant rotation"
PROMPT = [{"role": "user", "content": "Explain step by step how a bicycle works, describing "
                                      "each part and what it does."}]
MAX_TOKENS = 64
TENANTS = 20
# Per base (full mode). A real-base request generating 64 tokens takes seconds to tens of
# seconds on 2 shared cores (the toy's a few ms), so on the real base: 2 sequential requests per
# run, rotation runs of a fixed 4 requests (4 clients) instead of a duration and 2 of them per
# side, and the requests that only load adapters or time a cold load ask for 1 token
# (`short_tokens`); no second server with a larger cache. The rotation runs are 16 requests
# (4 batches of 4) so that one run is more than one batch. About 15 minutes on 2 quiet cores.
SIZES = {
    "real": {"requests": 2, "seconds": None, "rotation_requests": 16, "rotation_runs": 5,
             "short_tokens": 1, "warmup": 0, "big_cache_run": False},
    "tiny": {"requests": 30, "seconds": 8.0, "rotation_requests": None, "rotation_runs": None,
             "short_tokens": None, "warmup": 1, "big_cache_run": True},
}


def configure(p) -> None:
    p.add_argument("--base", choices=("real", "tiny"), default=None,
                   help="SmolLM2-135M-Instruct (real; default) or the toy (tiny; quick default)")
    p.add_argument("--max-tokens", type=int, default=None, help="per request (64; quick 8)")
    p.add_argument("--requests", type=int, default=None,
                   help="sequential per run (real 6, tiny 30; quick 4)")
    p.add_argument("--seconds", type=float, default=None,
                   help="per rotation run (real 20, tiny 8; quick 2)")
    p.add_argument("--tenants", type=int, default=None, help="in rotation (20; quick 4)")


def adapter_shape() -> dict:
    """What a default SFT job on the served base trains: its recipe over the seed's defaults."""
    from django.conf import settings

    from training.parameters import training_params_defaults
    from training.services.recipes import base_recipe, recipe_defaults

    params = training_params_defaults(method="sft")
    params.update(recipe_defaults(recipe=base_recipe(base_name=settings.DEFAULT_BASE_MODEL,
                                                     method="sft"), method="sft"))
    return {"r": params["lora_r"], "alpha": params["lora_alpha"],
            "dropout": params["lora_dropout"], "target_modules": params["target_modules"]}


def make_results(base: Path, out: Path, count: int, shape: dict) -> list[Path]:
    """`count` trainer-like result folders (adapter/ + manifest.json), distinct weights each."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.trainer.manifest import adapter_files_digest, write_manifest

    model = AutoModelForCausalLM.from_pretrained(str(base))
    peft_model = get_peft_model(model, LoraConfig(r=shape["r"], lora_alpha=shape["alpha"],
                                                  lora_dropout=shape["dropout"],
                                                  target_modules=shape["target_modules"],
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
            "hyperparameters": {"lora": {"r": shape["r"], "alpha": shape["alpha"]}},
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
    import os

    which = args.base or ("tiny" if args.quick else "real")
    # The served base is the product's default one (DEFAULT_BASE_MODEL), at this folder.
    base = env.real_base_path() if which == "real" else env.tiny_base_path()
    os.environ["BASE_MODEL_PATH"] = str(base)
    env.configure()
    env.require_route("/v1/tenants/x/chat/completions", "chat completions")
    env.require_route("/v1/tenants/x/lora/v1/activate", "adapter activation")
    from django.conf import settings

    if Path(settings.BASE_MODEL_PATH) != base:
        raise CannotRun(f"BASE_MODEL_PATH is {settings.BASE_MODEL_PATH}, not {base}")
    sizes = SIZES[which]
    n_req = args.requests or (4 if args.quick else sizes["requests"])
    rotation_requests = sizes["rotation_requests"]
    seconds = args.seconds or (2.0 if args.quick or not rotation_requests else sizes["seconds"])
    if args.seconds:
        rotation_requests = None
    n_tenants = args.tenants or (4 if args.quick else TENANTS)
    max_tokens = args.max_tokens or (8 if args.quick else MAX_TOKENS)
    short_tokens = sizes["short_tokens"] or max_tokens
    runs = args.runs
    rotation_runs = min(runs, sizes["rotation_runs"] or runs)
    work = env.VAR_DIR / "serving"
    shape = adapter_shape()
    common.log(f"building adapters ({shape}) on {base}")
    results = make_results(base, work, n_tenants + runs + 1, shape)
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
    model = ("SmolLM2-135M-Instruct (CPU fp32)" if which == "real"
             else "tiny Llama, 2.9M parameters (CPU fp32)")
    targets = shape["target_modules"]
    report.inputs = {"model": model, "base_model": settings.DEFAULT_BASE_MODEL,
                     "adapter": f"r{shape['r']} a{shape['alpha']} "
                                f"{targets if isinstance(targets, str) else '+'.join(targets)}",
                     "max_tokens": max_tokens, "sequential_requests_per_run": n_req,
                     "rotation_tenants": n_tenants, "rotation_clients": 4,
                     **({"rotation_requests_per_run": rotation_requests} if rotation_requests
                        else {"rotation_seconds_per_run": seconds}),
                     "ADAPTER_CACHE_SIZE": cache_size, "gunicorn": "1 worker x 4 threads"}
    if short_tokens != max_tokens:
        report.inputs["max_tokens_of_load_and_cold_requests"] = short_tokens
    if rotation_runs != runs:
        report.inputs["rotation_runs_per_side"] = rotation_runs
    report.facts.append(Fact("adapter files (safetensors + config)", round(size / 1024, 1),
                             "KiB"))
    body_bytes = json.dumps({"messages": PROMPT, "max_tokens": max_tokens,
                             "temperature": 0}).encode()
    short_bytes = json.dumps({"messages": PROMPT, "max_tokens": short_tokens,
                              "temperature": 0}).encode()

    def chat(server, tenant, secret, payload: bytes = body_bytes) -> tuple[float, dict]:
        api = env.Api(server, tenant.slug, secret)
        started = time.perf_counter()
        _, data = api.call("POST", "chat/completions", raw_body=payload,
                           content_type="application/json", expect=(200,))
        return (time.perf_counter() - started) * 1000, data

    def sequential(server, tenant, secret) -> dict:
        api = env.Api(server, tenant.slug, secret)
        result = run_load(server.base_url, method="POST",
                          path_for=lambda i: api.path("chat/completions"),
                          body_for=lambda i: body_bytes, headers=api.headers, concurrency=1,
                          total_requests=n_req, warmup_requests=sizes["warmup"])
        if result.ok != n_req:
            raise CannotRun(f"chat failed: {result.summary()} {result.sample_bodies}")
        return result.summary()

    # Where each count-limited rotation run over many tenants starts: after the adapters the
    # memory step left resident, and on from where the last run stopped, so it keeps missing.
    walked = {"n": min(cache_size, n_tenants) if rotation_requests else 0}

    def rotation_load(server, tenants) -> dict:
        apis = [env.Api(server, t.slug, s) for t, s in tenants]
        start = walked["n"] if len(apis) > 1 else 0
        if rotation_requests and len(apis) > 1:
            walked["n"] += rotation_requests
        result = run_load(server.base_url, method="POST",
                          path_for=lambda i: apis[(start + i) % len(apis)].path(
                              "chat/completions"),
                          body_for=lambda i: body_bytes, headers={},
                          headers_for=lambda i: apis[(start + i) % len(apis)].headers,
                          concurrency=4, total_requests=rotation_requests,
                          duration_s=None if rotation_requests else seconds)
        if result.ok == 0 or result.ok != sum(result.statuses.values()):
            raise CannotRun(f"chat failed: {result.summary()} {result.sample_bodies}")
        return result.summary()

    with env.Server(workers=1, threads=4) as server:
        [worker_pid] = server.worker_pids() or [None]
        # 3. memory: base alone, then as many adapters as the LRU keeps.
        _, base_answer = chat(server, base_tenant, base_secret)
        rss_base = env.rss_mib(worker_pid) if worker_pid else None
        resident = min(cache_size, n_tenants)
        for tenant, secret in rotation[:resident][::-1]:  # the first tenant last: it answers
            _, adapter_answer = chat(server, tenant, secret, short_bytes)
        _, adapter_answer = chat(server, *rotation[0])
        rss_adapters = env.rss_mib(worker_pid) if worker_pid else None
        if rss_base is not None and rss_adapters is not None:
            report.facts.append(Fact(
                "worker RSS, base model loaded", round(rss_base, 1), "MiB"))
            report.facts.append(Fact(
                f"memory per resident adapter (RSS growth over {resident} adapters / "
                f"{resident})", round((rss_adapters - rss_base) / resident, 2), "MiB",
                "RSS is coarse (allocator arenas); compare with the file size above"))
        tokens = (base_answer["usage"]["completion_tokens"],
                  adapter_answer["usage"]["completion_tokens"])
        report.facts.append(Fact(
            "completion tokens, base vs adapter", f"{tokens[0]} vs {tokens[1]}",
            note=(f"of max_tokens {max_tokens}; " if max(tokens) < max_tokens else "")
            + ("equal: the latency comparison is of the same amount of generation"
               if tokens[0] == tokens[1] else "NOT equal: latencies compare unequal work")))
        if which == "real":
            report.facts.append(Fact("base answer (first 160 characters)", json.dumps(
                base_answer["choices"][0]["message"]["content"][:160])))

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
            cold_ms, answer = chat(server, cold_tenant, cold_secret, short_bytes)
            if answer.get("adapter_version") != label:
                raise CannotRun(f"activated {label} but {answer.get('adapter_version')} answered")
            warm = [chat(server, cold_tenant, cold_secret, short_bytes)[0] for _ in range(3)]
            cold_runs.append(cold_ms)
            warm_runs.append(common.median(warm))
            common.log(f"  cold {cold_ms:.1f} ms, warm {warm_runs[-1]:.1f} ms")
        report.comparisons.append(Comparison(
            metric="request latency" if short_tokens == max_tokens
            else f"request latency, {short_tokens} token", unit="ms",
            baseline_label="warm (adapter resident)",
            subject_label="first request after activation (cold load)",
            baseline_runs=warm_runs, subject_runs=cold_runs, higher_is_better=False))

        # 4. 20 tenants in rotation vs one adapter.
        rot = common.rotated(rotation_runs, {
            "baseline": lambda i: rotation_load(server, rotation[:1]),
            "subject": lambda i: rotation_load(server, rotation)}, log=common.log)
        report.comparisons.append(Comparison(
            metric="throughput", unit="requests/s", baseline_label="one tenant's adapter",
            subject_label=f"{n_tenants} tenants' adapters in rotation (cache {cache_size})",
            baseline_runs=[r["rps"] for r in rot["baseline"]],
            subject_runs=[r["rps"] for r in rot["subject"]], goal=">= 0.9"))
        report.comparisons.append(Comparison(
            metric="latency p50 under load", unit="ms", baseline_label="one tenant's adapter",
            subject_label=f"{n_tenants} tenants in rotation (cache {cache_size})",
            baseline_runs=[r["p50_ms"] for r in rot["baseline"]],
            subject_runs=[r["p50_ms"] for r in rot["subject"]], higher_is_better=False))

        # 5. batching: the same 4 clients over 4 resident adapters, on this server (batched,
        # the product's default) vs one started beside it that generates one request at a
        # time (SERVING_MAX_BATCH=1, as before batching).
        four = rotation[:4]
        with env.Server(workers=1, threads=4, env={"SERVING_MAX_BATCH": "1"}) as serial:
            for each in (serial, server):
                for tenant, secret in four:
                    chat(each, tenant, secret, short_bytes)  # load them once
            walked["n"] = 0
            bat = common.rotated(rotation_runs, {
                "baseline": lambda i: rotation_load(serial, four),
                "subject": lambda i: rotation_load(server, four)}, log=common.log)
        report.comparisons.append(Comparison(
            metric=f"throughput, 4 clients on {len(four)} tenants' adapters", unit="requests/s",
            baseline_label="one request at a time (SERVING_MAX_BATCH=1)",
            subject_label=f"batched (SERVING_MAX_BATCH={settings.SERVING_MAX_BATCH}, "
                          f"{settings.SERVING_BATCH_WINDOW_MS} ms window; mixed adapters)",
            baseline_runs=[r["rps"] for r in bat["baseline"]],
            subject_runs=[r["rps"] for r in bat["subject"]]))

    if not args.quick and n_tenants > cache_size and sizes["big_cache_run"]:
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
    return common.main("serving", TITLE, body, argv=argv, configure=configure, default_runs=4)


if __name__ == "__main__":
    raise SystemExit(main())
