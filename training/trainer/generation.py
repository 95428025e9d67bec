"""Generation settings for a real chat model: its own generation config, its end-of-turn token.

Serving (adapters.runtime) builds every `generate()` call through `generation_kwargs`, so that:

* the model's `generation_config` (repetition penalty, sampling defaults, extra eos ids) is the
  starting point, as the model's authors shipped it;
* decoding is greedy unless the request asks for a temperature > 0 (then `top_p` from the request,
  else from the generation config);
* generation stops at the chat template's end-of-turn token (`<|im_end|>` for ChatML models such
  as SmolLM2 and Qwen2.5, `<|eot_id|>` for Llama 3, `<end_of_turn>` for Gemma, `<|end|>` for
  Phi-3) as well as at the tokenizer's eos: a template whose end-of-turn is not the eos would
  otherwise run on into an invented next turn;
* the reply's text never carries those tokens (`reply_clean`).

No Django here; the trainer's tests and serving use the same functions.
"""

from __future__ import annotations

import copy
from typing import Any

# End-of-turn markers of the common chat-template families (checked against the vocabulary).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|eom_id|>",
                      "</s>", "<|endoftext|>")


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value if v is not None]
    return [int(value)]


def end_of_turn_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Token ids that end the assistant's turn: the tokenizer's eos, the generation config's eos
    ids, and the end-of-turn markers the vocabulary knows and the chat template uses."""
    ids = _as_list(getattr(tokenizer, "eos_token_id", None))
    ids += _as_list(getattr(generation_config, "eos_token_id", None))
    template = getattr(tokenizer, "chat_template", None) or ""
    if not isinstance(template, str):
        template = ""
    vocab = tokenizer.get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in vocab and token in template:
            ids.append(int(vocab[token]))
    seen: list[int] = []
    for token_id in ids:
        if token_id not in seen:
            seen.append(token_id)
    return seen


def end_of_turn_strings(tokenizer: Any, generation_config: Any = None) -> list[str]:
    """The text of every end-of-turn token (to cut a reply that decodes them as text)."""
    strings = []
    for token_id in end_of_turn_token_ids(tokenizer, generation_config):
        text = tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(text, str) and text:
            strings.append(text)
    return strings


def generation_kwargs(model: Any, tokenizer: Any, *, max_new_tokens: int,
                      temperature: float = 0.0, top_p: float | None = None) -> dict[str, Any]:
    """Keyword arguments for `model.generate`: `{"generation_config": ...}`, a copy of the
    model's generation config with the request's length and sampling, stopping at the
    end-of-turn token (one config object, as transformers wants, rather than a config plus
    loose arguments)."""
    from transformers import GenerationConfig

    base_config = getattr(model, "generation_config", None)
    config = copy.deepcopy(base_config) if base_config is not None else GenerationConfig()
    eos_ids = end_of_turn_token_ids(tokenizer, config)
    config.eos_token_id = eos_ids
    config.pad_token_id = (tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                           else eos_ids[0])
    config.max_new_tokens = int(max_new_tokens)
    config.max_length = None  # max_new_tokens rules
    if temperature and temperature > 0:
        wanted_top_p = top_p if top_p is not None else getattr(config, "top_p", None)
        config.do_sample = True
        config.temperature = float(temperature)
        config.top_p = float(wanted_top_p) if wanted_top_p else 1.0
        config.top_k = (getattr(config, "top_k", None) or 0) if getattr(
            base_config, "do_sample", False) else 0
    else:
        config.do_sample = False
        config.temperature = None
        config.top_k = None
        config.top_p = None
    return {"generation_config": config}


def stop_token_ids(kwargs: dict[str, Any]) -> list[int]:
    """The ids that end generation in `generation_kwargs`' result."""
    return _as_list(kwargs["generation_config"].eos_token_id)


def reply_clean(text: str, end_strings: list[str]) -> str:
    """The reply without anything from the first end-of-turn marker on, trimmed."""
    for marker in end_strings:
        if marker and marker in text:
            text = text.split(marker, 1)[0]
    return text.strip()


