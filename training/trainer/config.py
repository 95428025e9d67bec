"""job.json (seam 1): typed, strictly validated, with the seed's defaults and presets.

This module is imported by the Django side for `PRESETS` and the defaults, so it must stay
import-light: standard library only, no torch.

Precedence of values: method defaults < preset < what job.json states explicitly.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from training.trainer.errors import JobConfigError

METHODS = ("sft", "dpo", "kto")

# Seed "Training Parameters" table (SFT) and "DPO Training" example.
SFT_DEFAULTS: dict[str, Any] = {
    "epochs": 3,
    "learning_rate": 2e-4,
    "batch_size": 4,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
}
DPO_DEFAULTS: dict[str, Any] = {
    "epochs": 2,
    "learning_rate": 5e-5,
    "batch_size": 4,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "beta": 0.1,
}
# KTO (unpaired thumbs and ratings): TRL's KTO beta; the rest as DPO (a preference method on
# LoRA). The batch must hold at least 2 rows: the KL reference point pairs each prompt with
# another row's completion of the same batch (TRL refuses batch size 1).
KTO_DEFAULTS: dict[str, Any] = {
    "epochs": 2,
    "learning_rate": 5e-5,
    "batch_size": 4,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "beta": 0.1,
}
KTO_MIN_BATCH_SIZE = 2
# The KTO paper (Ethayarajh et al. 2024, eq. 8) and TRL's KTOTrainer docs: keep
# (desirable_weight * n_desirable) / (undesirable_weight * n_undesirable) in [1, 4/3].
KTO_WEIGHT_RATIO_RANGE = (1.0, 4 / 3)
LORA_DEFAULTS: dict[str, Any] = {
    "r": 16,
    "alpha": 32,
    "dropout": 0.05,
    "target_modules": "all-linear",
}

def method_defaults(method: str) -> dict[str, Any]:
    """The seed's training defaults of a method (before presets and explicit values)."""
    return dict({"dpo": DPO_DEFAULTS, "kto": KTO_DEFAULTS}.get(method, SFT_DEFAULTS))


