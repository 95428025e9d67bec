"""Real chat templates of six model families, applied to the tiny test base (see templates/).

Each family's special tokens are added to the tiny BPE tokenizer (and the tiny model's embeddings
resized), so that an end-of-turn marker such as `<|eot_id|>` is one token, as in the real model.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class Family:
    name: str
    template: str  # file under templates/
    end_of_turn: str  # what closes an assistant turn: trained with the answer
    specials: tuple[str, ...] = ()  # added to the tiny tokenizer as special tokens
    tokens: dict[str, str] = field(default_factory=dict)  # bos_token / eos_token
    system: bool = True  # False: the template refuses a system message

    @property
    def chat_template(self) -> str:
        return (TEMPLATES / self.template).read_text(encoding="utf-8")


FAMILIES = [
    Family("smollm2", "smollm2-135m-instruct.jinja", "<|im_end|>"),
    Family("qwen2.5", "qwen2.5-0.5b-instruct.jinja", "<|im_end|>"),
    Family(
        "llama3",
        "llama-3.2-3b-instruct.jinja",
        "<|eot_id|>",
        ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    ),
    Family(
        "mistral",
        "mistral-nemo-instruct-2407.jinja",
        "</s>",
        ("<s>", "</s>", "[INST]", "[/INST]"),
        {"bos_token": "<s>", "eos_token": "</s>"},
    ),
    Family(
        "gemma2",
        "gemma-2-2b-it.jinja",
        "<end_of_turn>",
        ("<bos>", "<start_of_turn>", "<end_of_turn>"),
        {"bos_token": "<bos>", "eos_token": "<end_of_turn>"},
        system=False,
    ),
    Family(
        "phi3.5",
        "phi-3.5-mini-instruct.jinja",
        "<|end|>",
        ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
        {"eos_token": "<|endoftext|>"},
    ),
]


def family_tokenizer(tiny_base: Path, family: Family) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    if family.specials:
        tokenizer.add_tokens(list(family.specials), special_tokens=True)
    for name, value in family.tokens.items():
        setattr(tokenizer, name, value)
    tokenizer.chat_template = family.chat_template
    return tokenizer


def build_family_base(tiny_base: Path, family: Family, out: Path) -> Path:
    """A copy of the tiny base whose tokenizer speaks `family`'s template."""
    from transformers import AutoModelForCausalLM

    if out.exists():
        shutil.rmtree(out)
    tokenizer = family_tokenizer(tiny_base, family)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_base))
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
