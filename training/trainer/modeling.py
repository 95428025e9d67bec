"""Loading a base model (+ adapter) and greedy replies: for the trainer, the tests and serving.

The serving side (adapters.serving) reuses `load_model_and_tokenizer` and `generate_reply`, so what
a test checks after training is exactly what a tenant's user would be served.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

# ChatML with `{% generation %}` markers around what the assistant says, end-of-turn token
# included: TRL's assistant-only loss reads the markers, and a model that is never trained on
# `<|im_end|>` never learns to stop.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def offline_mode() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) says never to reach the hub."""
    values = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(v.strip().lower() in {"1", "true", "yes", "on"} for v in values)


def load_tokenizer(name_or_path: str | Path, *, revision: str | None = None) -> Any:
    """The base model's tokenizer, with a pad token (falls back to eos, as TRL does)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        str(name_or_path), revision=revision, local_files_only=offline_mode()
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    dtype: torch.dtype | None = None,
) -> Any:
    """A causal LM from a local folder or a hub id; fp32 unless a dtype is asked for."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(name_or_path),
        revision=revision,
        dtype=dtype or torch.float32,
        local_files_only=offline_mode(),
    )


def load_model_and_tokenizer(
    path: str | Path,
    adapter_dir: str | Path | None = None,
    *,
    revision: str | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> tuple[Any, Any]:
    """Base model (plus a LoRA adapter when `adapter_dir` is given) ready for inference.

    Returns `(model, tokenizer)`; the model is in eval mode. With an adapter it is a `PeftModel`
    whose adapter is named "default", so serving can `load_adapter` more versions next to it.
    """
    tokenizer = load_tokenizer(path, revision=revision)
    model = load_base_model(path, revision=revision, dtype=dtype)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    if device is not None:
        model = model.to(device)
    model.eval()
    return model, tokenizer


@torch.no_grad()
def generate_reply(
    model: Any,
    tokenizer: Any,
    messages: list[dict[str, str]],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
) -> str:
    """The assistant's next message for a chat; greedy (deterministic) when temperature is 0."""
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    device = next(model.parameters()).device
    input_ids = encoded["input_ids"].to(device)
    attention_mask = encoded["attention_mask"].to(device)
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    new_tokens = output[0, input_ids.shape[1] :]
    return tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
