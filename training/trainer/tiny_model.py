"""The embedded default base model: a tiny Llama built offline in seconds.

`python -m training.trainer.tiny_model --out DIR` (or `build_tiny_base(DIR)`) writes a
Llama-shaped causal LM with a locally trained byte-level BPE tokenizer and a ChatML template, and
gives it "base knowledge": a short full fine-tune on the bundled Q&A pairs
(`assets/base_knowledge.jsonl`, copied next to the model) so that greedy generation answers them.
Tests use it to check that an adapter learns new facts *and* keeps what the base knew; the platform
uses it when no real model is configured, so everything runs without the model hub.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parent / "assets"
BASE_KNOWLEDGE = ASSETS / "base_knowledge.jsonl"
CORPUS = ASSETS / "corpus.txt"

SPECIAL_TOKENS = ["<|pad|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
PAD, EOS = "<|pad|>", "<|im_end|>"

# ml-notes: initializer_range 0.1 (not 0.02) lets the loss of such a small model actually fall;
# h256/4 layers learns 50 Q&A pairs with LoRA in a handful of epochs.
MODEL_SHAPE = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
    "initializer_range": 0.1,
    "tie_word_embeddings": True,
}
VOCAB_SIZE = 1024


def read_chat_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a chat JSONL file (one `{"messages": [...]}` object per line)."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def build_tokenizer(texts: list[str]) -> Any:
    """Byte-level BPE trained on `texts`, wrapped for transformers, with the ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from training.trainer.modeling import CHAT_TEMPLATE

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def _tokenize_chats(tokenizer: Any, records: list[dict[str, Any]]) -> list[tuple[list, list]]:
    out = []
    for record in records:
        encoded = tokenizer.apply_chat_template(
            record["messages"], return_dict=True, return_assistant_tokens_mask=True
        )
        out.append((list(encoded["input_ids"]), list(encoded["assistant_masks"])))
    return out


def _batch(examples: list[tuple[list, list]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, mask) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, : len(ids)] = torch.tensor(
            [t if m else -100 for t, m in zip(ids, mask, strict=True)]
        )
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def _all_answers_exact(model: Any, batch: dict[str, Any]) -> float:
    """Fraction of examples whose every answer token is the argmax under teacher forcing.

    That is exactly when greedy decoding reproduces the answer, at the cost of one forward pass.
    """
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    model.train()
    predicted = logits[:, :-1].argmax(-1)
    labels = batch["labels"][:, 1:]
    wrong = (predicted != labels) & (labels != -100)
    return float((~wrong.any(dim=1)).float().mean())


def build_tiny_base(
    out_dir: str | Path,
    seed: int = 0,
    *,
    epochs: int = 40,
    learning_rate: float = 1e-3,
    log: bool = False,
) -> Path:
    """Build, pre-train and save the tiny base model into `out_dir`; returns the folder.

    Deterministic for a given seed. The pre-training budget is fixed (about 15 s on two idle CPU
    cores): every answer is reproduced greedily after ~16 epochs, and the longer run leaves the
    knowledge sturdier under an adapter (measured: 88% of it kept after 50 corrections, against
    80% for a 24-epoch base). The result is in `tiny_base.json` (`base_knowledge_exact_match`).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    started = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(seed)
    torch.manual_seed(seed)

    records = read_chat_jsonl(BASE_KNOWLEDGE)
    texts = CORPUS.read_text(encoding="utf-8").splitlines()
    texts += [m["content"] for r in records for m in r["messages"]]
    tokenizer = build_tokenizer(texts)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **MODEL_SHAPE,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id

    examples = _tokenize_chats(tokenizer, records)
    full_batch = _batch(examples, tokenizer.pad_token_id)
    batch_size = 8
    steps_per_epoch = -(-len(examples) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    # One warm-up-then-anneal cycle: a constant 2e-3 oscillates (measured: 0.6-0.96 exact match
    # after 150 epochs), the annealed run reaches 100% in ~16 epochs and stays there.
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=epochs * steps_per_epoch, pct_start=0.1
    )
    rng = random.Random(seed)
    model.train()
    for epoch in range(1, epochs + 1):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            chunk = [examples[i] for i in order[start : start + batch_size]]
            loss = model(**_batch(chunk, tokenizer.pad_token_id)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        if log:
            print(f"epoch {epoch}: loss {loss.item():.4f}", file=sys.stderr)
    exact = _all_answers_exact(model, full_batch)

    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    shutil.copyfile(BASE_KNOWLEDGE, out / "base_knowledge.jsonl")
    info = {
        "kind": "synapsex-tiny-llama",
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "pretrain_epochs": epochs,
        "base_knowledge_exact_match": exact,
        "build_seconds": round(time.monotonic() - started, 2),
        **MODEL_SHAPE,
    }
    (out / "tiny_base.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the model into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    out = build_tiny_base(args.out, seed=args.seed, log=args.verbose)
    print(json.dumps(json.loads((out / "tiny_base.json").read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
