"""One LoRA per batch row, in two matrix products per layer whatever the mix (the serving batch).

PEFT serves a batch whose rows need different adapters with `adapter_names`: every LoRA layer
then loops over the distinct adapters, selecting each one's rows, running its A and B and adding
them back. With 4 distinct adapters that is 4x the small operations per layer and per generated
token; on the real base (SmolLM2-135M, CPU, batch 4, 64 tokens) generation took 1.40x as long as
with one adapter for all rows. Here each row's A and B (B already multiplied by the adapter's
scaling) are gathered once per batch into (rows, in, r) and (rows, r, out) tensors, and every
layer adds `bmm(bmm(x, A), B)` to its base output: the same number of operations as one adapter,
whatever the mix. A row served by the base model gets zeros. Measured on the same batch: 1.01x
one adapter's time, with tokens identical to PEFT's mixed batch (`bench/serving.py` section 4
measures it through the product). A batch that is one adapter on every row uses that adapter's
matrices directly (no gathered copy), which is also leaner than PEFT's own forward.

Cost: the gathered copy holds one adapter's worth of weights per row of a mixed batch (about
19 MiB a row for SmolLM2-135M at r 16, all linear layers), freed when the batch ends.

Only plain LoRA on linear layers qualifies (no DoRA or other variant, no LoRA bias, nothing
merged, no `modules_to_save`, no layer whose forward something else already wraps, such as
accelerate's offload hooks); `rows_lora` answers None otherwise and the caller keeps PEFT's own
path. Pure torch + PEFT: no Django.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F


def _supported(model, names: set[str]) -> bool:
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.lora.layer import LoraLayer

    for name in names:
        config = model.peft_config.get(name)
        if config is None or getattr(config, "modules_to_save", None) \
                or getattr(config, "trainable_token_indices", None):
            return False
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        held = names & set(module.lora_A.keys())
        if not held:
            continue
        if type(module) is not LoraLinear or module.merged:
            return False
        if "forward" in vars(module):  # already wrapped (an accelerate offload hook): leave it
            return False
        if any(n in module.lora_variant or module.lora_bias.get(n) for n in held):
            return False
    return True


def rows_lora(model, names: Sequence[str | None]):
    """A context manager under which `model` (a PeftModel) serves row i of a batch of
    `len(names)` with adapter `names[i]` (None: the base model), or None when the adapters are
    not plain linear LoRA (then use PEFT's `adapter_names`)."""
    wanted = {n for n in names if n is not None}
    if not wanted or not _supported(model, wanted):
        return None
    return _patched(model, list(names))


@contextlib.contextmanager
def _patched(model, names: list[str | None]) -> Iterator[None]:
    from peft.tuners.lora.layer import Linear as LoraLinear

    rows = len(names)
    distinct = set(names)
    one = next(iter(distinct)) if len(distinct) == 1 else None
    patched = []
    try:
        with torch.no_grad():
            for module in model.modules():
                if type(module) is not LoraLinear:
                    continue
                held = [n for n in distinct if n is not None and n in module.lora_A]
                if not held:
                    forward = _base_only(module.base_layer)
                elif one is not None:
                    forward = _one(module.base_layer, module.lora_A[one].weight,
                                   module.lora_B[one].weight * module.scaling[one])
                else:
                    forward = _per_row(module, names, held, rows)
                module.forward = forward
                patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward  # the class's forward again


def _base_only(base):
    def forward(x, *args, **kwargs):
        return base(x, *args, **kwargs)
    return forward


def _one(base, a: torch.Tensor, b_scaled: torch.Tensor):
    def forward(x, *args, **kwargs):
        result = base(x, *args, **kwargs)
        return result + F.linear(F.linear(x.to(a.dtype), a), b_scaled).to(result.dtype)
    return forward


def _per_row(module, names: list[str | None], held: list[str], rows: int):
    first_a = module.lora_A[held[0]].weight
    rank = max(module.lora_A[n].weight.shape[0] for n in held)
    fan_in, fan_out = first_a.shape[1], module.lora_B[held[0]].weight.shape[0]
    a_rows = first_a.new_zeros(rows, fan_in, rank)
    b_rows = first_a.new_zeros(rows, rank, fan_out)
    for i, name in enumerate(names):
        if name in held:
            a = module.lora_A[name].weight
            r = a.shape[0]
            a_rows[i, :, :r] = a.T
            b_rows[i, :r, :] = (module.lora_B[name].weight * module.scaling[name]).T
    base = module.base_layer

    def forward(x, *args, **kwargs):
        result = base(x, *args, **kwargs)
        if x.dim() != 3 or x.shape[0] != rows:
            raise RuntimeError(f"rows_lora was set up for {rows} rows, got input {tuple(x.shape)}")
        lora = torch.bmm(torch.bmm(x.to(a_rows.dtype), a_rows), b_rows)
        return result + lora.to(result.dtype)
    return forward
