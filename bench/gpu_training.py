"""GPU training: LoRA SFT of a ~0.56B Llama-shaped model in bf16 through the platform's trainer:
tokens per second and MFU against the card's MEASURED bf16 matrix rate.

Run from the repository root on a machine with one NVIDIA GPU, in one call:

    python -m bench.gpu_training            # or: python bench/gpu_training.py

Needs torch (CUDA), transformers, peft, accelerate, and trl + datasets (the platform trainer is
built on TRL). Without network: when trl/datasets are not importable it installs them from a
wheel folder if one is there (`$BENCH_WHEELS`, `./.whl`, `./wheels`, `./shared/wheels`),
`pip install --no-index --find-links`. Without CUDA it prints `skipped: no GPU` and exits 0.
Writes the table to stdout, the result to bench/results/gpu_training.json and, when `$OUT` is
set, to `$OUT/gpu_bench.json`. No model hub: the model is built from a config with random
weights and the platform's offline tokenizer (`training.trainer.tiny_model.build_tokenizer`,
vocab 1024; the model keeps a 32,000-row vocabulary so its lm_head costs what a real one does).

Steps:
1. Peak: bf16 `A @ B` with A, B 8192 x 8192 on the card, 2 * 8192^3 FLOPs per product, CUDA
   events around 50 products after a warm-up, best of 5 repetitions: the card's measured
   dense bf16 matrix rate (what MFU is divided by; below the datasheet figure).
2. Model: LlamaConfig(hidden 1280, 24 layers, intermediate 3456, 10 heads of 128, vocab 32,000,
   untied) = ~0.56B parameters, random init, saved in fp32 (the platform loads fp32 weights and
   trains with bf16 autocast, `bf16=True` on a GPU).
3. Data: synthetic conversations, long-tailed lengths from ~30 to 2,048 tokens (max_length).
4. Platform: `python -m training.trainer --config job.json` (padding-free batches, LoRA r 16,
   alpha 32, all linear layers, batch 16), timed from its events.jsonl, the first `--warmup`
   steps excluded. Baseline for the same data and settings: the bare TRL script
   (`bench/trl_baseline.py --bf16`, padded batches).

MFU formula (documented in the output too). Per real (non-padding) token:
    model FLOPs = 6 * N + 12 * L * d * s_bar
N = parameters of the base model except the input embedding (a lookup, not a matmul; lm_head
counted), L layers, d hidden size, s_bar the token-weighted mean sequence length (sum s^2 /
sum s) for the attention scores and values (PaLM's convention, no causal halving). 6N is the
standard forward (2N) + backward (4N) count. With frozen base weights LoRA skips the weight
gradients of the base (2N), so the FLOPs actually executed are about 4 * N + 12 * L * d * s_bar
(+ 6 * N_lora, negligible); both are reported: MFU (6N convention, comparable to published MFU)
and the utilisation of the executed FLOPs (4N).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` and `training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.common import REPO, CannotRun, Comparison, Fact, Report, Skip  # noqa: E402
from training.trainer.events import read_events  # noqa: E402

TITLE = "2. GPU training: LoRA SFT of a ~0.56B model in bf16, tokens/s and MFU"
SHAPE = {"hidden_size": 1280, "num_hidden_layers": 24, "intermediate_size": 3456,
         "num_attention_heads": 10, "num_key_value_heads": 10, "vocab_size": 32000,
         "max_position_embeddings": 4096, "tie_word_embeddings": False}


def configure(p) -> None:
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (60; quick 6)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    p.add_argument("--no-trl", action="store_true", help="skip the bare TRL side")


def ensure_trl() -> None:
    try:
        import datasets  # noqa: F401
        import trl  # noqa: F401
        return
    except ImportError:
        pass
    candidates = [os.environ.get("BENCH_WHEELS"), REPO / ".whl", REPO / "wheels",
                  REPO / "shared" / "wheels"]
    for folder in candidates:
        if folder and Path(folder).is_dir() and any(Path(folder).glob("*.whl")):
            common.log(f"installing trl and datasets from {folder}")
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                            "--find-links", str(folder), "trl", "datasets"], check=False)
            break
    try:
        import datasets  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:
        raise CannotRun(f"trl/datasets not importable ({exc}); the platform trainer needs them: "
                        "pip install trl datasets, or put their wheels in $BENCH_WHEELS") from exc


def measure_peak(size: int = 8192, iters: int = 50, repeats: int = 5) -> float:
    """Dense bf16 matmul rate of this card, FLOP/s (best of `repeats`)."""
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            a @ b
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1000
        best = max(best, 2 * size**3 * iters / seconds)
    del a, b
    torch.cuda.empty_cache()
    return best


def build_model(out: Path) -> tuple[int, int]:
    """Random ~0.56B Llama + the offline tokenizer, saved to `out`; (params, embedding params)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.trainer.tiny_model import CORPUS, build_tokenizer

    tokenizer = build_tokenizer(CORPUS.read_text(encoding="utf-8").splitlines())
    config = LlamaConfig(pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, **SHAPE)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    model.to("cpu").save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return total, embedding


