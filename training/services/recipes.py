"""Which defaults a job gets on its base model, and whether the base can be trained on chats.

The seed's defaults (lr 2e-4, 3 epochs, batch 4) are written for billion-parameter bases. On a
small instruct base they teach nothing: measured on SmolLM2-135M-Instruct (README, "Defaults on a
real base"), lr 3e-4 x 6 epochs left 4/30 corrected facts learned, the seed's values fewer. So a
base configured with a recipe (settings.BASE_MODEL_RECIPES, name -> recipe) gets that recipe's
defaults for whatever the request does not state; what the request states always wins, and the
job's answer says which defaults applied.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings

from tenants.errors import InvalidInput

# Measured on SmolLM2-135M-Instruct, 60 corrections of 30 invented facts, plain TRL with
# completion-only loss (README, "Defaults on a real base"): lr 1e-3 on all linear layers learned
# 29/30 trained and 29/30 never-trained paraphrases after 5 epochs as after 8, and kept more of
# what the base knew at 5 (6/9) than at 8 (5/9); lr 3e-4 x 6 learned 4/30. Batch 8, no decay.
# Replay (training.trainer.replay; bench/learning.py with the product's trainer): with all 113
# replay prompts (101 finished answers) the same job kept 42 of the 57 evaluation-set questions
# the base answered right, against 36/57 without, and learned as much (29/30, 29/30). A KL term
# to the model before the job on the replay rows (kl_to_base 1.0) kept 50/57 and learned 30/30,
# 30/30; weight 5 kept no more and learned 23/30 (README, "Defaults on a real base"). The replay
# rows trained on their own greedy answers cost 3 of the 57 by themselves (replay and KL with no
# corrections at all kept 54/57); with their own loss weighted to 1e-6 (replay_weight), so that
# they only anchor the KL term, the job kept 53/57 and learned 30/30, 30/30. Up to 32 of the
# tenant's own served prompts (training.replay_traffic) are anchored the same way, in addition.
# The version is served only on prompts like those it trained on (scope_gate 0.5, training.
# trainer.scope), the base answering the others: with it the same job learned as much and kept
# more of the 57 (README, "A scope for each version").
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "small_base": {
        "sft": {"learning_rate": 1e-3, "epochs": 5, "batch_size": 8, "warmup_ratio": 0.05,
                "weight_decay": 0.0, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
                "target_modules": "all-linear", "replay_rows": 113,
                "kl_to_base": 1.0, "replay_weight": 1e-6, "replay_traffic_rows": 32,
                "scope_gate": 0.5},
        # The chosen answer's own loss beside DPO's (RPO): on a style preference (one sentence
        # instead of several) plain DPO kept 23 of the 60 general questions the base answered
        # right, and with sft_weight 1 51/60, learning the style as well (README, "DPO that
        # keeps content"; tests/trainer/test_trainer_preference_style.py).
        "dpo": {"sft_weight": 1.0},
    },
}
RECIPE_NOTES = {
    ("small_base", "sft"): (
        "Defaults for small bases applied: the seed's defaults (lr 2e-4, 3 epochs) are meant "
        "for billion-parameter models and teach a 135M model nothing; see the README's "
        "'Defaults on a real base'. The version answers only prompts like those it trains on "
        "(scope_gate 0.5); the base model answers the others ('A scope for each version')."
    ),
    ("small_base", "dpo"): (
        "Defaults for small bases applied: DPO with the chosen answer's own loss added "
        "(sft_weight 1), which on a 135M model kept the content that plain DPO lost; see the "
        "README's 'DPO that keeps content'."
    ),
}


def base_recipe(*, base_name: str, method: str) -> str | None:
    """The recipe configured for a base (settings.BASE_MODEL_RECIPES) when it sets anything for
    `method`, or None: the seed's defaults."""
    recipe = dict(settings.BASE_MODEL_RECIPES).get(base_name)
    return recipe if recipe in RECIPES and method in RECIPES[recipe] else None


def recipe_note(*, recipe: str, method: str) -> str:
    return RECIPE_NOTES[(recipe, method)]


def recipe_defaults(*, recipe: str | None, method: str) -> dict[str, Any]:
    """The parameters a recipe sets for a method (empty: the seed's defaults stand)."""
    if not recipe:
        return {}
    return dict(RECIPES[recipe].get(method, {}))


def base_model_trainable_check(*, spec: dict[str, Any]) -> None:
    """Refuse a base whose chat template cannot train (400), before anything is queued.

    Only a base whose folder is on this machine is checked (its tokenizer is read, a fraction of
    a second, cached per folder and modification time); a hub id or a folder that exists only on
    the cluster is checked by the trainer, which fails such a job as `bad_data`.
    """
    path = spec.get("path")
    if not path or not (Path(path) / "tokenizer_config.json").is_file():
        return
    problem = _template_problem(str(path), (Path(path) / "tokenizer_config.json").stat().st_mtime)
    if problem:
        raise InvalidInput(
            "base_model_not_chat_trainable",
            f"The base model {spec.get('name') or path!r} cannot be trained on conversations: "
            f"{problem}.",
            details={"base_model": [problem]},
        )


@lru_cache(maxsize=16)
def _template_problem(path: str, mtime: float) -> str | None:
    from training.trainer.chat import chat_template_problem

    return chat_template_problem(path)
