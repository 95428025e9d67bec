"""The one schema of a training job's parameters: names, types, bounds, methods and defaults.

Three places need the same list: the train endpoints' serializers (`training.api.serializers`),
the dashboard's training form (`dashboard.forms`) and the resolution of a job's final
hyperparameters (`training.services.params`). They read it from here, so a new parameter or a
changed bound is one edit. Plain data and functions only (no Django, no DRF): each consumer
builds its own fields from `PARAMETERS`.

Bounds follow API.md. The messages of `training_params_errors` are DRF's own wording for the same
bounds, so the dashboard and the API refuse a value with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.trainer.config import KTO_MIN_BATCH_SIZE, LORA_DEFAULTS, method_defaults

SFT = "sft"
DPO = "dpo"
KTO = "kto"
METHODS = (SFT, DPO, KTO)
TARGET_MODULES_HELP = '"all-linear" or a list of module names such as ["q_proj", "v_proj"]'
# The readiness thresholds a request may lower or raise (the seed's values).
MIN_FEEDBACK_COUNT_DEFAULT = 50
MIN_PREFERENCE_PAIRS_DEFAULT = 100
MAX_LENGTH_DEFAULT = 1024
KTO_BATCH_SIZE_MESSAGE = (f"Ensure this value is greater than or equal to {KTO_MIN_BATCH_SIZE} "
                          "for KTO (its KL estimate pairs rows within a batch).")


@dataclass(frozen=True)
class Parameter:
    """One hyperparameter a job request may state.

    `kind` is "int", "float" or "json" (target_modules: a string or a list). `positive` means
    strictly greater than 0 (a learning rate of 0 trains nothing), checked apart from `minimum`
    because the API words it differently. `in_form` marks the ones the dashboard's form shows.
    """

    name: str
    kind: str
    methods: tuple[str, ...] = METHODS
    minimum: int | float | None = None
    maximum: int | float | None = None
    positive: bool = False
    nullable: bool = False
    label: str = ""
    help_text: str = ""
    in_form: bool = False


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("lora_r", "int", minimum=1, maximum=256, label="LoRA r",
              help_text="Rank: higher = more capacity", in_form=True),
    Parameter("lora_alpha", "int", minimum=1, maximum=512, label="LoRA alpha", in_form=True),
    Parameter("lora_dropout", "float", minimum=0.0, maximum=0.9),
    Parameter("target_modules", "json", help_text=TARGET_MODULES_HELP),
    Parameter("epochs", "int", minimum=1, maximum=100, in_form=True),
    Parameter("learning_rate", "float", maximum=0.01, positive=True, in_form=True),
    Parameter("batch_size", "int", minimum=1, maximum=512, in_form=True),
    Parameter("warmup_ratio", "float", minimum=0.0, maximum=0.5, in_form=True),
    Parameter("weight_decay", "float", minimum=0.0, maximum=1.0, in_form=True),
    Parameter("max_length", "int", minimum=16, maximum=32768),
    Parameter("seed", "int", minimum=0, maximum=2**31 - 1),
    Parameter("early_stopping_patience", "int", minimum=1, maximum=100, nullable=True),
    Parameter("beta", "float", methods=(DPO, KTO), maximum=10.0, positive=True,
              help_text="DPO and KTO: how far the adapter may move from the base",
              in_form=True),
    Parameter("sft_weight", "float", methods=(DPO,), minimum=0.0, maximum=10.0,
              label="Supervised loss weight (DPO)",
              help_text="Weight of the chosen answer's own loss added to DPO's, so that the "
                        "model keeps saying the preferred content instead of only moving away "
                        "from the rejected one (0: plain DPO)",
              in_form=True),
    Parameter("replay_rows", "int", methods=(SFT, DPO), minimum=0, maximum=1000,
              label="Replay rows (SFT, DPO)",
              help_text="How many of the model's own answers to general prompts train with the "
                        "job, so that it keeps what it knew (0: none); in a DPO job they are "
                        "not trained on, only kept close by the KL term (both needed)"),
    Parameter("kl_to_base", "float", methods=(SFT, DPO), minimum=0.0, maximum=100.0,
              label="KL to the base (SFT, DPO)",
              help_text="Weight of a term that keeps the replay rows' whole next-token "
                        "distribution close to the model before the job (0: off)"),
    Parameter("replay_weight", "float", methods=(SFT,), maximum=1.0, positive=True,
              label="Replay loss weight (SFT)",
              help_text="Loss weight of the replay rows' own tokens (1: trained like the job's "
                        "rows; near 0: they only anchor the KL term)"),
    Parameter("replay_traffic_rows", "int", methods=(SFT,), minimum=0, maximum=1000,
              label="Replay from traffic (SFT)",
              help_text="Up to this many of your own users' prompts (openings of your newest "
                        "conversations that drew no complaint) replayed with the job like the "
                        "general prompts (0: none)"),
    Parameter("scope_gate", "float", methods=(SFT, DPO, KTO), minimum=0.0, maximum=1.0,
              label="Scope gate",
              help_text="Serve the new version only on prompts this similar (0-1) to a prompt "
                        "it trained on; the base model answers the others, so what it learned "
                        "cannot change answers it was not taught (0: off, it answers every "
                        "prompt)"),
    Parameter("min_feedback_count", "int", methods=(SFT, KTO), minimum=1, maximum=10_000_000,
              label="Minimum feedback (SFT, KTO)", in_form=True),
    Parameter("min_preference_pairs", "int", methods=(DPO,), minimum=1, maximum=10_000_000,
              label="Minimum preference pairs (DPO)", in_form=True),
)
PARAMETERS_BY_NAME: dict[str, Parameter] = {p.name: p for p in PARAMETERS}


def parameters_for(*, method: str) -> tuple[Parameter, ...]:
    """The parameters a request for `method` may state, in the schema's order."""
    return tuple(p for p in PARAMETERS if method in p.methods)


