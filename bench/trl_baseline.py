"""The baseline of benchmark 1: a bare TRL LoRA SFT script, written as the TRL docs show it.

    dataset = load_dataset("json", data_files=..., split="train")
    trainer = SFTTrainer(model=path, train_dataset=dataset,
                         args=SFTConfig(...), peft_config=LoraConfig(...))
    trainer.train()

Deviations from the docs' defaults, each to make the baseline as fast as the platform could be,
never slower: `bf16=False` (a CPU; TRL 1.x defaults to bf16, which fails there), and
`gradient_checkpointing=False` (TRL's default is on and costs ~30% on a CPU for nothing at these
sizes; the platform turns it off too). Everything else is TRL's default: padded batches (no
packing, no padding-free), full-sequence loss on conversational data.

`--padding-free`: TRL at its best on data of mixed lengths, as its docs show it
(`SFTConfig(padding_free=True)`): TRL's own collator concatenates each batch into one row with
`position_ids` and no attention mask, so no padding is computed. TRL's docs pair padding-free and
packing with FlashAttention, which a CPU does not have; transformers' SDPA path reads the
sequence boundaries from `position_ids` (a block-diagonal causal mask), the same attention the
platform's padding-free batches use on a CPU. Packing (`packing=True`, BFD) is not used: it
also cuts and regroups examples into `max_length` rows, which changes the number of optimizer
steps and what each step trains, so the two sides would no longer train the same batches.
TRL refuses `max_length` with padding-free batches unless it packs (it would not enforce it), so
that side runs with `max_length=None`: the few examples longer than `max_length` train whole
there; the figure is real tokens per second, counted on each side, so it stays comparable.

`--attention packed_sdpa` (benchmark 1's decomposition side, not a baseline): the same TRL run on
the platform's attention for padding-free rows, to show how much of the platform's lead is that
attention path and how much is the rest of its trainer.

Measurement hooks only (they change nothing the trainer computes): a wrapper around TRL's own
collator that counts real (attention-mask) and computed (tensor) tokens, and a callback that
stamps the time and the token count at the end of every optimizer step. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

START = time.perf_counter()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="JSONL of {messages: [...]}")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bf16", action="store_true", help="on a GPU, as the platform does there")
    p.add_argument("--padding-free", action="store_true",
                   help="TRL's own padding-free batches (SFTConfig(padding_free=True))")
    p.add_argument("--attention", default=None,
                   help="attn_implementation for the model (default: transformers' choice); "
                        "packed_sdpa is the platform's (training/trainer/attention.py)")
    args = p.parse_args()
    if args.attention == "packed_sdpa":
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from training.trainer.attention import register

        register()

    os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(args.out, "hf-datasets"))
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    dataset = load_dataset("json", data_files=args.data, split="train")
    trainer = SFTTrainer(
        model=args.model,
        train_dataset=dataset,
        args=SFTConfig(
            output_dir=args.out,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            warmup_steps=0.1,
            weight_decay=0.01,
            # TRL refuses max_length with padding_free unless packing: it would not enforce it.
            max_length=None if args.padding_free else args.max_length,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            bf16=args.bf16,
            padding_free=args.padding_free,
            model_init_kwargs=({"attn_implementation": args.attention} if args.attention
                               else None),
            gradient_checkpointing=False,
            seed=args.seed,
            disable_tqdm=True,
        ),
        peft_config=LoraConfig(
            r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
            target_modules="all-linear", task_type="CAUSAL_LM",
        ),
    )

    # Per batch, in order: the dataloader may collate one batch ahead of the step that uses
    # it, so tokens are attributed by batch index (one batch per optimizer step), not by time.
    batches: list[tuple[int, int]] = []
    inner = trainer.data_collator

    def counting_collator(examples):
        batch = inner(examples)
        mask = batch.get("attention_mask")
        computed = int(batch["input_ids"].numel())
        batches.append((int(mask.sum()) if mask is not None else computed, computed))
        return batch

    trainer.data_collator = counting_collator
    stamps: list[tuple[int, float]] = []
    first_step_wall: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            stamps.append((state.global_step, time.perf_counter()))
            if not first_step_wall:
                first_step_wall.append(time.time())

    trainer.add_callback(Stamp())
    setup_s = time.perf_counter() - START
    trainer.train()
    trainer.save_model(os.path.join(args.out, "adapter"))
    print(json.dumps({"steps": stamps, "batches": batches[:len(stamps)],
                      "setup_s": setup_s, "first_step_wall": first_step_wall[0],
                      "total_s": time.perf_counter() - START}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
