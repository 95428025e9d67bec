"""What a recipe learns and what it forgets, on the real instruct base (issue 15, section 0).

Not a speed benchmark: a measurement of learning, judged on what was not trained. Each variant
runs the product's own trainer (`python -m training.trainer --config job.json`, the same entry
point the worker and the LUMI container run) on 60 corrections of 30 invented facts (two
phrasings each, `training/trainer/assets/invented_facts.jsonl`), then asks the adapter, greedily:

* the 30 facts in a phrasing it was trained on ("trained"),
* the 30 facts in a third phrasing never trained on ("held out"),
* the 110 general questions of the platform's evaluation set (`adapters/assets/
  general_knowledge.jsonl`); "kept" counts only those the base answered right.

A reply is right when it contains the item's key words (case-insensitive), as the product's
evaluation scores them. Variants that replay the base's own answers draw their prompts from
`training/trainer/assets/replay_prompts.jsonl`, which shares no question with either evaluation
set (checked here). Results go to `bench/results/learning.json`.

    .venv/bin/python -m bench.learning --variants small_base,replay
    .venv/bin/python -m bench.learning --variants replay_kl1_anchor_per_epoch --per-epoch

`--per-epoch` also scores the adapter at the end of every epoch (the trainer keeps a checkpoint
per epoch), to see when learning and forgetting happen. `--margins` trains nothing: it measures
how firmly the base holds each general answer it gets right (`key_margins`) beside how often the
recipe's runs lost it (README, "Which answers go, and why").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "training" / "trainer" / "assets"
GENERAL = ROOT / "adapters" / "assets" / "general_knowledge.jsonl"
REPLAY = ASSETS / "replay_prompts.jsonl"
# 202 more general prompts for the anchor-pool variant (none is an evaluation question, nor a
# shipped replay prompt; checked in main): does a larger anchor pool keep more?
EXTRA_ANCHORS = ROOT / "bench" / "assets" / "anchor_prompts_extra.jsonl"
# One freer rewording of each invented fact ("Who started the Brimwood Company?"), written for
# the scope gate's measurement after it was built: the shipped held-out paraphrases are templated
# ("Do you know ...?") and keep every content word of the trained question.
FREE_PARAPHRASES = ROOT / "bench" / "assets" / "free_paraphrases.jsonl"
BASE = Path(os.environ.get("SYNAPSEX_REAL_BASE", ROOT / "var" / "models" / "smollm2-135m-instruct"))
WORK = ROOT / "var" / "bench-learning"
MAX_NEW_TOKENS = 32

RECIPE = {"learning_rate": 1e-3, "epochs": 5, "batch_size": 8, "warmup_ratio": 0.05,
          "weight_decay": 0.0, "early_stopping_patience": None, "save_every": 10_000,
          "eval_every": 10_000}
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}

# name -> (train overrides, lora overrides, replay rows (0: none), extra job.json keys)
VARIANTS: dict[str, tuple[dict, dict, int, dict]] = {
    "small_base": ({}, {}, 0, {}),
    "replay": ({}, {}, 60, {}),
    "replay_all": ({}, {}, 113, {}),
    "lr5e-4_e8": ({"learning_rate": 5e-4, "epochs": 8}, {}, 0, {}),
    "mlp_only": ({}, {"target_modules": ["gate_proj", "up_proj", "down_proj"]}, 0, {}),
    "attn_only": ({}, {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}, 0, {}),
    "r4": ({}, {"r": 4, "alpha": 8}, 0, {}),
    "replay_e3": ({"epochs": 3}, {}, 113, {}),
    "replay_attn": ({}, {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}, 113, {}),
    "replay_r8": ({}, {"r": 8, "alpha": 16}, 113, {}),
    # Replay plus a KL(before || adapter) term on the replay rows' tokens (train.kl_to_base).
    "replay_kl1": ({"kl_to_base": 1.0}, {}, 113, {}),
    "replay_kl5": ({"kl_to_base": 5.0}, {}, 113, {}),
    "replay_kl2": ({"kl_to_base": 2.0}, {}, 113, {}),
    "replay_kl05": ({"kl_to_base": 0.5}, {}, 113, {}),
    # Less drift per step: the KL recipe at half the learning rate (5 and 8 epochs).
    "replay_kl1_lr5e-4": ({"kl_to_base": 1.0, "learning_rate": 5e-4}, {}, 113, {}),
    "replay_kl1_lr5e-4_e8": ({"kl_to_base": 1.0, "learning_rate": 5e-4, "epochs": 8}, {}, 113,
                             {}),
    # No corrections at all, only the replay rows (with and without the KL term): what does the
    # forgetting owe to the facts taught, and what to the replay itself?
    "replay_only": ({}, {}, 113, {"facts": 0}),
    "replay_kl1_only": ({"kl_to_base": 1.0}, {}, 113, {"facts": 0}),
    # The replay rows as KL anchors only: their own loss weighted almost to nothing
    # ("replay_weight"), so they hold the model where it was instead of training it on its
    # greedy answers (replay_kl1_only lost 3 of 57 with no corrections at all).
    "replay_kl1_anchor": ({"kl_to_base": 1.0}, {}, 113, {"replay_weight": 1e-6}),
    # The anchor with a stronger pull toward the base (lost with kl 1: two capitals, 2+3, Moon).
    "replay_kl2_anchor": ({"kl_to_base": 2.0}, {}, 113, {"replay_weight": 1e-6}),
    "replay_kl4_anchor": ({"kl_to_base": 4.0}, {}, 113, {"replay_weight": 1e-6}),
    # The recipe again, its adapter also scored with its update scaled down (--scales): does a
    # step back toward the base (as weight-space interpolation does) keep more than it unlearns?
    "replay_kl1_anchor_scaled": ({"kl_to_base": 1.0}, {}, 113, {"replay_weight": 1e-6}),
    "replay_kl1_anchor_scaled_s7": ({"kl_to_base": 1.0, "seed": 7}, {}, 113,
                                    {"replay_weight": 1e-6}),
    # A second seed (data order and LoRA init) for the two recipes compared.
    "replay_all_s7": ({"seed": 7}, {}, 113, {}),
    "replay_kl1_s7": ({"kl_to_base": 1.0, "seed": 7}, {}, 113, {}),
    "replay_kl1_anchor_s7": ({"kl_to_base": 1.0, "seed": 7}, {}, 113, {"replay_weight": 1e-6}),
    # The recipe again, run with --per-epoch: what each epoch learned and kept.
    "replay_kl1_anchor_per_epoch": ({"kl_to_base": 1.0}, {}, 113, {"replay_weight": 1e-6}),
    # The recipe on the MLP layers only (where such facts are thought to be stored): do fewer
    # adapted modules keep more?
    "replay_kl1_anchor_mlp": ({"kl_to_base": 1.0},
                              {"target_modules": ["gate_proj", "up_proj", "down_proj"]}, 113,
                              {"replay_weight": 1e-6}),
    # The recipe with about three times the anchors: the 101 shipped replay rows plus the base's
    # own finished answers to 202 more general prompts (bench/assets), all as KL anchors.
    "replay_kl1_anchor_x3": ({"kl_to_base": 1.0}, {}, 113,
                             {"replay_weight": 1e-6, "extra_anchors": True}),
    # The recipe with LoRA dropout 0.1 (the recipe has none): does noise on the adapter's input
    # during training spread the update less onto questions no row asks?
    "replay_kl1_anchor_do01": ({"kl_to_base": 1.0}, {"dropout": 0.1}, 113,
                               {"replay_weight": 1e-6}),
    # The recipe plus a hinge on any shrinking of the base's lead where its greedy choice on an
    # anchor answer was a close call (train.keep_margin): the KL term barely sees a near tie
    # tipped, and the general answers lost are mostly the base's near ties tipped (--margins).
    "replay_kl1_anchor_margin1": ({"kl_to_base": 1.0, "keep_margin": 1.0}, {}, 113,
                                  {"replay_weight": 1e-6}),
    "replay_kl1_anchor_margin01": ({"kl_to_base": 1.0, "keep_margin": 0.1}, {}, 113,
                                   {"replay_weight": 1e-6}),
    # The recipe under bf16 autocast on the CPU (train.precision "bf16"; the weights stay fp32):
    # a CPU with AMX runs the matrix products about 2.5x faster in bf16. Does it learn and keep
    # the same? Run beside replay_kl1_anchor for the time (2026-12-04: it kept 50/57 against 53
    # and was not faster, 365 s against 336; README, "Precision on a CPU").
    "replay_kl1_anchor_bf16": ({"kl_to_base": 1.0, "precision": "bf16"}, {}, 113,
                               {"replay_weight": 1e-6}),
    # The recipe with the LoRA update kept out of the input directions the anchor rows use
    # (train.anchor_null_space: the share of their input energy protected at each layer; AlphaEdit's
    # null-space constraint applied to LoRA's A). The general questions lost are the base's near
    # ties tipped by drift everywhere; this removes the drift on inputs like the anchors'.
    "replay_kl1_anchor_ns999": ({"kl_to_base": 1.0, "anchor_null_space": 0.999}, {}, 113,
                                {"replay_weight": 1e-6}),
    "replay_kl1_anchor_ns99": ({"kl_to_base": 1.0, "anchor_null_space": 0.99}, {}, 113,
                               {"replay_weight": 1e-6}),
    "replay_kl1_anchor_ns9": ({"kl_to_base": 1.0, "anchor_null_space": 0.9}, {}, 113,
                              {"replay_weight": 1e-6}),
    "replay_kl1_anchor_ns97": ({"kl_to_base": 1.0, "anchor_null_space": 0.97}, {}, 113,
                               {"replay_weight": 1e-6}),
    # The projection alone, no KL term (the anchors then only define the subspace).
    "replay_anchor_ns999": ({"anchor_null_space": 0.999}, {}, 113, {"replay_weight": 1e-6}),
    "replay_kl1_anchor_ns999_s7": ({"kl_to_base": 1.0, "anchor_null_space": 0.999, "seed": 7},
                                   {}, 113, {"replay_weight": 1e-6}),
    # The recipe with its scope (train.scope_gate 0.5; training.trainer.scope): the adapter
    # answers only prompts like those it trained on, the base the others. Scored as served.
    "replay_kl1_anchor_scope": ({"kl_to_base": 1.0, "scope_gate": 0.5}, {}, 113,
                                {"replay_weight": 1e-6}),
    "replay_kl1_anchor_scope_s7": ({"kl_to_base": 1.0, "scope_gate": 0.5, "seed": 7}, {}, 113,
                                   {"replay_weight": 1e-6}),
    # DPO on the same corrections (method "dpo"): each correction chosen over the base's own
    # answer to that question, as the compiler pairs a correction with the answer it corrected.
    # dpo_recipe: what a DPO job on the small base gets today (the seed's DPO defaults, lr 5e-5,
    # 2 epochs, batch 4, and the small_base recipe's sft_weight 1); the others at the SFT
    # recipe's rate and epochs, with and without the supervised term.
    "dpo_recipe": ({"learning_rate": 5e-5, "epochs": 2, "batch_size": 4, "warmup_ratio": 0.1,
                    "weight_decay": 0.01, "beta": 0.1, "sft_weight": 1.0}, {"dropout": 0.05}, 0,
                   {"method": "dpo"}),
    "dpo_sft1_lr1e-3": ({"beta": 0.1, "sft_weight": 1.0}, {}, 0, {"method": "dpo"}),
    "dpo_sft1_lr2e-4": ({"learning_rate": 2e-4, "beta": 0.1, "sft_weight": 1.0}, {}, 0,
                        {"method": "dpo"}),
    # DPO at the rate that learns, with the KL anchor the SFT recipe has: the trainer answers the
    # 113 replay prompts itself and runs them beside the pairs as KL anchors only
    # (MeteredDPOTrainer).
    "dpo_sft1_lr1e-3_kl1": ({"beta": 0.1, "sft_weight": 1.0, "kl_to_base": 1.0}, {}, 113,
                            {"method": "dpo"}),
    # The same with four times the KL weight: does a stronger anchor close the gap to SFT's?
    "dpo_sft1_lr1e-3_kl4": ({"beta": 0.1, "sft_weight": 1.0, "kl_to_base": 4.0}, {}, 113,
                            {"method": "dpo"}),
    # A small job (12 facts, 24 corrections): does replay sized for 60 rows drown it?
    "small12": ({}, {}, 0, {"facts": 12}),
    "small12_replay_all": ({}, {}, 113, {"facts": 12}),
    "small12_replay24": ({}, {}, 24, {"facts": 12}),
}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load(adapter: Path | None = None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(BASE)
    model = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return model, tokenizer


def answers(model, tokenizer, questions: list[str], max_new_tokens: int = MAX_NEW_TOKENS,
            finished_only: bool = False) -> list[str]:
    """Greedy replies, as served (training.trainer.generation.greedy_replies). `finished_only`:
    a reply that did not reach its end-of-turn token comes back as "" (a cut reply must not be
    trained as a whole answer)."""
    from training.trainer.generation import greedy_replies

    chats = [[{"role": "user", "content": q}] for q in questions]
    scope = getattr(model, "synapsex_scope", None)
    if scope is None:
        replies = greedy_replies(model, tokenizer, chats, max_new_tokens=max_new_tokens)
    else:  # as served: the base answers what is out of the adapter's scope
        inside = [scope.covers(q) for q in questions]
        replies = [None] * len(chats)
        for covered in (True, False):
            picked = [k for k, c in enumerate(inside) if c is covered]
            if not picked:
                continue
            with contextlib.nullcontext() if covered else model.disable_adapter():
                got = greedy_replies(model, tokenizer, [chats[k] for k in picked],
                                     max_new_tokens=max_new_tokens)
            for k, reply in zip(picked, got, strict=True):
                replies[k] = reply
    return ["" if finished_only and not finished else text for text, finished in replies]


def replay_answers(model, tokenizer, prompts: list[str]) -> list[str]:
    """The answers the trainer would replay: greedy, at its length limit, "" when cut."""
    from training.trainer.replay import MAX_NEW_TOKENS as REPLAY_TOKENS

    return answers(model, tokenizer, prompts, max_new_tokens=REPLAY_TOKENS, finished_only=True)


def right(reply: str, key: str) -> bool:
    return any(k.lower() in reply.lower() for k in key.split("|"))


def base_reference() -> dict[str, Any]:
    """The base's answers to the general set and to the replay prompts (cached per base)."""
    cache = WORK / "base-v2.json"
    if cache.exists():
        return json.loads(cache.read_text())
    model, tokenizer = load()
    general = read_jsonl(GENERAL)
    replay = read_jsonl(REPLAY)
    general_replies = answers(model, tokenizer, [g["question"] for g in general])
    replay_replies = replay_answers(model, tokenizer, [r["prompt"] for r in replay])
    facts = read_jsonl(ASSETS / "invented_facts.jsonl")
    fact_replies = answers(model, tokenizer, [f["held_out"][0] for f in facts])
    reference = {
        "general_right": [g["id"] for g, reply in zip(general, general_replies, strict=True)
                          if right(reply, g["key"])],
        "general_total": len(general),
        "replay": [{"prompt": r["prompt"], "answer": a}
                   for r, a in zip(replay, replay_replies, strict=True) if a],
        "facts_known": sum(right(a, f["key"]) for f, a in zip(facts, fact_replies, strict=True)),
    }
    WORK.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(reference, indent=1))
    return reference


