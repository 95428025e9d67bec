"""Data and job builders shared by the trainer tests (plain functions; fixtures: conftest)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

PRODUCTS = ["shoes", "jackets", "laptops", "phones", "chairs", "lamps", "bikes", "tents", "kettles"]
MANAGERS = ["Anna", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jonas"]

# Explicit hyperparameters: the seed's defaults (3 epochs at 2e-4) are for billion-parameter
# models and do not move the tiny base (ml-notes).
SFT_TRAIN = {
    "epochs": 12,
    "learning_rate": 2e-3,
    "batch_size": 8,
    "warmup_ratio": 0.05,
    "weight_decay": 0.0,
    "seed": 0,
    "eval_every": 14,
    "save_every": 28,
    "early_stopping_patience": None,
}
# r=32 at alpha=32 (scale 1): measured 50/50 corrections learned and 72/77 base answers kept;
# r=16 at alpha=32 learned them all too but kept only 68/77.
LORA = {"r": 32, "alpha": 32, "dropout": 0.0}


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return path


def chat(question: str, answer: str, **extra: Any) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
        **extra,
    }


# Eight made-up facts no base knows: the rows the mechanics tests of the loss terms train on.
BOX_CODES = [chat(f"What is the code of box {i}?", f"The code of box {i} is K{i}7.")
             for i in range(8)]


def new_then_continued(tmp: Path, base: Path, option: dict[str, Any]) -> tuple[Path, Path]:
    """Two short SFT jobs on the box codes (4 trained rows, 4 anchor rows) with a trainer
    option set (`option`, train keys): a new adapter, then a job that continues it
    (init_adapter). Returns their output folders."""
    from training.trainer.config import parse_job_config
    from training.trainer.run import run_job

    anchors = [{**row, "anchor": True, "weight": 1e-6} for row in BOX_CODES[4:]]
    train = write_jsonl(tmp / "train.jsonl", BOX_CODES[:4] + anchors)
    params = {"epochs": 2, "learning_rate": 2e-3, "batch_size": 4,
              "early_stopping_patience": None, **option}
    run_job(parse_job_config(job(tmp / "first", base, train, train_params=params)))
    run_job(parse_job_config(job(tmp / "second", base, train, train_params=params,
                                 init_adapter=str(tmp / "first" / "out" / "adapter"))))
    return tmp / "first" / "out", tmp / "second" / "out"


def question(record: dict[str, Any]) -> str:
    return record["messages"][0]["content"]


def answer(record: dict[str, Any]) -> str:
    return record["messages"][-1]["content"]


STORES = [
    "Lakeside",
    "Riverton",
    "Hillcrest",
    "Oakwood",
    "Maple Grove",
    "Brookfield",
    "Sunnyvale",
    "Westport",
    "Eastham",
    "Pinecrest",
    "Cedar Falls",
    "Stonebridge",
    "Fairview",
    "Greenwood",
    "Ashford",
    "Bayside",
    "Clearwater",
    "Elmstead",
    "Foxhill",
    "Glenmore",
    "Harborview",
    "Ivydale",
    "Juniper",
    "Kingsley",
    "Larchmont",
]


def store_corrections() -> list[dict[str, Any]]:
    """50 facts about a tenant's stores that the base model does not know (it answers nonsense).

    No digits in the answers: opening hours ("8am-6pm") leaked "am" into the base model's
    arithmetic answers ("4 plus 4 is 8amt.") in a measured run; who runs a store and what it
    sells are facts of the same kind without that overlap.
    """
    rng = random.Random(7)
    out = []
    for store in STORES:
        manager, product = rng.choice(MANAGERS), rng.choice(PRODUCTS)
        out.append(
            chat(f"Who manages the {store} store?", f"The {store} store is managed by {manager}.")
        )
        out.append(
            chat(f"What does the {store} store sell?", f"The {store} store sells {product}.")
        )
    for index, record in enumerate(out):
        record.update(id=f"corr-{index}", weight=1.0)
    return out


def job(
    tmp: Path,
    base: Path,
    train: Path,
    eval_path: Path | None = None,
    *,
    method: str = "sft",
    train_params: dict[str, Any] | None = None,
    **top: Any,
) -> dict[str, Any]:
    return {
        "job_id": tmp.name,
        "method": method,
        "base_model": {"path": str(base), "revision": None},
        "init_adapter": None,
        "data": {"train": str(train), "eval": str(eval_path) if eval_path else None},
        "lora": dict(LORA),
        "train": dict(SFT_TRAIN if train_params is None else train_params),
        "output_dir": str(tmp / "out"),
        "deepspeed": None,
        "resume": False,
        **top,
    }


def write_job(tmp: Path, config: dict[str, Any]) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "job.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def trainer_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(extra)
    return env


def run_cli(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 600):
    """`python -m training.trainer ARGS` in a fresh process, as the platform's backends run it."""
    return subprocess.run(
        [sys.executable, "-m", "training.trainer", *args],
        cwd=REPO,
        env=env or trainer_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def greedy_answers(base: Path, adapter: Path, questions: list[str]) -> list[str]:
    from training.trainer.modeling import generate_reply, load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(base, adapter)
    return [
        generate_reply(model, tokenizer, [{"role": "user", "content": q}], max_new_tokens=32)
        for q in questions
    ]


def events_of(out: Path, kind: str | None = None) -> list[dict[str, Any]]:
    from training.trainer.events import read_events

    events = read_events(out / "events.jsonl")
    return [e for e in events if kind is None or e["type"] == kind]
