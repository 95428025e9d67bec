"""Replay against forgetting: the model's own answers to general prompts, trained with the job.

A LoRA job on a tenant's corrections of invented or domain facts makes a small base answer real
questions of the same shape with the new names ("The capital of Norway is Petrakand"): measured
on SmolLM2-135M-Instruct it kept only 36 of the 57 general questions it answered right (README,
"Defaults on a real base"). Replaying what the model itself answers to other general prompts
(self-distillation: its own greedy answers, right or wrong, so only the tenant's rows change
what it says) keeps those answers in place while the corrections are learned.

The prompts ship with the trainer (`assets/replay_prompts.jsonl`); they share no question with
the platform's evaluation sets (`adapters/assets/general_knowledge.jsonl` and
`assets/base_knowledge.jsonl`), so what replay keeps is measured on questions it never saw. The
answers are generated at the start of the job by the model being trained, as it is before the
job (the base, or the base with the adapter the job continues from), greedily and as served.
An answer that does not finish within `max_new_tokens` is left out (training a cut answer
followed by the end-of-turn marker would teach the model to stop mid-sentence).

No Django here; the same code runs in the local worker and on the cluster. Generation uses its
own copy of the model, loaded before the Trainer's arguments register any DeepSpeed config, so
ZeRO-3's partitioned loading of the model that trains is not involved.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from training.trainer.errors import DataError

REPLAY_PROMPTS = Path(__file__).resolve().parent / "assets" / "replay_prompts.jsonl"
MAX_NEW_TOKENS = 96


def replay_prompts(path: str | Path | None = None) -> list[str]:
    """The replay prompts: one JSON object per line with a `prompt` string."""
    lines = Path(path or REPLAY_PROMPTS).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["prompt"] for line in lines if line.strip()]


def traffic_prompts(path: str | Path) -> list[str]:
    """The job's prompts from the tenant's own traffic (data.replay_prompts, written by the
    platform's training.replay_traffic): one JSON object per line with a `prompt` string."""
    try:
        prompts = replay_prompts(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"data.replay_prompts {path}: {exc}") from exc
    if not all(isinstance(p, str) and p.strip() for p in prompts):
        raise DataError(f"data.replay_prompts {path}: every `prompt` must be a non-empty string")
    return prompts


def replay_pick(prompts: list[str], *, rows: int, seed: int) -> list[str]:
    """`rows` prompts, a seeded sample when fewer than all are asked (the same job, the same
    sample)."""
    if rows >= len(prompts):
        return list(prompts)
    return random.Random(seed).sample(prompts, rows)


def replay_records(model: Any, tokenizer: Any, prompts: list[str], *,
                   max_new_tokens: int = MAX_NEW_TOKENS,
                   weight: float = 1.0) -> tuple[list[dict[str, Any]], int]:
    """SFT records of the model's own finished greedy answers to `prompts`, and how many prompts
    were left out because their answer did not finish. `weight` (train.replay_weight) is each
    record's loss weight when it is not 1."""
    from training.trainer.generation import greedy_replies

    replies = greedy_replies(model, tokenizer, [[{"role": "user", "content": p}] for p in prompts],
                             max_new_tokens=max_new_tokens)
    records: list[dict[str, Any]] = []
    for index, (prompt, (answer, finished)) in enumerate(zip(prompts, replies, strict=True)):
        if finished and answer:
            records.append({
                "id": f"replay-{index}",
                # Marks the row for the KL-to-base term (train.kl_to_base; trainers.py).
                "anchor": True,
                "messages": [{"role": "user", "content": prompt},
                             {"role": "assistant", "content": answer}],
                **({"weight": weight} if weight != 1.0 else {}),
            })
    return records, len(prompts) - len(records)


def replay_generate(*, base: str, revision: str | None, init_adapter: str | None, rows: int,
                    seed: int, prompts_path: str | Path | None = None,
                    weight: float = 1.0, traffic: list[str] | None = None,
                    as_anchors: bool = False) -> tuple[list[dict], str]:
    """Load the model as it is before the job, answer `rows` replay prompts and the `traffic`
    prompts (the tenant's own, all of them, before the shipped ones), free the model.

    Returns the SFT records and a note for the job's events ("replayed 97 of the model's own
    answers ..."); `as_anchors` (a DPO job's) words the note for rows only the KL term uses.
    """
    import gc

    import torch

    from training.trainer.modeling import load_model_and_tokenizer

    device = "cuda" if torch.cuda.is_available() else None
    dtype = torch.bfloat16 if device and torch.cuda.is_bf16_supported() else None
    model, tokenizer = load_model_and_tokenizer(base, init_adapter, revision=revision,
                                                dtype=dtype, device=device)
    try:
        picked = replay_pick(replay_prompts(prompts_path), rows=rows, seed=seed) if rows else []
        shipped = set(picked)
        traffic = [p for p in dict.fromkeys(traffic or []) if p not in shipped]
        records, unfinished = replay_records(model, tokenizer, [*traffic, *picked],
                                             weight=weight)
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    asked = len(picked) + len(traffic)
    note = (f"replayed {len(records)} of the model's own answers to general prompts"
            + (f" and to {len(traffic)} of the tenant's own users' prompts" if traffic else "")
            + (" as KL anchors" if as_anchors else " against forgetting")
            + f" ({asked} asked, {unfinished} left out unfinished"
            + (f"; loss weight {weight:g}" if weight != 1.0 else "") + ")")
    return records, note