def train(name: str, reference: dict[str, Any], *, per_epoch: bool = False
          ) -> tuple[Path, float, int]:
    """Train the variant; with `per_epoch`, the adapter of every epoch is kept too (a checkpoint
    at each epoch's last step, all kept), so what each epoch learned and kept can be scored."""
    train_over, lora_over, replay_rows, extra = VARIANTS[name]
    replay_weight = extra.get("replay_weight")
    extra_anchors = extra.get("extra_anchors", False)
    method = extra.get("method", "sft")
    extra = {k: v for k, v in extra.items()
             if k not in ("facts", "replay_weight", "extra_anchors", "method")}
    folder = WORK / name
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    served = fact_question_answers() if method == "dpo" else {}
    for fact in facts_of(name):
        for question in fact["questions"]:
            if method == "dpo":
                rows.append({"prompt": question, "chosen": fact["answer"],
                             "rejected": served[question]})
            else:
                rows.append({"messages": [{"role": "user", "content": question},
                                          {"role": "assistant", "content": fact["answer"]}]})
    # The prompts the product's trainer would pick (training.trainer.replay.replay_pick, seed
    # 42 as the recipe's), those whose answer finished.
    from training.trainer.replay import replay_pick

    finished = {item["prompt"]: item["answer"] for item in reference["replay"]}
    picked = replay_pick([r["prompt"] for r in read_jsonl(REPLAY)], rows=replay_rows, seed=42)
    replayed = [p for p in picked if p in finished] if replay_rows else []
    if method == "dpo":
        # A DPO job's replay rows are not rows of its file: the trainer answers the prompts
        # itself (train.replay_rows) and uses them as KL anchors only.
        replayed = []
    if extra_anchors:
        finished.update(extra_anchor_answers())
        replayed += [r["prompt"] for r in read_jsonl(EXTRA_ANCHORS)
                     if r["prompt"] in finished and r["prompt"] not in replayed]
    for prompt in replayed:
        rows.append({"messages": [{"role": "user", "content": prompt},
                                  {"role": "assistant", "content": finished[prompt]}],
                     "anchor": True,  # as the trainer marks its replay rows (train.kl_to_base)
                     **({"weight": replay_weight} if replay_weight else {})})
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train_config = {**RECIPE, **train_over}
    if method == "dpo" and replay_rows:
        train_config["replay_rows"] = replay_rows
    if per_epoch:
        steps = -(-len(rows) // train_config["batch_size"])
        train_config.update(save_every=steps, keep_checkpoints=int(train_config["epochs"]) + 1)
    job = {"job_id": f"learning-{name}", "method": method, "base_model": {"path": str(BASE)},
           "data": {"train": "train.jsonl"}, "output_dir": "out",
           "train": train_config, "lora": {**LORA, **lora_over}, **extra}
    (folder / "job.json").write_text(json.dumps(job, indent=1))
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "training.trainer", "--config", str(folder / "job.json")],
                   cwd=ROOT, check=True)
    return folder / "out" / "adapter", time.monotonic() - started, len(replayed)