def make_data(path: Path, count: int, max_length: int, tokenizer) -> list[int]:
    """Conversations whose token lengths are long-tailed up to max_length; returns lengths."""
    import random

    from bench.data import long_tail, sentence

    rng = random.Random(5)
    lengths = []
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(count):
            target = long_tail(rng, 30, max_length)
            question = sentence(rng, long_tail(rng, 4, 40))
            answer_words = max(4, int(target / 1.6))
            messages = [{"role": "user", "content": question},
                        {"role": "assistant", "content": sentence(rng, answer_words)}]
            n = len(tokenizer.apply_chat_template(messages, return_dict=True)["input_ids"])
            while n > max_length and answer_words > 4:  # keep examples whole, under the cap
                answer_words = int(answer_words * 0.9)
                messages[1]["content"] = sentence(rng, answer_words)
                n = len(tokenizer.apply_chat_template(messages, return_dict=True)["input_ids"])
            lengths.append(min(n, max_length))
            handle.write(json.dumps({"messages": messages}) + "\n")
    return lengths


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run_platform(work: Path, model: Path, train: Path, args) -> dict:
    out = work / "out"
    job = {"job_id": "gpu-bench", "method": "sft", "base_model": {"path": str(model)},
           "data": {"train": str(train)}, "output_dir": str(out),
           "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
           "train": {"epochs": 1, "learning_rate": 2e-4, "batch_size": args.batch_size,
                     "warmup_ratio": 0.1, "weight_decay": 0.01, "max_length": args.max_length,
                     "seed": 42, "save_every": 100000, "log_every": 1,
                     "early_stopping_patience": None},
           "padding_free": True}
    work.mkdir(parents=True, exist_ok=True)
    (work / "job.json").write_text(json.dumps(job, indent=2))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "training.trainer", "--config",
                           str(work / "job.json")], cwd=REPO, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise CannotRun(f"platform trainer exited {proc.returncode}: {proc.stderr[-3000:]}")
    events = read_events(out / "events.jsonl")
    steps = [e for e in events if e["type"] == "step"]
    completed = next(e for e in events if e["type"] == "completed")
    first = steps[min(args.warmup, len(steps) - 2)]
    last = steps[-1]
    seconds = _ts(last["ts"]) - _ts(first["ts"])
    peak_gpu = max((e.get("memory") or {}).get("gpu_memory_used_gb") or 0 for e in steps)
    return {"tokens_per_s": (last["tokens_processed"] - first["tokens_processed"]) / seconds,
            "real_fraction": completed.get("real_token_fraction"),
            "steps": completed.get("steps"), "timed_steps": last["step"] - first["step"],
            "gpu_memory_reserved_gb": peak_gpu, "total_s": time.perf_counter() - started}


