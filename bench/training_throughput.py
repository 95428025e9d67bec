"""Training throughput: the platform's trainer vs a bare TRL script, on data of mixed lengths.

Same tiny base model (the platform's offline Llama, `training.trainer.tiny_model`), same data
(synthetic conversations, long-tailed lengths: most short, a few near max_length), same LoRA
settings (r 16, alpha 32, dropout 0.05, all linear layers), same batch size, learning rate,
warm-up, weight decay, max_length and number of steps (one epoch over the same examples).

- Baseline: `bench/trl_baseline.py`, the TRL docs' script (padded batches, TRL defaults; see its
  docstring for the two deviations, both in the baseline's favour). Goal: platform / TRL's
  default > 1.3 on this mixed-length data.
- Baseline at its best: the same script with TRL's own `padding_free=True` (no padding computed,
  as the platform's default). Goal: platform / TRL at its best >= 1.0.
  TRL's docs pair padding-free batches with FlashAttention; a CPU has none, so TRL's best there
  is transformers' SDPA, which computes each padding-free row under a dense block-diagonal mask.
- Subject: `python -m training.trainer --config job.json`, the platform's trainer exactly as a
  job runs it (padding-free batches by default, each example's own causal attention through
  `training/trainer/attention.py`'s packed_sdpa where FlashAttention is absent), timed from its
  events.jsonl.
- Decomposition (no goal): TRL at its best on the platform's packed_sdpa, so that the lead that
  comes from the attention path and what the rest of the trainer adds or costs are told apart.
- Also: the platform with `padding_free: false` (the same padded batches as TRL), which isolates
  the trainer's own overhead from the gain of not computing padding.

Figure: real (non-padding) tokens per second over the steady state: from the end of step 1 to
the end of the last step (step 1 pays one-off costs on both sides). Also the fraction of
computed tokens that are real.
Each run is a fresh process; setup (imports, model load) is reported separately.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from bench import common, data, env
from bench.common import REPO, CannotRun, Comparison, Fact, Report, Skip
from training.trainer.events import read_events

TITLE = "1. Training throughput: platform trainer vs bare TRL script (tiny model, CPU)"


def configure(p) -> None:
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (40; quick 4)")
    p.add_argument("--batch-size", type=int, default=None, help="(8; quick 4)")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--no-padded", action="store_true", help="skip the padding_free=false side")
    p.add_argument("--no-trl-best", action="store_true",
                   help="skip the TRL padding_free=True side")
    p.add_argument("--no-trl-packed", action="store_true",
                   help="skip the side of TRL padding-free on the platform's packed_sdpa")
    p.add_argument("--no-real-base", action="store_true",
                   help="skip the attention comparison on the real base (skipped with --quick)")


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run_platform(workdir: Path, model: Path, train: Path, *, steps_batch: int, lr: float,
                 max_length: int, padding_free: bool) -> dict:
    out = workdir / "out"
    job = {
        "job_id": f"bench-{workdir.name}", "method": "sft",
        "base_model": {"path": str(model)}, "data": {"train": str(train)},
        "output_dir": str(out),
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
        "train": {"epochs": 1, "learning_rate": lr, "batch_size": steps_batch,
                  "warmup_ratio": 0.1, "weight_decay": 0.01, "max_length": max_length,
                  "seed": 42, "save_every": 100000, "log_every": 1,
                  "early_stopping_patience": None},
        "padding_free": padding_free,
    }
    # The trainer appends to events.jsonl: a folder left by an earlier bench run would mix its
    # events into this one's timing.
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    (workdir / "job.json").write_text(json.dumps(job, indent=2))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "training.trainer", "--config",
                           str(workdir / "job.json")], cwd=REPO, capture_output=True, text=True,
                          check=False)
    total_s = time.perf_counter() - started
    if proc.returncode != 0:
        raise CannotRun(f"platform trainer exited {proc.returncode}: {proc.stderr[-1500:]}")
    events = read_events(out / "events.jsonl")
    step_events = [e for e in events if e["type"] == "step"]
    completed = next(e for e in events if e["type"] == "completed")
    first, last = step_events[0], step_events[-1]
    if last["step"] - first["step"] < 1:
        raise CannotRun("too few steps to time; raise --steps")
    seconds = _ts(last["ts"]) - _ts(first["ts"])
    return {
        "tokens_per_s": (last["tokens_processed"] - first["tokens_processed"]) / seconds,
        "real_fraction": completed.get("real_token_fraction"),
        "steps": completed.get("steps"),
        "real_tokens": completed.get("tokens_processed"),
        "computed_tokens": completed.get("computed_tokens"),
        "total_s": total_s,
    }


def run_trl(workdir: Path, model: Path, train: Path, *, batch: int, lr: float,
            max_length: int, padding_free: bool = False, attention: str | None = None) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "trl_baseline.py"), "--model", str(model),
         "--data", str(train), "--out", str(workdir), "--batch-size", str(batch),
         "--learning-rate", str(lr), "--max-length", str(max_length)]
        + (["--padding-free"] if padding_free else [])
        + (["--attention", attention] if attention else []),
        cwd=REPO, capture_output=True, text=True, check=False)
    total_s = time.perf_counter() - started
    if proc.returncode != 0:
        raise CannotRun(f"TRL baseline exited {proc.returncode}: {proc.stderr[-1500:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    stamps, batches = result["steps"], result["batches"]
    seconds = stamps[-1][1] - stamps[0][1]
    tokens = sum(real for real, _ in batches[1:len(stamps)])
    real = sum(r for r, _ in batches)
    computed = sum(c for _, c in batches)
    return {"tokens_per_s": tokens / seconds, "real_fraction": real / computed,
            "steps": len(stamps), "real_tokens": real, "computed_tokens": computed,
            "setup_s": result["setup_s"], "total_s": total_s}


def real_base_attention(records: list[dict], *, runs: int, batch: int, max_length: int
                        ) -> Comparison:
    """The attention path alone, on the real base: SmolLM2-135M-Instruct with a LoRA r16 adapter
    on all linear layers (its grouped-query attention, 30 layers), forward and backward of
    padding-free rows of `batch` conversations under transformers' SDPA (a dense block-diagonal
    mask, what TRL's padding-free batches get on a CPU) and under the platform's packed_sdpa.
    Same model object and rows on both sides; only the attention implementation changes."""
    import torch
    from peft import LoraConfig, get_peft_model

    from training.trainer.attention import register
    from training.trainer.modeling import load_base_model, load_tokenizer

    path = env.real_base_path()
    tokenizer = load_tokenizer(path)
    model = get_peft_model(load_base_model(path), LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
        task_type="CAUSAL_LM")).train()
    register()
    rows = []
    for start in range(0, 4 * batch, batch):
        examples = [tokenizer.apply_chat_template(r["messages"], return_dict=True)["input_ids"]
                    [:max_length] for r in records[start:start + batch]]
        ids = torch.tensor([[t for e in examples for t in e]])
        positions = torch.cat([torch.arange(len(e)) for e in examples])[None]
        rows.append((ids, positions))
    tokens = sum(int(ids.numel()) for ids, _ in rows)

    def side(implementation: str):
        def run(_i: int) -> dict:
            model.get_base_model().set_attn_implementation(implementation)
            started = time.perf_counter()
            for ids, positions in rows:
                out = model(input_ids=ids, position_ids=positions, labels=ids, use_cache=False)
                out.loss.backward()
            model.zero_grad(set_to_none=True)
            return {"tokens_per_s": tokens / (time.perf_counter() - started)}
        return run

    side("sdpa")(0)  # warm-up, not counted
    results = common.rotated(runs, {"sdpa": side("sdpa"), "packed": side("packed_sdpa")},
                             log=common.log)
    return Comparison(
        metric="real base LoRA forward+backward tokens/s", unit="tokens/s",
        baseline_label="SmolLM2-135M, SDPA with its dense block-diagonal mask",
        subject_label="SmolLM2-135M, the platform's packed_sdpa",
        baseline_runs=[r["tokens_per_s"] for r in results["sdpa"]],
        subject_runs=[r["tokens_per_s"] for r in results["packed"]],
        note=f"4 padding-free rows of {batch} conversations, {tokens:,} tokens a run")


def body(args, report: Report) -> None:
    try:
        import trl  # noqa: F401

        from training.trainer import run  # noqa: F401
    except ImportError as exc:
        raise Skip(f"platform trainer or TRL missing: {exc}") from exc
    steps = args.steps or (4 if args.quick else 40)
    batch = args.batch_size or (4 if args.quick else 8)
    lr = 2e-4
    model = env.tiny_base_path()
    work = env.VAR_DIR / "training_throughput"
    work.mkdir(parents=True, exist_ok=True)
    records = data.conversations(steps * batch, seed=11, pii_rate=0.0, duplicate_rate=0.0,
                                 max_words=150 if not args.quick else 40)
    train = work / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in records))

    from training.trainer.modeling import load_tokenizer

    tokenizer = load_tokenizer(model)
    lengths = sorted(min(len(tokenizer.apply_chat_template(
        r["messages"], return_dict=True)["input_ids"]), args.max_length) for r in records)
    report.inputs = {
        "model": "tiny Llama (platform's offline base)", "examples": len(records),
        "batch_size": batch, "steps": steps, "max_length": args.max_length,
        "tokens_per_example_min/median/max": f"{lengths[0]}/{lengths[len(lengths) // 2]}/"
                                             f"{lengths[-1]}",
        "lora": "r16 a32 d0.05 all-linear", "learning_rate": lr, "device": "CPU fp32",
    }

    def trl_side(i: int) -> dict:
        return run_trl(work / f"trl-{i}", model, train, batch=batch, lr=lr,
                       max_length=args.max_length)

    def trl_best_side(i: int) -> dict:
        return run_trl(work / f"trl-best-{i}", model, train, batch=batch, lr=lr,
                       max_length=args.max_length, padding_free=True)

    def trl_packed_side(i: int) -> dict:
        return run_trl(work / f"trl-packed-{i}", model, train, batch=batch, lr=lr,
                       max_length=args.max_length, padding_free=True, attention="packed_sdpa")

    def platform_side(i: int) -> dict:
        return run_platform(work / f"platform-{i}", model, train, steps_batch=batch, lr=lr,
                            max_length=args.max_length, padding_free=True)

    def padded_side(i: int) -> dict:
        return run_platform(work / f"padded-{i}", model, train, steps_batch=batch, lr=lr,
                            max_length=args.max_length, padding_free=False)

    # First, so that a real base that cannot load stops the run before the long sides.
    real_base = None if args.quick or args.no_real_base else real_base_attention(
        records, runs=args.runs, batch=batch, max_length=args.max_length)
    sides = {"baseline": trl_side, "subject": platform_side}
    if not args.no_trl_best:
        sides["trl_best"] = trl_best_side
    if not args.no_trl_packed:
        sides["trl_packed"] = trl_packed_side
    if not args.no_padded:
        sides["padded"] = padded_side
    results = common.rotated(args.runs, sides, log=common.log)
    base = results["baseline"]
    platform = "platform trainer (padding-free, default)"
    # (baseline side, its label, subject side, its label, goal, note), in the table's order
    rates = [
        ("trl_best", "bare TRL at its best (TRL's padding_free=True)", "subject", platform,
         ">= 1.0", ""),
        ("baseline", "bare TRL (padded batches)", "subject", platform, "> 1.3", ""),
        ("trl_packed", "bare TRL padding-free on the platform's packed_sdpa attention",
         "subject", platform, None,
         "same attention on both sides: what the rest of the trainer adds or costs"),
        ("baseline", "bare TRL (padded batches)", "padded",
         "platform trainer, padding_free=false", ">= 0.95",
         "same batching as TRL: the trainer's own overhead"),
    ]
    for baseline, baseline_label, subject, subject_label, goal, note in rates:
        if baseline in results and subject in results:
            report.comparisons.append(Comparison(
                metric="real tokens/s", unit="tokens/s", baseline_label=baseline_label,
                subject_label=subject_label,
                baseline_runs=[r["tokens_per_s"] for r in results[baseline]],
                subject_runs=[r["tokens_per_s"] for r in results[subject]], goal=goal,
                note=note))
    if real_base is not None:
        report.comparisons.append(real_base)
    report.comparisons.append(Comparison(
        metric="process wall time", unit="s", baseline_label="bare TRL",
        subject_label="platform trainer (padding-free)",
        baseline_runs=[r["total_s"] for r in base],
        subject_runs=[r["total_s"] for r in results["subject"]], higher_is_better=False,
        note="whole process: imports, model load, training, adapter save"))
    for label, key in (("bare TRL", "baseline"), ("bare TRL, padding_free=True", "trl_best"),
                       ("bare TRL, padding_free=True, packed_sdpa", "trl_packed"),
                       ("platform (padding-free)", "subject"),
                       ("platform (padding_free=false)", "padded")):
        if key in results:
            r = results[key][0]
            report.facts.append(Fact(
                f"real / computed tokens, {label}", round(r["real_fraction"], 3),
                note=f"{r['real_tokens']:,} real of {r['computed_tokens']:,} computed, "
                     f"{r['steps']} steps"))


def main(argv=None) -> int:
    return common.main("training_throughput", TITLE, body, argv=argv, configure=configure,
                       default_runs=3)


if __name__ == "__main__":
    raise SystemExit(main())