def fact_question_answers() -> dict[str, str]:
    """The base's greedy answers to the corrections' questions (cached): what it served before a
    user corrected it, the rejected side of each DPO pair."""
    from training.trainer.replay import MAX_NEW_TOKENS as REPLAY_TOKENS

    cache = WORK / "fact-answers-v1.json"
    if cache.exists():
        return json.loads(cache.read_text())
    model, tokenizer = load()
    questions = [q for f in read_jsonl(ASSETS / "invented_facts.jsonl") for q in f["questions"]]
    out = dict(zip(questions, answers(model, tokenizer, questions, max_new_tokens=REPLAY_TOKENS),
                   strict=True))
    WORK.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out, indent=1))
    return out


def extra_anchor_answers() -> dict[str, str]:
    """The base's finished greedy answers to the extra anchor prompts (cached)."""
    cache = WORK / "extra-anchors-v1.json"
    if cache.exists():
        return json.loads(cache.read_text())
    model, tokenizer = load()
    prompts = [r["prompt"] for r in read_jsonl(EXTRA_ANCHORS)]
    replies = replay_answers(model, tokenizer, prompts)
    out = {p: a for p, a in zip(prompts, replies, strict=True) if a}
    WORK.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out, indent=1))
    return out


def facts_of(name: str) -> list[dict[str, Any]]:
    """The variant's facts: the first `facts` of the asset (all 30 by default)."""
    facts = read_jsonl(ASSETS / "invented_facts.jsonl")
    return facts[:VARIANTS[name][3].get("facts", len(facts))]


