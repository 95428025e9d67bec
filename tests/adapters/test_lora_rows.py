"""`adapters.lora_rows`: one LoRA per batch row in two batched products per layer (the serving
batch's path for plain linear LoRA). On the real instruct base, with adapters of different ranks
on different modules and rows served by the base model: every row's logits are the ones PEFT
computes for that row alone, greedy tokens are PEFT's mixed batch's, and anything but plain LoRA
is left to PEFT."""

from __future__ import annotations

import pytest
import torch

from adapters.lora_rows import rows_lora

PROMPTS = ["What is the capital of France?", "Name three colours of the rainbow.",
           "What is 2 plus 2?", "Say hello in French."]


@pytest.fixture(scope="module")
def peft_model(real_base_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(3)
    tokenizer = AutoTokenizer.from_pretrained(str(real_base_path))
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(real_base_path))
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16,
                                             target_modules=["q_proj", "v_proj", "up_proj"]),
                           adapter_name="wide")
    model.add_adapter("narrow", LoraConfig(r=4, lora_alpha=16, use_rslora=True,
                                           target_modules=["k_proj", "o_proj", "down_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(torch.randn_like(param) * 0.03)
    model.eval()
    batch = tokenizer.apply_chat_template([[{"role": "user", "content": p}] for p in PROMPTS],
                                          add_generation_prompt=True, padding=True,
                                          return_tensors="pt", return_dict=True)
    return model, tokenizer, batch


def _alone(model, batch, names):
    """Each row's logits from PEFT's own forward with only that row's adapter (or none)."""
    rows = []
    with torch.no_grad():
        for i, name in enumerate(names):
            one = {k: v[i:i + 1] for k, v in batch.items()}
            if name is None:
                with model.disable_adapter():
                    rows.append(model(**one).logits)
            else:
                model.set_adapter(name)
                rows.append(model(**one).logits)
    return torch.cat(rows)


def test_each_row_gets_its_own_adapter_or_the_base(peft_model):
    model, _, batch = peft_model
    names = ["wide", None, "narrow", "wide"]
    expected = _alone(model, batch, names)
    with torch.no_grad(), rows_lora(model, names):
        got = model(**batch).logits
    # The adapters really change the answer, differently: a row on the wrong one would show.
    with torch.no_grad(), model.disable_adapter():
        base = model(**batch).logits
    assert (expected[0] - base[0]).abs().max() > 0.5
    assert (expected[2] - base[2]).abs().max() > 0.5
    mask = batch["attention_mask"].bool()
    assert torch.allclose(got[mask], expected[mask], atol=1e-4), \
        (got[mask] - expected[mask]).abs().max()
    # Afterwards every layer runs PEFT's own forward again.
    assert not any("forward" in vars(m) for m in model.modules())


def test_one_adapter_on_every_row_matches_peft(peft_model):
    model, _, batch = peft_model
    model.set_adapter("narrow")
    with torch.no_grad():
        expected = model(**batch).logits
        with rows_lora(model, ["narrow"] * 4):
            got = model(**batch).logits
    assert torch.allclose(got, expected, atol=1e-4)


def test_greedy_tokens_are_those_of_peft_mixed_batch(peft_model):
    model, tokenizer, batch = peft_model
    names = ["narrow", "wide", None, "narrow"]
    kwargs = {"max_new_tokens": 16, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    with torch.no_grad():
        expected = model.generate(**batch, adapter_names=[n or "__base__" for n in names],
                                  **kwargs)
        with rows_lora(model, names):
            got = model.generate(**batch, **kwargs)
    print("greedy rows:", tokenizer.batch_decode(got[:, batch["input_ids"].shape[1]:]))
    assert torch.equal(got, expected)


def test_a_batch_of_another_size_is_refused_not_misassigned(peft_model):
    model, _, batch = peft_model
    with rows_lora(model, ["wide", "narrow"]), pytest.raises(RuntimeError, match="2 rows"):
        model(**batch)


def test_anything_but_plain_linear_lora_is_left_to_peft(peft_model):
    from peft import LoraConfig

    model, _, _ = peft_model
    assert rows_lora(model, [None, None]) is None  # nothing to add: the caller disables
    model.add_adapter("dora", LoraConfig(r=4, target_modules=["q_proj"], use_dora=True))
    try:
        assert rows_lora(model, ["wide", "dora"]) is None
        assert rows_lora(model, ["wide", "narrow"]) is not None
    finally:
        model.delete_adapter("dora")
    # A layer whose forward something else already wraps (accelerate's offload hooks do): left
    # to PEFT, whose forward the wrapper calls.
    from peft.tuners.lora.layer import Linear as LoraLinear

    layer = next(m for m in model.modules() if isinstance(m, LoraLinear) and "wide" in m.lora_A)
    layer.forward = layer.forward  # an instance-level wrapper, as add_hook_to_module installs
    try:
        assert rows_lora(model, ["wide", "narrow"]) is None
    finally:
        del layer.forward