def chat_batch(tokenizer: Any, conversations: list[list[dict[str, str]]], *, pad_id: int,
               device: Any = None) -> tuple[Any, Any, list[int]]:
    """Left-padded `(input_ids, attention_mask)` of the conversations' generation prompts, and
    each prompt's length in tokens."""
    import torch

    rows = [list(tokenizer.apply_chat_template(
        c, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
        for c in conversations]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask, [len(r) for r in rows]


def greedy_replies(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], *,
                   max_new_tokens: int, batch_size: int = 16) -> list[tuple[str, bool]]:
    """Greedy replies to many conversations in left-padded batches, as served.

    Each is `(reply, finished)`: `finished` says the reply reached an end-of-turn token within
    `max_new_tokens` (a cut reply must not be trained as a whole answer). The one batched path:
    the evaluation (adapters.runtime), replay (training.trainer.replay) and bench/learning.py.
    """
    import torch

    kwargs = generation_kwargs(model, tokenizer, max_new_tokens=max_new_tokens)
    pad_id = kwargs["generation_config"].pad_token_id
    stops = set(stop_token_ids(kwargs))
    ends = end_of_turn_strings(tokenizer, kwargs["generation_config"])
    device = next(model.parameters()).device
    replies: list[tuple[str, bool]] = []
    with torch.no_grad():
        for start in range(0, len(conversations), batch_size):
            ids, mask, _ = chat_batch(tokenizer, conversations[start:start + batch_size],
                                      pad_id=pad_id, device=device)
            output = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
            for row in output[:, ids.shape[1]:].tolist():
                cut = next((i for i, token in enumerate(row) if token in stops), None)
                text = tokenizer.decode(row if cut is None else row[:cut],
                                        skip_special_tokens=True)
                replies.append((reply_clean(text, ends), cut is not None))
    return replies


# Branch points greedy decoding passes with a lead under this (nats) are followed by
# `reply_branches`; a wider lead barely flips under training (README, "Which answers go").
FLIP_MAX_MARGIN = 2.0


def reply_branches(model: Any, tokenizer: Any, conversation: list[dict[str, str]],
                   is_right: Any, *, max_new_tokens: int,
                   max_margin: float = FLIP_MAX_MARGIN) -> dict[str, Any]:
    """How firmly the model holds a right answer: its greedy reply to one conversation, scored
    token by token until the reply is right (`is_right(text)`), as greedy decoding chose (the
    generation config's processors applied).

    Returns `reply`, `leads` (one `(chars before, chars after, lead in nats over the runner-up)`
    per token scored) and `flip_margin`: the smallest lead of a token whose runner-up, taken
    instead and continued greedily, gives a reply that is not right, with that `flipped_reply`
    (None, None when no branch under `max_margin` does). A reply that is not right to begin
    with (for example one that was right only in a padded batch) has flip margin 0: it is
    itself the wrong branch. One generation, plus one per branch point under `max_margin`."""
    import torch

    kwargs = generation_kwargs(model, tokenizer, max_new_tokens=max_new_tokens)
    ends = end_of_turn_strings(tokenizer, kwargs["generation_config"])
    device = next(model.parameters()).device

    def text_of(ids: list[int]) -> str:
        return reply_clean(tokenizer.decode(ids, skip_special_tokens=False), ends)

    scored = copy.deepcopy(kwargs["generation_config"])
    scored.output_scores = True
    scored.return_dict_in_generate = True
    prompt, mask, _ = chat_batch(tokenizer, [conversation],
                                 pad_id=kwargs["generation_config"].pad_token_id, device=device)
    with torch.no_grad():
        gen = model.generate(input_ids=prompt, attention_mask=mask, generation_config=scored)
    new = gen.sequences[0, prompt.shape[1]:].tolist()
    reply = text_of(new)
    if not is_right(reply):
        return {"reply": reply, "leads": [], "flip_margin": 0.0, "flipped_reply": reply}
    leads, flips, chars = [], [], 0
    for i in range(len(new)):
        if is_right(text_of(new[:i])):
            break  # the answer is already spelled: no later branch can unsay it
        before, chars = chars, len(tokenizer.decode(new[:i + 1], skip_special_tokens=False))
        logp = torch.log_softmax(gen.scores[i][0].float(), dim=-1)
        chosen = logp[new[i]].item()
        logp[new[i]] = float("-inf")
        runner_up = int(logp.argmax())
        lead = chosen - logp[runner_up].item()
        leads.append((before, chars, lead))
        if lead < max_margin:
            taken = new[:i] + [runner_up]
            if max_new_tokens - len(taken) > 0:
                rest = copy.deepcopy(kwargs["generation_config"])
                rest.max_new_tokens = max_new_tokens - len(taken)
                branch = torch.cat([prompt, torch.tensor([taken], device=device)], dim=1)
                with torch.no_grad():
                    more = model.generate(input_ids=branch,
                                          attention_mask=torch.ones_like(branch),
                                          generation_config=rest)
                taken = more[0, prompt.shape[1]:].tolist()
            flipped = text_of(taken)
            if not is_right(flipped):
                flips.append((lead, flipped))
    flip = min(flips, default=None)
    return {"reply": reply, "leads": leads, "flip_margin": flip[0] if flip else None,
            "flipped_reply": flip[1] if flip else None}