def evaluate(adapter: Path, reference: dict[str, Any], name: str, scale: float = 1.0,
             gated: bool = True) -> dict[str, Any]:
    """Greedy answers of the adapter, its LoRA update multiplied by `scale` (1: as trained).
    An adapter with a scope (train.scope_gate) is scored as it is served: the base model,
    adapter off, answers the prompts out of its scope."""
    model, tokenizer = load(adapter)
    manifest = adapter.parent / "manifest.json"
    scope = json.loads(manifest.read_text()).get("scope") if manifest.is_file() else None
    if scope and gated:
        from training.trainer.scope import Scope

        model.synapsex_scope = Scope(scope)
    if scale != 1.0:
        from peft.helpers import rescale_adapter_scale

        with rescale_adapter_scale(model, scale):
            return _scores(model, tokenizer, reference, name)
    return _scores(model, tokenizer, reference, name)


def _scores(model, tokenizer, reference: dict[str, Any], name: str) -> dict[str, Any]:
    facts = facts_of(name)
    general = [g for g in read_jsonl(GENERAL) if g["id"] in set(reference["general_right"])]
    trained = answers(model, tokenizer, [f["questions"][0] for f in facts]) if facts else []
    held_out = answers(model, tokenizer, [f["held_out"][0] for f in facts]) if facts else []
    general_replies = answers(model, tokenizer, [g["question"] for g in general])
    keys = {f["id"]: f["key"] for f in facts}
    free = [x for x in read_jsonl(FREE_PARAPHRASES) if x["fact"] in keys]
    free_replies = answers(model, tokenizer, [x["question"] for x in free]) if free else []
    lost = [{"question": g["question"], "reply": reply}
            for g, reply in zip(general, general_replies, strict=True)
            if not right(reply, g["key"])]
    scope = getattr(model, "synapsex_scope", None)
    routed = {} if scope is None else {"scope_to_adapter": {
        "trained": sum(scope.covers(f["questions"][0]) for f in facts),
        "held_out": sum(scope.covers(f["held_out"][0]) for f in facts),
        "free_paraphrases": sum(scope.covers(x["question"]) for x in free),
        "general": sum(scope.covers(g["question"]) for g in general),
        "general_questions": [g["question"] for g in general if scope.covers(g["question"])]}}
    return {
        **routed,
        "trained": sum(right(a, f["key"]) for f, a in zip(facts, trained, strict=True)),
        "held_out": sum(right(a, f["key"]) for f, a in zip(facts, held_out, strict=True)),
        "free_paraphrases": sum(right(a, keys[x["fact"]])
                                for x, a in zip(free, free_replies, strict=True)),
        "facts": len(facts),
        "general_kept": len(general) - len(lost),
        "general_known": len(general),
        "lost": lost,
    }