def training_params_defaults(*, method: str) -> dict[str, Any]:
    """A method's defaults before any preset or request value (the seed's values).

    `seed` and `early_stopping_patience` have none here: the trainer's own defaults apply when a
    request leaves them out, and the job's stored parameters say only what was decided.
    """
    defaults: dict[str, Any] = {
        "lora_r": LORA_DEFAULTS["r"],
        "lora_alpha": LORA_DEFAULTS["alpha"],
        "lora_dropout": LORA_DEFAULTS["dropout"],
        "target_modules": LORA_DEFAULTS["target_modules"],
        "max_length": MAX_LENGTH_DEFAULT,
        **method_defaults(method),
    }
    if method in (SFT, KTO):
        defaults["min_feedback_count"] = MIN_FEEDBACK_COUNT_DEFAULT
    else:
        defaults["min_preference_pairs"] = MIN_PREFERENCE_PAIRS_DEFAULT
    return defaults


def _number_errors(parameter: Parameter, value: Any) -> list[str]:
    if parameter.maximum is not None and value > parameter.maximum:
        return [f"Ensure this value is less than or equal to {parameter.maximum}."]
    if parameter.minimum is not None and value < parameter.minimum:
        return [f"Ensure this value is greater than or equal to {parameter.minimum}."]
    if parameter.positive and not value > 0:
        return ["Must be greater than 0."]
    return []


def training_params_errors(*, method: str, params: dict[str, Any]) -> dict[str, list[str]]:
    """Per-parameter refusals of already-typed numeric values (empty when all are in bounds).

    For callers that coerced the types themselves (the dashboard's form); the API's serializers
    apply the same bounds through their fields. Names the method does not take are refused.
    """
    allowed = {p.name for p in parameters_for(method=method)}
    errors: dict[str, list[str]] = {}
    for name, value in params.items():
        parameter = PARAMETERS_BY_NAME.get(name)
        if parameter is None or name not in allowed:
            errors[name] = ["Unknown field."]
        elif value is None:
            if not parameter.nullable:
                errors[name] = ["This field may not be null."]
        elif name == "batch_size" and method == KTO and value < KTO_MIN_BATCH_SIZE:
            errors[name] = [KTO_BATCH_SIZE_MESSAGE]
        elif parameter.kind in ("int", "float"):
            problems = _number_errors(parameter, value)
            if problems:
                errors[name] = problems
    if method == DPO:
        errors.update({k: v for k, v in dpo_anchor_errors(params).items() if k not in errors})
    return errors


DPO_ANCHOR_MESSAGE = ("For DPO, replay_rows and kl_to_base go together: the replay rows are "
                      "not trained on, only kept close to the model before the job by the KL term.")


def dpo_anchor_errors(params: dict[str, Any]) -> dict[str, list[str]]:
    """A DPO request that states one of `replay_rows` and `kl_to_base` above 0 without the other
    is refused on the missing one (alone, either would do nothing)."""
    replay_rows, kl_to_base = params.get("replay_rows") or 0, params.get("kl_to_base") or 0
    if bool(replay_rows) == bool(kl_to_base):
        return {}
    return {"kl_to_base" if replay_rows else "replay_rows": [DPO_ANCHOR_MESSAGE]}


def dpo_anchored(params: dict[str, Any]) -> bool:
    """Whether a DPO job's resolved parameters turn on its anchors: replay rows kept close by the
    KL term (training.trainer.trainers.MeteredDPOTrainer). They are not trained on, so they need
    both `replay_rows` and `kl_to_base`; with either at 0 the job has none."""
    return bool(params.get("replay_rows")) and bool(params.get("kl_to_base"))