def kto_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) for a KTO set, so that the weighted ratio
    (dw * n_desirable) / (uw * n_undesirable) lies in KTO_WEIGHT_RATIO_RANGE.

    The minority side is up-weighted to balance the two (ratio 1, the range's lower end, rounded
    up so rounding never leaves the range); balanced or one-sided sets keep 1.0 / 1.0 (with one
    side absent there is nothing to balance).
    """
    if n_desirable <= 0 or n_undesirable <= 0 or n_desirable == n_undesirable:
        return 1.0, 1.0
    if n_desirable < n_undesirable:
        return math.ceil(n_undesirable / n_desirable * 1000) / 1000, 1.0
    return 1.0, math.floor(n_desirable / n_undesirable * 1000) / 1000


# Seed "Training Configuration" table: use case -> LoRA r, epochs, learning rate.
PRESETS: dict[str, dict[str, Any]] = {
    "small_corrections": {"lora_r": 8, "epochs": 2, "learning_rate": 3e-4},
    "domain_adaptation": {"lora_r": 16, "epochs": 3, "learning_rate": 2e-4},
    "major_behavior_change": {"lora_r": 32, "epochs": 5, "learning_rate": 1e-4},
    "continuous_learning": {"lora_r": 16, "epochs": 1, "learning_rate": 5e-5},
}


@dataclass(frozen=True)
class BaseModelSpec:
    """Where the base model comes from: a local folder, or a hub id pinned to a revision."""

    path: str | None = None
    hf_id: str | None = None
    revision: str | None = None

    @property
    def name_or_path(self) -> str:
        return self.path or self.hf_id or ""


@dataclass(frozen=True)
class DataSpec:
    """The compiled snapshot: train JSONL, an optional held-out eval JSONL and, for SFT, an
    optional JSONL of prompts from the tenant's traffic to replay (`{"id", "prompt"}` lines;
    training.trainer.replay answers them with the model before the job)."""

    train: str
    eval: str | None = None
    replay_prompts: str | None = None


@dataclass(frozen=True)
class LoraSpec:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"


@dataclass(frozen=True)
class TrainSpec:
    epochs: float = 3
    learning_rate: float = 2e-4
    batch_size: int = 4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_length: int = 1024
    beta: float = 0.1
    seed: int = 42
    eval_every: int = 50
    save_every: int = 100
    early_stopping_patience: int | None = 3
    gradient_accumulation_steps: int = 1
    log_every: int = 1
    max_grad_norm: float = 1.0
    keep_checkpoints: int = 2
    # SFT: how many of the model's own answers to general prompts to mix in against forgetting
    # (training.trainer.replay); 0 replays nothing. DPO: the same rows, as the KL term's anchors
    # only (with kl_to_base; training.trainer.trainers.MeteredDPOTrainer).
    replay_rows: int = 0
    # SFT: weight of a KL(before || adapter) term on the tokens of the rows marked `anchor` (the
    # replay rows): the whole next-token distribution of the model before the job, not only its
    # sampled answer (training.trainer.trainers.WeightedSFTTrainer); 0: off. DPO: the same term
    # on the replay rows, run beside the pairs (MeteredDPOTrainer).
    kl_to_base: float = 0.0
    # SFT: the loss weight of each replay row's own tokens (1: trained like the job's rows). Near
    # 0 the replay rows only anchor the KL term instead of training the model on its own greedy
    # answers, which alone cost 3 of the 57 general answers it knew (README, "Defaults on a real
    # base").
    replay_weight: float = 1.0
    # SFT, with kl_to_base: weight of a term that keeps the greedy choices of the model before
    # the job where they were close calls (its lead over the runner-up under 2 nats) on the
    # anchor rows' answers: a hinge on any shrinking of that lead
    # (training.trainer.trainers.margin_shrink); 0: off. Measured in bench/learning.py.
    keep_margin: float = 0.0
    # SFT: keep the LoRA update out of the input directions the anchor rows (the replay rows)
    # use: before training, and after every optimizer step, each LoRA layer's A matrix is
    # projected onto the complement of the subspace that carries this share of those rows'
    # input energy at that layer, so what the update adds is (nearly) zero on them and on
    # inputs like them (a null-space constraint, as in AlphaEdit, Fang et al. 2025, applied to
    # LoRA; training.trainer.trainers.AnchorNullSpace). 0: off; a new adapter only (with an
    # init_adapter it is skipped, with a note). Measured in bench/learning.py.
    anchor_null_space: float = 0.0
    # Serve the adapter only on prompts like those it trained on (training.trainer.scope): the
    # job stores its scope (its prompts' content words, weighted against general prompts) in the
    # manifest, and serving lets the base model, adapter off, answer a prompt whose similarity to
    # every trained prompt is below this threshold (0-1; 0: off, the adapter answers everything).
    # With an init_adapter, the scope beside its files (scope.json, written by the platform's
    # bundle) is merged in; an init_adapter without one answered every prompt, so the job has
    # no scope either (a note says so). Measured in bench/learning.py.
    scope_gate: float = 0.0
    # DPO: weight of a supervised loss (the chosen answer's mean token NLL) added to the
    # preference loss, as in RPO (Pang et al. 2024, "Iterative Reasoning Preference
    # Optimization"); TRL's `loss_type=["sigmoid", "sft"]` with these `loss_weights`. Plain DPO
    # only widens the gap between chosen and rejected, and on a small base it can do so by
    # making both unlikely: measured on SmolLM2-135M (README, "DPO that keeps content"); 0: off.
    sft_weight: float = 0.0
    # A held-out split smaller than this is reported (eval loss at every evaluation) but does not
    # pick the exported checkpoint or stop the run early: on a handful of rows the differences
    # between checkpoints are noise (a CI run exported step 133 of 252 on 6 rows, 1.077 vs 1.092).
    select_min_eval_rows: int = 16
    # Arithmetic of the forward and backward passes: "auto" is bf16 autocast on a GPU that has
    # bf16 (its frozen base weights loaded in bf16) and fp32 elsewhere; "bf16" also asks for bf16
    # autocast on a CPU (the weights stay fp32; measured on the small_base recipe it kept 50/57
    # against fp32's 53/57 and was not faster: README, "Precision on a CPU"); "fp32" turns
    # autocast off everywhere.
    precision: str = "auto"


@dataclass(frozen=True)
class JobConfig:
    """Everything one training run needs; no database, no Django."""

    job_id: str
    method: str
    base_model: BaseModelSpec
    data: DataSpec
    output_dir: str
    init_adapter: str | None = None
    lora: LoraSpec = field(default_factory=LoraSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    preset: str | None = None
    # Padding-free batches (SFT only; TRL's DPO trainer has it disabled in this version).
    padding_free: bool = True
    packing: bool = False
    gradient_checkpointing: bool = False
    deepspeed: dict[str, Any] | None = None
    resume: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if isinstance(self.lora.target_modules, tuple):
            data["lora"]["target_modules"] = list(self.lora.target_modules)
        return data


_TOP_KEYS = {f.name for f in fields(JobConfig)}
PRECISIONS = ("auto", "bf16", "fp32")
_TRAIN_KEYS = {f.name for f in fields(TrainSpec)}
_LORA_KEYS = {f.name for f in fields(LoraSpec)}


def load_job_config(path: str | Path, *, resume: bool | None = None) -> JobConfig:
    """Read and validate job.json; relative paths in it are relative to the file's folder.

    `resume`, when given, overrides the file's `resume` (the CLI's `--resume`).
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise JobConfigError(f"job config {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise JobConfigError(f"cannot read job config {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise JobConfigError(
            f"job config {path} is not valid JSON "
            f"(line {exc.lineno}, column {exc.colno}): {exc.msg}"
        ) from exc
    config = parse_job_config(raw, base_dir=path.parent)
    if resume is not None and resume != config.resume:
        config = replace(config, resume=resume)
    return config


def parse_job_config(raw: Any, *, base_dir: str | Path | None = None) -> JobConfig:
    """Validate a decoded job.json; raises JobConfigError naming the offending field."""
    if not isinstance(raw, dict):
        raise JobConfigError("job config must be a JSON object")
    _reject_unknown(raw, _TOP_KEYS, "")
    base = Path(base_dir) if base_dir is not None else Path.cwd()

    job_id = _require(raw, "job_id", str)
    if not job_id.strip():
        raise JobConfigError("job_id must not be empty")
    method = _require(raw, "method", str)
    if method not in METHODS:
        raise JobConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")

    base_model = _parse_base_model(raw.get("base_model"), base)
    data = _parse_data(raw.get("data"), base)

    preset = raw.get("preset")
    if preset is not None and preset not in PRESETS:
        raise JobConfigError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    preset_values = PRESETS.get(preset, {}) if preset else {}

    lora = _parse_lora(raw.get("lora", {}), preset_values)
    train = _parse_train(raw.get("train", {}), method, preset_values)
    if data.replay_prompts is not None and method != "sft":
        raise JobConfigError("data.replay_prompts applies to sft only (replay is supervised)")

    init_adapter = raw.get("init_adapter")
    if init_adapter is not None:
        init_adapter = str(_resolve(_typed("init_adapter", init_adapter, str), base))

    output_dir = raw.get("output_dir")
    output_dir = (
        str(_resolve(_typed("output_dir", output_dir, str), base)) if output_dir else str(base)
    )

    deepspeed = raw.get("deepspeed")
    if deepspeed is not None and not isinstance(deepspeed, dict):
        raise JobConfigError("deepspeed must be a JSON object (the DeepSpeed config) or null")
    if deepspeed is not None and train.anchor_null_space:
        raise JobConfigError("train.anchor_null_space needs whole LoRA matrices on each process; "
                             "it does not run under deepspeed (ZeRO partitions them)")

    return JobConfig(
        job_id=job_id,
        method=method,
        base_model=base_model,
        data=data,
        output_dir=output_dir,
        init_adapter=init_adapter,
        lora=lora,
        train=train,
        preset=preset,
        padding_free=_typed("padding_free", raw.get("padding_free", True), bool),
        packing=_typed("packing", raw.get("packing", False), bool),
        gradient_checkpointing=_typed(
            "gradient_checkpointing", raw.get("gradient_checkpointing", False), bool
        ),
        deepspeed=deepspeed,
        resume=_typed("resume", raw.get("resume", False), bool),
    )


def _parse_base_model(raw: Any, base: Path) -> BaseModelSpec:
    if not isinstance(raw, dict):
        raise JobConfigError("base_model must be an object with `path` or `hf_id`")
    _reject_unknown(raw, {"path", "hf_id", "revision"}, "base_model.")
    path, hf_id = raw.get("path"), raw.get("hf_id")
    if bool(path) == bool(hf_id):
        raise JobConfigError("base_model needs exactly one of `path` or `hf_id`")
    revision = raw.get("revision")
    if revision is not None:
        _typed("base_model.revision", revision, str)
    if path:
        resolved = _resolve(_typed("base_model.path", path, str), base)
        if not resolved.is_dir():
            raise JobConfigError(f"base_model.path {resolved} is not a folder")
        return BaseModelSpec(path=str(resolved), revision=revision)
    return BaseModelSpec(hf_id=_typed("base_model.hf_id", hf_id, str), revision=revision)


def _parse_data(raw: Any, base: Path) -> DataSpec:
    if not isinstance(raw, dict):
        raise JobConfigError("data must be an object with `train` (and optionally `eval`)")
    _reject_unknown(raw, {"train", "eval", "replay_prompts"}, "data.")
    train = _require(raw, "train", str, prefix="data.")
    eval_path = raw.get("eval")
    if eval_path is not None:
        eval_path = str(_resolve(_typed("data.eval", eval_path, str), base))
    replay_path = raw.get("replay_prompts")
    if replay_path is not None:
        replay_path = str(_resolve(_typed("data.replay_prompts", replay_path, str), base))
    return DataSpec(train=str(_resolve(train, base)), eval=eval_path, replay_prompts=replay_path)


def _parse_lora(raw: Any, preset: dict[str, Any]) -> LoraSpec:
    if not isinstance(raw, dict):
        raise JobConfigError("lora must be an object")
    _reject_unknown(raw, _LORA_KEYS, "lora.")
    values = dict(LORA_DEFAULTS)
    if "lora_r" in preset:
        values["r"] = preset["lora_r"]
    values.update(raw)
    r = _int("lora.r", values["r"], minimum=1)
    alpha = _number("lora.alpha", values["alpha"], minimum=0, exclusive=True)
    dropout = _number("lora.dropout", values["dropout"], minimum=0)
    if dropout >= 1:
        raise JobConfigError("lora.dropout must be below 1")
    targets = values["target_modules"]
    if isinstance(targets, str):
        if not targets:
            raise JobConfigError("lora.target_modules must not be empty")
    elif isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets):
        targets = tuple(targets)
    else:
        raise JobConfigError('lora.target_modules must be "all-linear" or a list of module names')
    return LoraSpec(r=r, alpha=alpha, dropout=float(dropout), target_modules=targets)


def _parse_train(raw: Any, method: str, preset: dict[str, Any]) -> TrainSpec:
    if not isinstance(raw, dict):
        raise JobConfigError("train must be an object")
    _reject_unknown(raw, _TRAIN_KEYS, "train.")
    values: dict[str, Any] = {f.name: f.default for f in fields(TrainSpec)}
    values.update(method_defaults(method))
    values.update({k: v for k, v in preset.items() if k in _TRAIN_KEYS})
    values.update(raw)
    patience = values["early_stopping_patience"]
    if method == "kto" and _int("train.batch_size", values["batch_size"], minimum=1) < \
            KTO_MIN_BATCH_SIZE:
        raise JobConfigError(
            f"train.batch_size must be at least {KTO_MIN_BATCH_SIZE} for kto (its KL reference "
            "point pairs each prompt with another completion of the same batch)"
        )
    replay_rows = _int("train.replay_rows", values["replay_rows"], minimum=0)
    kl_to_base = _number("train.kl_to_base", values["kl_to_base"], minimum=0)
    if (replay_rows or kl_to_base) and method == "kto":
        raise JobConfigError("train.replay_rows and train.kl_to_base apply to sft and dpo only")
    if method == "dpo" and bool(replay_rows) != bool(kl_to_base):
        # In a DPO job the replay rows are not trained on: they only anchor the KL term.
        raise JobConfigError("for dpo, train.replay_rows and train.kl_to_base go together (the "
                             "replay rows are the KL term's anchors, not pairs to train)")
    replay_weight = _number("train.replay_weight", values["replay_weight"], minimum=0,
                            exclusive=True)
    if replay_weight > 1:
        raise JobConfigError(f"train.replay_weight must be at most 1, got {replay_weight}")
    if replay_weight != 1 and method != "sft":
        raise JobConfigError("train.replay_weight applies to sft only (replay is supervised)")
    keep_margin = _number("train.keep_margin", values["keep_margin"], minimum=0)
    if keep_margin and not (method == "sft" and kl_to_base):
        raise JobConfigError("train.keep_margin applies to sft with train.kl_to_base (it acts on "
                             "the same anchor rows)")
    null_space = _number("train.anchor_null_space", values["anchor_null_space"], minimum=0)
    if null_space >= 1:
        raise JobConfigError("train.anchor_null_space is a share of the anchor rows' input "
                             f"energy, below 1, got {null_space}")
    if null_space and method != "sft":
        raise JobConfigError("train.anchor_null_space applies to sft only (its anchors are the "
                             "replay rows it trains beside)")
    scope_gate = _number("train.scope_gate", values["scope_gate"], minimum=0)
    if scope_gate > 1:
        raise JobConfigError("train.scope_gate is a similarity threshold between 0 and 1, got "
                             f"{scope_gate}")
    sft_weight = _number("train.sft_weight", values["sft_weight"], minimum=0)
    if sft_weight and method != "dpo":
        raise JobConfigError("train.sft_weight applies to dpo only (sft is supervised already; "
                             "kto has no chosen answer)")
    precision = values["precision"]
    if precision not in PRECISIONS:
        raise JobConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}, "
                             f"got {precision!r}")
    return TrainSpec(
        precision=precision,
        replay_rows=replay_rows,
        sft_weight=float(sft_weight),
        kl_to_base=float(kl_to_base),
        replay_weight=float(replay_weight),
        keep_margin=float(keep_margin),
        anchor_null_space=float(null_space),
        scope_gate=float(scope_gate),
        select_min_eval_rows=_int("train.select_min_eval_rows", values["select_min_eval_rows"],
                                  minimum=1),
        epochs=_number("train.epochs", values["epochs"], minimum=0, exclusive=True),
        learning_rate=_number(
            "train.learning_rate", values["learning_rate"], minimum=0, exclusive=True
        ),
        batch_size=_int("train.batch_size", values["batch_size"], minimum=1),
        warmup_ratio=_ratio("train.warmup_ratio", values["warmup_ratio"]),
        weight_decay=_number("train.weight_decay", values["weight_decay"], minimum=0),
        max_length=_int("train.max_length", values["max_length"], minimum=8),
        beta=_number("train.beta", values["beta"], minimum=0, exclusive=True),
        seed=_int("train.seed", values["seed"], minimum=0),
        eval_every=_int("train.eval_every", values["eval_every"], minimum=1),
        save_every=_int("train.save_every", values["save_every"], minimum=1),
        early_stopping_patience=None
        if patience is None
        else _int("train.early_stopping_patience", patience, minimum=1),
        gradient_accumulation_steps=_int(
            "train.gradient_accumulation_steps", values["gradient_accumulation_steps"], minimum=1
        ),
        log_every=_int("train.log_every", values["log_every"], minimum=1),
        max_grad_norm=_number("train.max_grad_norm", values["max_grad_norm"], minimum=0),
        keep_checkpoints=_int("train.keep_checkpoints", values["keep_checkpoints"], minimum=1),
    )