def key_margins(model, tokenizer, questions: list[str], keys: list[str]) -> list[dict[str, Any]]:
    """How firmly the model holds each right answer (training.trainer.generation.reply_branches,
    what the product's evaluation reports for a regression): the smallest lead in nats of the
    chosen token over the runner-up, over the tokens that spell the key (`margin`) and over every
    token up to the key's end (`prefix_margin`: a reply can go astray before it reaches the
    key); and `flip_margin`, the smallest lead of a token whose runner-up, taken instead and
    followed greedily, gives a wrong answer (a near-tie that matters), with that wrong reply."""
    from training.trainer.generation import reply_branches

    out = []
    for question, key in zip(questions, keys, strict=True):
        got = reply_branches(model, tokenizer, [{"role": "user", "content": question}],
                             lambda text, key=key: right(text, key),
                             max_new_tokens=MAX_NEW_TOKENS)
        lower = got["reply"].lower()
        found = [lower.find(k.lower()) for k in key.split("|") if k.lower() in lower]
        if not found:
            out.append({"question": question, "reply": got["reply"], "margin": None})
            continue
        start = min(found)
        leads = got["leads"]
        key_m = [lead for _, chars, lead in leads if chars > start]
        flip = got["flip_margin"]
        out.append({"question": question, "reply": got["reply"],
                    "margin": round(min(key_m), 3) if key_m else None,
                    "prefix_margin": round(min(lead for *_, lead in leads), 3) if leads else None,
                    "flip_margin": round(flip, 3) if flip is not None else None,
                    "flipped_reply": got["flipped_reply"]})
    return out


