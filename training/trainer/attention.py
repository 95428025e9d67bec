"""Attention over padding-free batches without a dense mask, for machines without FlashAttention.

A padding-free batch lays a step's examples end to end in one row; `position_ids` restart at 0
where each example starts. FlashAttention's varlen kernel reads those boundaries and computes only
each example's own causal triangle. Without it (a CPU, or a GPU without `flash-attn`),
transformers' SDPA path builds a dense block-diagonal causal mask over the whole row and computes
every query against every key of the row, masked or not: quadratic in the row's length, although
each token attends only within its own example.

`packed_sdpa` is the same SDPA kernel run once per example, causal, on that example's slice of
the row: the sum of each example's square instead of the row's square, with the same results (the
tests compare them). Where the batch is not a packed row (padded batches, generation, a sliding
window), it is exactly transformers' SDPA with the mask it was given.

`use_packed_attention(model)` switches a loaded model to it when the model is on SDPA; a model
that already has FlashAttention (or anything else) keeps it. The trainer does so for padding-free
SFT only.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "packed_sdpa"


def segment_lengths(position_ids: torch.Tensor | None, length: int) -> list[int] | None:
    """The lengths of the examples laid end to end in a single row, from where `position_ids`
    restart; None when the row holds one example or there is no single row to read."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[0] != 1 \
            or position_ids.shape[1] != length or length < 2:
        return None
    row = position_ids[0]
    starts = torch.nonzero(row[1:] != row[:-1] + 1).flatten() + 1
    if starts.numel() == 0:
        return None
    return _between([0, *starts.tolist(), length])


def _lengths_from_cumulative(cumulative: torch.Tensor | None, length: int) -> list[int] | None:
    """The example lengths from the cumulative boundaries TRL's padding-free collator passes for
    varlen kernels (`cu_seq_lens_q`), when they describe this row."""
    if cumulative is None or cumulative.dim() != 1 or cumulative.numel() < 3:
        return None
    bounds = cumulative.tolist()
    if bounds[0] != 0 or bounds[-1] != length:
        return None
    return _between(bounds)


def _between(bounds: list[int]) -> list[int]:
    """The lengths between consecutive boundaries."""
    return [end - start for start, end in zip(bounds[:-1], bounds[1:], strict=True)]


def packed_sdpa_forward(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, dropout: float = 0.0,
                        scaling: float | None = None, **kwargs: Any
                        ) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature (query/key/value: batch, heads, length, dim;
    returns batch, length, heads, dim)."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    lengths = None
    if (query.shape[0] == 1 and query.shape[2] == key.shape[2]
            and getattr(module, "is_causal", True)
            and not getattr(module, "sliding_window", None)
            and kwargs.get("position_bias") is None and kwargs.get("softcap") is None):
        lengths = (_lengths_from_cumulative(kwargs.get("cu_seq_lens_q"), query.shape[2])
                   or segment_lengths(kwargs.get("position_ids"), query.shape[2]))
    if lengths is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)

    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    outputs = []
    start = 0
    for length in lengths:
        end = start + length
        outputs.append(torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
            dropout_p=dropout, scale=scaling, is_causal=length > 1))
        start = end
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def register() -> None:
    """Make `packed_sdpa` a transformers attention implementation (idempotent). Its masks are
    SDPA's: the packed path ignores them, the others use them as SDPA does."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, packed_sdpa_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def use_packed_attention(model: Any) -> bool:
    """Switch `model` (a transformers model, or a PEFT model around one) from SDPA to
    `packed_sdpa`; True when it did. Models on another implementation are left as they are."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    register()
    try:
        base.set_attn_implementation(NAME)
    except (ValueError, AttributeError):  # a model that cannot switch keeps SDPA
        return False
    return config._attn_implementation == NAME