def run_trl(work: Path, model: Path, train: Path, args) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "trl_baseline.py"), "--model", str(model),
         "--data", str(train), "--out", str(work), "--batch-size", str(args.batch_size),
         "--max-length", str(args.max_length), "--bf16"],
        cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CannotRun(f"TRL baseline exited {proc.returncode}: {proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    stamps, batches = result["steps"], result["batches"]
    w = min(args.warmup, len(stamps) - 2)
    seconds = stamps[-1][1] - stamps[w][1]
    tokens = sum(real for real, _ in batches[w + 1:len(stamps)])
    real = sum(r for r, _ in batches)
    computed = sum(c for _, c in batches)
    return {"tokens_per_s": tokens / seconds, "real_fraction": real / computed,
            "steps": len(stamps)}


def body(args, report: Report) -> None:
    try:
        import torch
    except ImportError as exc:
        raise Skip("no GPU (torch not installed)") from exc
    if not torch.cuda.is_available():
        raise Skip("no GPU")
    ensure_trl()
    steps = args.steps or (6 if args.quick else 60)
    work = Path(os.environ.get("BENCH_GPU_WORKDIR", REPO / "var" / "bench" / "gpu"))
    work.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(0)
    common.log(f"measuring the bf16 matmul rate on {device}")
    peak = measure_peak()
    common.log(f"peak {peak / 1e12:.1f} TFLOP/s; building the model")
    model_dir = work / "model"
    total, embedding = build_model(model_dir)
    n = total - embedding
    from training.trainer.modeling import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    train = work / "train.jsonl"
    lengths = make_data(train, steps * args.batch_size, args.max_length, tokenizer)
    s_bar = sum(s * s for s in lengths) / sum(lengths)
    layers, hidden = SHAPE["num_hidden_layers"], SHAPE["hidden_size"]
    attention = 12 * layers * hidden * s_bar
    flops_6n = 6 * n + attention
    flops_4n = 4 * n + attention
    report.inputs = {
        "gpu": device, "model": f"Llama {SHAPE}", "parameters": total,
        "N (excl. input embedding)": n, "examples": len(lengths), "batch_size": args.batch_size,
        "steps": steps, "timed_from_step": args.warmup + 1, "max_length": args.max_length,
        "tokens/example min/median/max": f"{min(lengths)}/{sorted(lengths)[len(lengths) // 2]}"
                                         f"/{max(lengths)}",
        "s_bar": round(s_bar, 1), "lora": "r16 a32 all-linear", "precision": "bf16 autocast",
        "torch": torch.__version__,
    }
    common.log("platform trainer run")
    platform = run_platform(work / "platform", model_dir, train, args)
    trl_result = None
    if not args.no_trl:
        common.log("bare TRL run")
        try:
            trl_result = run_trl(work / "trl", model_dir, train, args)
        except CannotRun as exc:
            report.notes.append(f"bare TRL side could not run: {exc}")
    achieved_6n = platform["tokens_per_s"] * flops_6n
    achieved_4n = platform["tokens_per_s"] * flops_4n
    report.comparisons.append(Comparison(
        metric="FLOP rate (MFU, 6N convention)", unit="TFLOP/s",
        baseline_label="measured bf16 matmul 8192^3", subject_label="platform LoRA SFT",
        baseline_runs=[peak / 1e12], subject_runs=[achieved_6n / 1e12]))
    report.comparisons.append(Comparison(
        metric="FLOP rate (executed FLOPs, 4N)", unit="TFLOP/s",
        baseline_label="measured bf16 matmul 8192^3", subject_label="platform LoRA SFT",
        baseline_runs=[peak / 1e12], subject_runs=[achieved_4n / 1e12]))
    if trl_result:
        report.comparisons.append(Comparison(
            metric="real tokens/s", unit="tokens/s", baseline_label="bare TRL (padded)",
            subject_label="platform trainer (padding-free)",
            baseline_runs=[trl_result["tokens_per_s"]], subject_runs=[platform["tokens_per_s"]],
            goal=">= 0.95"))
        report.facts.append(Fact("real / computed tokens, bare TRL",
                                 round(trl_result["real_fraction"], 3)))
    report.facts += [
        Fact("measured bf16 matmul peak", round(peak / 1e12, 1), "TFLOP/s"),
        Fact("platform real tokens/s", round(platform["tokens_per_s"], 0), "tokens/s",
             f"over {platform['timed_steps']} steps"),
        Fact("MFU (6N + attention) / measured peak", round(achieved_6n / peak, 4)),
        Fact("executed-FLOP utilisation (4N + attention) / measured peak",
             round(achieved_4n / peak, 4)),
        Fact("real / computed tokens, platform", platform["real_fraction"]),
        Fact("GPU memory reserved (max over steps)", platform["gpu_memory_reserved_gb"], "GB"),
        Fact("platform process wall time", round(platform["total_s"], 1), "s"),
    ]
    report.notes.append("MFU = real tokens/s x (6N + 12 L d s_bar) / measured bf16 matmul rate; "
                        "see the module docstring for N and s_bar.")


def main(argv=None) -> int:
    code = common.main("gpu_training", TITLE, body, argv=argv, configure=configure,
                       default_runs=1)
    out = os.environ.get("OUT")
    if out:
        suffix = "-quick" if "--quick" in (argv or sys.argv[1:]) else ""
        saved = common.RESULTS_DIR / f"gpu_training{suffix}.json"
        if saved.exists():
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / "gpu_bench.json").write_text(saved.read_text())
    return code


if __name__ == "__main__":
    raise SystemExit(main())