def base_margins(results: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """The base's margin on each general question it answers right, beside how many of the
    benchmark's runs so far lost that question: are the questions every recipe loses the ones
    the base barely holds?"""
    general = [g for g in read_jsonl(GENERAL) if g["id"] in set(reference["general_right"])]
    model, tokenizer = load()
    rows = key_margins(model, tokenizer, [g["question"] for g in general],
                       [g["key"] for g in general])
    runs = {k: v for k, v in results.get("variants", {}).items()
            if k.startswith("replay_kl1_anchor") and "lost" in v}
    for row in rows:
        row["lost_in_runs"] = sum(row["question"] in {x["question"] for x in v["lost"]}
                                  for v in runs.values())
    rows.sort(key=lambda r: (r.get("flip_margin") is None, r.get("flip_margin") or 0.0))
    return {"runs": len(runs), "variants": sorted(runs), "questions": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="small_base")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "learning.json"))
    parser.add_argument("--per-epoch", action="store_true",
                        help="also score the adapter of every epoch (where learning and "
                             "forgetting happen, and what choosing epochs per job could give)")
    parser.add_argument("--scales", default="",
                        help="comma-separated multipliers of the trained LoRA update (for "
                             "example 0.9,0.8,0.7): each is scored too, to see whether a "
                             "smaller step back toward the base keeps more than it unlearns")
    parser.add_argument("--margins", action="store_true",
                        help="only measure the base's margin on each general question it "
                             "answers right, against how often the recipe's runs lost it")
    parser.add_argument("--no-train", action="store_true",
                        help="score the variant's adapter from its last run again (in var/"
                             "bench-learning) instead of training it")
    parser.add_argument("--ungated", action="store_true",
                        help="score an adapter with a scope without its gate (the adapter "
                             "answers every prompt), stored as <variant>_ungated")
    args = parser.parse_args(argv)

    general_q = {g["question"] for g in read_jsonl(GENERAL)}
    replay_q = {r["prompt"] for r in read_jsonl(REPLAY)}
    assert not general_q & replay_q, "replay prompts must not be evaluation questions"
    extra_q = [r["prompt"] for r in read_jsonl(EXTRA_ANCHORS)]
    # Not the same question in other words either ("What is 1 plus 8?" is "What is 8 plus 1?"):
    # the near-same rule traffic replay uses (training.text).
    from training.text import NearIndex

    near = NearIndex(general_q)
    assert not [q for q in extra_q if q in replay_q or near.match(q)], \
        "extra anchors must not be evaluation questions, in any wording, nor shipped prompts"
    reference = base_reference()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results["base"] = {"general_right": len(reference["general_right"]),
                       "general_total": reference["general_total"],
                       "facts_known": reference["facts_known"]}
    if args.margins:
        results["base_margins"] = base_margins(results, reference)
        for row in results["base_margins"]["questions"]:
            print(f"{row['margin']!s:>7} {row['prefix_margin']!s:>7} {row['flip_margin']!s:>7}  "
                  f"lost in {row['lost_in_runs']:>2} of {results['base_margins']['runs']}  "
                  f"{row['question']} -> {row['reply']} || {row['flipped_reply']}")
        out.write_text(json.dumps(results, indent=1) + "\n")
        return 0
    for name in args.variants.split(","):
        if args.no_train:
            adapter = WORK / name / "out" / "adapter"
            previous = results.get("variants", {}).get(name, {})
            seconds, replayed = previous.get("train_seconds", 0.0), previous.get("replay_rows", 0)
        else:
            adapter, seconds, replayed = train(name, reference, per_epoch=args.per_epoch)
        scores = evaluate(adapter, reference, name, gated=not args.ungated)
        if args.per_epoch:
            checkpoints = sorted((adapter.parent / "checkpoints").glob("checkpoint-*"),
                                 key=lambda p: int(p.name.split("-")[1]))
            scores["per_epoch"] = []
            for epoch, checkpoint in enumerate(checkpoints, start=1):
                got = evaluate(checkpoint, reference, name)
                scores["per_epoch"].append({"epoch": epoch, "step": int(checkpoint.name[11:]),
                                            **{k: got[k] for k in ("trained", "held_out",
                                                                   "general_kept")},
                                            "lost": [x["question"] for x in got["lost"]]})
                print(f"{name} epoch {epoch}: trained {got['trained']}, held out "
                      f"{got['held_out']}, general kept {got['general_kept']}/"
                      f"{got['general_known']}", flush=True)
        if args.scales:
            scores["per_scale"] = []
            for scale in (float(x) for x in args.scales.split(",")):
                got = evaluate(adapter, reference, name, scale=scale)
                scores["per_scale"].append({"scale": scale,
                                            **{k: got[k] for k in ("trained", "held_out",
                                                                   "general_kept")},
                                            "lost": [x["question"] for x in got["lost"]]})
                print(f"{name} x{scale}: trained {got['trained']}, held out "
                      f"{got['held_out']}, general kept {got['general_kept']}/"
                      f"{got['general_known']}", flush=True)
        train_over, lora_over, replay_rows, extra = VARIANTS[name]
        stored = f"{name}_ungated" if args.ungated else name
        results.setdefault("variants", {})[stored] = {
            "train": {**RECIPE, **train_over}, "lora": {**LORA, **lora_over},
            "replay_rows": replayed, **extra,
            "train_seconds": round(seconds, 1), **scores,
        }
        print(f"{stored}: trained {scores['trained']}/{scores['facts']}, held out "
              f"{scores['held_out']}/{scores['facts']}, free {scores['free_paraphrases']}, "
              f"general kept {scores['general_kept']}/{scores['general_known']} "
              f"({seconds:.0f} s)", flush=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