def _reject_unknown(raw: dict[str, Any], allowed: set[str], prefix: str) -> None:
    # A typo in job.json ("learning_rte") would otherwise silently train with a default.
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise JobConfigError(
            f"unknown field(s) {', '.join(prefix + k for k in unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def _require(raw: dict[str, Any], key: str, kind: type, prefix: str = "") -> Any:
    if key not in raw or raw[key] is None:
        raise JobConfigError(f"{prefix}{key} is required")
    return _typed(prefix + key, raw[key], kind)


def _typed(name: str, value: Any, kind: type) -> Any:
    # bool is an int subclass in Python; JSON true must not pass as a number or vice versa.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise JobConfigError(f"{name} must be a {kind.__name__}, got {json.dumps(value)}")
    return value


def _int(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    _typed(name, value, int)
    if value < minimum:
        raise JobConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _number(name: str, value: Any, *, minimum: float, exclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JobConfigError(f"{name} must be a number, got {json.dumps(value)}")
    if not math.isfinite(value):
        raise JobConfigError(f"{name} must be finite")
    if value < minimum or (exclusive and value == minimum):
        relation = "greater than" if exclusive else "at least"
        raise JobConfigError(f"{name} must be {relation} {minimum}, got {value}")
    return value


def _ratio(name: str, value: Any) -> float:
    value = _number(name, value, minimum=0)
    if value >= 1:
        raise JobConfigError(f"{name} must be below 1, got {value}")
    return float(value)


def _resolve(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path)
