"""Which tokens of a chat are the assistant's answer, for any chat template.

The loss mask (SFT) and the completion (DPO) are built from two renderings of the model's own chat
template, not from `{% generation %}` markers (only the platform's tiny base has those; the
templates real models ship - ChatML/SmolLM2/Qwen2.5, Llama 3, Mistral, Gemma, Phi-3 - have none):

    prompt = template(history, add_generation_prompt=True)   what the model is served
    full   = template(history + [answer])                    the conversation with the answer

The answer's part is `full[len(prompt):]`, cut right after the end-of-turn marker that follows the
answer's content (`<|im_end|>`, `<|eot_id|>`, `</s>`, `<end_of_turn>`, `<|end|>`): what the
template adds after it (a newline, Phi-3's trailing `<|endoftext|>`) is not something the model
says, so it is neither trained nor kept in the sequence. When the full conversation does not
extend the prompt as text (Mistral's templates move the system message to the last user turn),
the answer is found in the full rendering and appended to the served prompt; a template where
neither works is a `ChatTemplateError`. Tokens: the tokenizer's own tokenization of prompt + answer
when the prompt's tokens are a prefix of it (they are for every template above), else the two
pieces tokenized separately (exactly what serving feeds the model: the prompt's tokens, then the
generated ones).

Only the LAST assistant turn of a conversation trains. The platform's examples are a conversation
history plus the one answer a user corrected or rated; the earlier assistant turns are what the
model said then, which nobody reviewed, so they are context, not targets. (A curated multi-turn
dataset conversation therefore teaches its final answer; split it into one record per answer to
train every turn.)

Imports nothing heavy: the tokenizer is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_MARKER = re.compile(r"\s*\S+")
PROBE = [{"role": "user", "content": "What is the capital of France?"}]
PROBE_ANSWER = "The capital of France is Paris."


class ChatTemplateError(ValueError):
    """The chat template cannot be used to tell an answer's tokens from its prompt's."""


@dataclass(frozen=True)
class Turn:
    """One assistant answer after a history, as token ids.

    `prompt_ids + answer_ids` is the training sequence; `answer_ids` are the trained tokens (the
    answer's content and the end-of-turn marker). `marker` is the text of the end-of-turn marker
    found after the content ("" when the template closes the turn with nothing).
    """

    prompt_ids: list[int]
    answer_ids: list[int]
    marker: str


def render(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
    """The template's text for `messages`; any failure of the template is a ChatTemplateError."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError("the tokenizer has no chat template")
    try:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as exc:  # noqa: BLE001 - the template is the model's; report what it said
        raise ChatTemplateError(f"the chat template failed: {exc}") from exc
    if not isinstance(text, str):
        raise ChatTemplateError("the chat template did not render text")
    return text


def assistant_turn(tokenizer: Any, history: list[dict[str, str]], answer: str) -> Turn:
    """Token ids of `history` as a prompt and of `answer` as the assistant's reply to it.

    The prompt is always the served one: `template(history, add_generation_prompt=True)`.
    """
    prompt_text = render(tokenizer, history, generation_prompt=True)
    full_text = render(
        tokenizer, [*history, {"role": "assistant", "content": answer}], generation_prompt=False
    )
    core = answer.strip()
    if full_text.startswith(prompt_text):
        added = full_text[len(prompt_text) :]
        lead = len(added) - len(added.lstrip())
        # Usually the answer starts the added text; else (a template that adds a header of its
        # own) its first occurrence.
        start = lead if added.startswith(core, lead) else added.find(core)
    else:
        added, start = _answer_in_other_rendering(prompt_text, full_text, core), 0
    if start < 0:
        # The template changed the content beyond trimming; train on all it added, less the
        # trailing whitespace.
        kept, marker = added.rstrip(), ""
    else:
        end = start + len(core)
        match = _MARKER.match(added, end)
        kept = added[: match.end()] if match else added[:end]
        marker = kept[end:].strip()
    if not kept.strip():
        raise ChatTemplateError("the chat template renders no assistant content")

    prompt_ids = _ids(tokenizer, prompt_text)
    joint = _ids(tokenizer, prompt_text + kept)
    if joint[: len(prompt_ids)] == prompt_ids:
        answer_ids = joint[len(prompt_ids) :]
    else:  # a token merges across the boundary: tokenize the pieces as serving would
        answer_ids = _ids(tokenizer, kept)
    return Turn(prompt_ids=prompt_ids, answer_ids=answer_ids, marker=marker)


def _answer_in_other_rendering(prompt_text: str, full_text: str, core: str) -> str:
    """The answer and what follows it, when the full conversation does not extend the prompt.

    Some templates render the history differently once an answer follows it (Mistral's put the
    system message into the LAST user turn, so it moves or vanishes when an answer is added).
    The model is served the prompt, so the sequence is the prompt followed by the answer as the
    full rendering closes it; accepted only when the text just before the answer ends the same
    way as the prompt (the assistant's header or `[/INST]`), i.e. the answer really follows it.
    """
    start = full_text.rfind(core)
    if start < 0 or not core:
        raise ChatTemplateError("the chat template renders no assistant content")
    before = full_text[:start].rstrip()
    shared = 0
    for a, b in zip(reversed(before), reversed(prompt_text.rstrip()), strict=False):
        if a != b:
            break
        shared += 1
    if shared < 2:
        raise ChatTemplateError(
            "the chat template renders the conversation before the answer differently from the "
            "conversation with it, so the answer's tokens cannot be told apart"
        )
    return full_text[start:]


def split_last_answer(
    messages: list[dict[str, str]],
) -> tuple[list[dict[str, str]], str]:
    """(history, answer): the last assistant message and everything before it.

    Messages after the last assistant turn would follow every trained token, so they teach nothing
    and are left out.
    """
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    history = [{"role": m["role"], "content": m["content"]} for m in messages[:last]]
    return history, messages[last]["content"]


def chat_template_problem(path_or_tokenizer: str | Path | Any) -> str | None:
    """Why a base model cannot be trained on chats, in words for the user; None when it can.

    Takes the base model's folder (or hub id) or its loaded tokenizer. Renders a one-question
    probe through `assistant_turn`: no chat template, a template that fails or renders no
    assistant content, and one that closes the answer with no end-of-turn marker (a model trained
    on it would never learn to stop) are refused. Job creation calls it to refuse such a base
    with a 400 before anything is queued; the trainer calls it again before loading the model.
    """
    tokenizer = path_or_tokenizer
    if isinstance(path_or_tokenizer, str | Path):
        from training.trainer.modeling import load_tokenizer

        try:
            tokenizer = load_tokenizer(path_or_tokenizer)
        except Exception as exc:  # noqa: BLE001 - any loader failure is the reason
            return f"its tokenizer cannot be loaded: {' '.join(str(exc).split())[:300]}"
    try:
        turn = assistant_turn(tokenizer, PROBE, PROBE_ANSWER)
    except ChatTemplateError as exc:
        return str(exc)
    if not turn.marker:
        return (
            "the chat template ends an assistant turn with no end-of-turn marker, so a trained "
            "model would not learn to stop"
        )
    return None


def _ids(tokenizer: Any, text: str) -> list[int]:
    # The rendered text already holds the template's special tokens (BOS included where the
    # template puts it); apply_chat_template tokenizes it the same way.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
