"""TRL trainer subclasses: per-example weights, token accounting, NaN guard; and the callbacks.

Kept apart from the orchestration in `run.py` so the TRL-version-specific code sits in one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from trl import DPOTrainer, KTOTrainer, SFTTrainer

from training.trainer.errors import NAN_LOSS, TrainingFailure
from training.trainer.events import EventWriter, Stopwatch, memory_snapshot

META_PREFIX = "synx_"


class MeteredCollator:
    """Wraps a TRL collator; adds counts (and SFT per-token weights and anchor marks) under `synx_`
    keys.

    The keys are popped again in `compute_loss` before the model sees the batch. Counting here is
    the one place that knows both the real sequence lengths and the padded tensor.
    """

    def __init__(self, inner: Callable[[list[dict[str, Any]]], dict[str, Any]], *, weights: bool,
                 anchors: bool = False):
        self.inner = inner
        self.weights = weights
        self.anchors = anchors

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        input_ids = batch["input_ids"]
        if "attention_mask" in batch:
            real = int(batch["attention_mask"].sum())
        else:  # padding-free: one flattened row, padded at most to a multiple
            real = sum(len(e["input_ids"]) for e in examples)
        samples = sum(len(e["seq_lengths"]) if "seq_lengths" in e else 1 for e in examples)
        batch[META_PREFIX + "counts"] = torch.tensor(
            [samples, real, input_ids.numel()], dtype=torch.long
        )
        if self.weights:
            batch[META_PREFIX + "token_weights"] = self._per_token(
                examples, input_ids, batch, lambda e: float(e.get("weight", 1.0)))
        if self.anchors:
            batch[META_PREFIX + "anchor_mask"] = self._per_token(
                examples, input_ids, batch, lambda e: float(bool(e.get("anchor"))))
        return batch

    @staticmethod
    def _per_token(
        examples: list[dict[str, Any]], input_ids: torch.Tensor, batch: dict,
        value: Callable[[dict[str, Any]], float],
    ) -> torch.Tensor:
        """Each example's `value` on every one of its tokens (prompt and answer), 0 on padding."""
        out = torch.zeros(input_ids.shape, dtype=torch.float32)
        if "attention_mask" not in batch:  # padding-free: examples laid end to end in row 0
            offset = 0
            for example in examples:
                length = len(example["input_ids"])
                out[0, offset : offset + length] = value(example)
                offset += length
        else:
            for row, example in enumerate(examples):
                out[row, : len(example["input_ids"])] = value(example)
        return out


def find_callback(trainer: Any, kind: type) -> Any:
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, kind):
            return callback
    return None


class RunTotals(TrainerCallback, ExportableState):
    """Samples and tokens processed so far; saved in each checkpoint so a resume continues them."""

    def __init__(self, samples: int = 0, real_tokens: int = 0, computed_tokens: int = 0):
        self.samples = samples
        self.real_tokens = real_tokens
        self.computed_tokens = computed_tokens

    def state(self) -> dict:
        return {
            "args": {},
            "attributes": {
                "samples": self.samples,
                "real_tokens": self.real_tokens,
                "computed_tokens": self.computed_tokens,
            },
        }


class _AccountingMixin:
    """Shared by the SFT and DPO trainers: pops the collator's counts, guards against NaN."""

    def _pop_meta(self, inputs: dict[str, Any]) -> dict[str, Any]:
        meta = {k: inputs.pop(k) for k in [k for k in inputs if k.startswith(META_PREFIX)]}
        counts = meta.get(META_PREFIX + "counts")
        if counts is not None and self.model.training:
            if self.accelerator.num_processes > 1:
                counts = self.accelerator.reduce(
                    counts.to(self.accelerator.device), reduction="sum"
                )
            totals = find_callback(self, RunTotals)
            if totals is not None:
                samples, real, computed = (int(v) for v in counts.tolist())
                totals.samples += samples
                totals.real_tokens += real
                totals.computed_tokens += computed
        return meta

    def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        loss = super().training_step(*args, **kwargs)
        # Checked every step, not at logging: the Trainer's nan-inf filter would hide a NaN loss
        # from the logs, and every step after it only trains on garbage.
        value = float(loss.detach().float().item())
        if not math.isfinite(value):
            raise TrainingFailure(
                NAN_LOSS,
                f"loss became {value} at step {self.state.global_step + 1}; "
                "lower the learning rate or check the data",
            )
        return loss


def kl_to_before(log_p: torch.Tensor, log_q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked positions of KL(p_before || q_adapter) over the vocabulary, from
    log-probs of the model before the job (`log_p`) and with the adapter (`log_q`)."""
    mask = mask.to(log_q.device, log_q.dtype)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


# A greedy choice of the model before the job counts as a close call under this lead (nats) over
# its runner-up: the window bench/learning.py --margins follows branches in.
CLOSE_CALL_NATS = 2.0


def margin_shrink(log_p: torch.Tensor, log_q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean, over the masked positions where the model before the job (`log_p`) chose its top
    token by less than CLOSE_CALL_NATS over the runner-up, of how much the adapter (`log_q`)
    shrank that lead: relu(lead_before - lead_after), both measured on the same two tokens.

    The KL term barely sees a close call tipped: at (0.52, 0.48) -> (0.48, 0.52) it is 0.003
    nats, while the greedy answer changes. This term is that change's size."""
    top = log_p.topk(2, dim=-1)
    lead_before = top.values[..., 0] - top.values[..., 1]
    after = log_q.gather(-1, top.indices)
    lead_after = after[..., 0] - after[..., 1]
    close = mask.to(torch.bool).to(log_q.device) & (lead_before < CLOSE_CALL_NATS)
    shrink = torch.relu(lead_before - lead_after) * close
    return shrink.sum() / close.sum().clamp(min=1)


class WeightedSFTTrainer(_AccountingMixin, SFTTrainer):
    """SFTTrainer whose loss weighs each example by its `weight` (from ratings), and which can keep
    the replay rows close to the model as it was before the job (`kl_to_base`).

    Normalised like TRL's own loss (by the number of label tokens), so with all weights 1.0 it is
    exactly TRL's loss; when they are all 1.0 and there is no KL term TRL's own path runs (and logs
    its token metrics).

    The KL term: on every token of the rows marked `anchor` (the replay rows, prompt and answer),
    KL(p_before || p_adapter) over the whole vocabulary, the mean over those tokens, times
    `kl_to_base`. `p_before` comes from the same forward with the LoRA layers switched off (the
    model as it was before the job: the base, or the init adapter's weights when it continues
    one, since those are not a separate layer). Replay alone trains on the model's sampled greedy
    answer, one token per position; the KL term keeps the whole distribution. Train only: the
    eval loss stays the plain loss, comparable across jobs.
    """

    def __init__(self, *args: Any, weighted: bool = False, kl_to_base: float = 0.0,
                 keep_margin: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.weighted = weighted
        self.kl_to_base = float(kl_to_base)
        self.keep_margin = float(keep_margin)
        # TRL refuses a custom collator with padding-free batches; wrapping its own one after
        # construction keeps TRL's batching and adds our counts and weights.
        self.data_collator = MeteredCollator(self.data_collator, weights=weighted,
                                             anchors=self.kl_to_base > 0)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        extra = [c for c in ("weight", "anchor") if c not in self._signature_columns]
        self._signature_columns = [*self._signature_columns, *extra]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        meta = self._pop_meta(inputs)
        weights = meta.get(META_PREFIX + "token_weights") if self.weighted else None
        anchors = meta.get(META_PREFIX + "anchor_mask")
        use_kl = (self.kl_to_base > 0 and anchors is not None and model.training
                  and bool(anchors.any()) and not return_outputs)
        if use_kl:
            return self._loss_with_kl(model, inputs, weights, anchors, num_items_in_batch)
        if weights is None or return_outputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        # log_probs are 0 where labels are -100
        return self._token_loss(outputs.log_probs, outputs.label_mask, weights, num_items_in_batch)

    def _token_loss(self, log_probs, label_mask, weights, num_items_in_batch):
        """Minus the (weighted) label log-probs, normalised as TRL's own loss: by the label tokens
        of the batch (or of every rank and micro-batch, `num_items_in_batch`)."""
        per_token = -log_probs
        if weights is not None:
            per_token = per_token * weights[:, 1:].to(per_token.device, per_token.dtype)
        num_tokens = label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = per_token.sum() / torch.as_tensor(num_tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return loss

    def _loss_with_kl(self, model, inputs, weights, anchors, num_items_in_batch):
        import torch.nn.functional as F  # noqa: N812

        inputs["use_cache"] = False
        labels = inputs.pop("labels")
        logits = model(**inputs).logits[:, :-1].float()
        with torch.no_grad(), self.accelerator.unwrap_model(model).disable_adapter():
            before = model(**inputs).logits[:, :-1].float()
        log_q = F.log_softmax(logits, dim=-1)
        log_p = F.log_softmax(before, dim=-1)
        del logits, before

        targets = labels[:, 1:].to(log_q.device)
        label_mask = targets != -100
        picked = log_q.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * label_mask
        loss = self._token_loss(picked, label_mask, weights, num_items_in_batch)

        # Position t predicts token t+1: it is an anchor position when token t+1 is a replay token.
        kl_mean = kl_to_before(log_p, log_q, anchors[:, 1:])
        # With gradient accumulation the Trainer leaves the scaling to the loss when it passes
        # num_items_in_batch; a per-micro-batch mean is then divided by the accumulation steps.
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
        self._metrics["train"]["kl_to_base"].append(float(kl_mean.detach()))
        loss = loss + self.kl_to_base * kl_mean / steps
        if self.keep_margin:
            # The greedy choices that matter are the anchor answers' (their label positions).
            answers = (anchors[:, 1:].to(label_mask.device) > 0) & label_mask
            shrink = margin_shrink(log_p, log_q, answers)
            self._metrics["train"]["margin_shrink"].append(float(shrink.detach()))
            loss = loss + self.keep_margin * shrink / steps
        return loss


def pad_id_of(tokenizer: Any) -> int:
    """The token that pads a batch: the tokenizer's pad token, else its end-of-sequence one."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
        tokenizer.eos_token_id


def right_padded(rows: list[list[int]], pad_id: int, device: Any
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows as one right-padded batch and its attention mask, on `device`."""
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    return ids.to(device), mask.to(device)


def _lora_layers(model: Any) -> list[tuple[str, Any]]:
    from peft.tuners.lora import LoraLayer

    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, LoraLayer) and module.lora_A]


@torch.no_grad()
def anchor_projectors(model: Any, rows: list[list[int]], *, keep: float, pad_id: int,
                      batch_size: int = 8) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """For each LoRA layer of `model` (a PEFT model): the projector onto the complement of the
    subspace that carries `keep` of the anchor rows' input energy at that layer, from one pass
    over `rows` (token ids) with the adapter switched off. Also a summary for the job's notes.

    The energy is the uncentred second moment of the layer's inputs over the rows' real tokens,
    prompt and answer (X^T X); its top eigenvectors, as many as reach `keep` of the trace, span
    the protected subspace. Layers fed the same tensor (q, k and v; gate and up) share one."""
    layers = _lora_layers(model)
    grams: dict[str, torch.Tensor] = {}
    same_as: dict[str, str] = {}
    batch: dict[str, Any] = {"mask": None, "seen": {}}

    def hook(name: str) -> Callable:
        def record(module, inputs, output):
            x = inputs[0]
            first = batch["seen"].get(id(x))
            if first is not None:  # the tensor is held in `seen`, so its id is not reused
                same_as[name] = first[0]
                return
            batch["seen"][id(x)] = (name, x)
            flat = x[batch["mask"]].float()
            gram = flat.T @ flat
            grams[name] = grams[name] + gram if name in grams else gram
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in layers]
    device = next(p for p in model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with model.disable_adapter():
            for start in range(0, len(rows), batch_size):
                ids, mask = right_padded(rows[start:start + batch_size], pad_id, device)
                batch.update(mask=mask.bool(), seen={})
                model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        batch["seen"] = {}
        for handle in handles:
            handle.remove()
        model.train(was_training)

    projectors: dict[str, torch.Tensor] = {}
    kept_dims = []
    for name, gram in grams.items():
        values, vectors = torch.linalg.eigh(gram.double().cpu())
        values, vectors = values.flip(0).clamp(min=0), vectors.flip(1)
        share = values.cumsum(0) / values.sum().clamp(min=1e-30)
        k = min(int((share < keep).sum()) + 1, len(values))
        basis = vectors[:, :k]
        projector = torch.eye(len(values), dtype=torch.float64) - basis @ basis.T
        projectors[name] = projector.float().to(device)
        kept_dims.append(k / len(values))
    for name, first in same_as.items():
        projectors[name] = projectors[first]
    summary = {"layers": len(projectors), "anchor_rows": len(rows), "keep": keep,
               "protected_dims_mean": round(sum(kept_dims) / max(len(kept_dims), 1), 4)}
    return projectors, summary


class AnchorNullSpace(TrainerCallback):
    """Keeps a new LoRA adapter's update out of the input directions the anchor rows use
    (train.anchor_null_space): each layer's A is projected (A <- A P) before training and after
    every optimizer step, so B A x is about 0 for the anchors' inputs x and for inputs like them,
    layer after layer. Whatever the adapter learns, it learns in the directions those rows do
    not use (AlphaEdit's null-space constraint, Fang et al. 2025, applied to LoRA's A).

    The projectors are computed once from the model before the job (`on_train_begin`); a resumed
    run computes the same ones again."""

    def __init__(self, rows: list[list[int]], *, keep: float, pad_id: int) -> None:
        self.rows = rows
        self.keep = keep
        self.pad_id = pad_id
        self.projectors: dict[str, torch.Tensor] = {}
        self.summary: dict[str, Any] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.projectors, self.summary = anchor_projectors(
            model, self.rows, keep=self.keep, pad_id=self.pad_id,
            batch_size=args.per_device_train_batch_size)
        self.project(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.project(model)

    @torch.no_grad()
    def project(self, model: Any) -> None:
        for name, module in _lora_layers(model):
            projector = self.projectors.get(name)
            if projector is None:
                continue
            for lora_a in module.lora_A.values():
                weight = lora_a.weight
                weight.copy_((weight.float() @ projector).to(weight.dtype))


class MeteredDPOTrainer(_AccountingMixin, DPOTrainer):
    """DPOTrainer with token accounting and the NaN guard, and optional anchors (`kl_to_base`).

    DPO's reference model holds only the pairs' log-ratios near the base; nothing holds what the
    model says to anything else, and on a small base a rate that learns the pairs makes it forget
    (README, "DPO that keeps content"). `anchor_rows` (the replay rows: the model's own answers to
    general prompts before the job, tokenized as SFT rows) are not pairs and are not trained on:
    each training step also runs one batch of them (drawn in a seeded order, every row once per
    pass) and adds `kl_to_base` x the mean KL(before || adapter) over their tokens, prompt and
    answer, as the SFT trainer does on its replay rows. "Before" is the same forward with the
    LoRA layers switched off. Train only: the eval loss and accuracies stay DPO's own.
    """

    def __init__(self, *args: Any, anchor_rows: list[dict[str, Any]] | None = None,
                 kl_to_base: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_collator = MeteredCollator(self.data_collator, weights=False)
        self.kl_to_base = float(kl_to_base)
        self.anchor_rows = [r["input_ids"] for r in anchor_rows or []] if kl_to_base else []
        self._anchor_order: list[int] = []
        self._anchor_passes = 0

    def _anchor_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next `per_device_train_batch_size` anchor rows, right-padded, and their mask."""
        size = min(self.args.per_device_train_batch_size, len(self.anchor_rows))
        picked = []
        while len(picked) < size:
            if not self._anchor_order:
                # Each rank its own order; the same job, the same order.
                seed = self.args.seed + 7919 * self.accelerator.process_index + self._anchor_passes
                generator = torch.Generator().manual_seed(seed)
                self._anchor_order = torch.randperm(len(self.anchor_rows),
                                                    generator=generator).tolist()
                self._anchor_passes += 1
            picked.append(self.anchor_rows[self._anchor_order.pop()])
        return right_padded(picked, pad_id_of(self.processing_class), self.accelerator.device)

    def _anchor_kl(self, model: Any) -> torch.Tensor:
        import torch.nn.functional as F  # noqa: N812

        ids, mask = self._anchor_batch()
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
        with torch.no_grad(), self.accelerator.unwrap_model(model).disable_adapter():
            before = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
        kl = kl_to_before(F.log_softmax(before.float(), dim=-1),
                          F.log_softmax(logits.float(), dim=-1), mask[:, 1:])
        self._metrics["train"]["kl_to_base"].append(float(kl.detach()))
        return kl

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        # data.dpo_rows already tokenized the pairs through the model's chat template (answer =
        # content + end-of-turn, as SFT trains it); TRL would re-render them from text and append
        # the EOS token to every answer.
        if "prompt_ids" in dataset.column_names:
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._pop_meta(inputs)
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.anchor_rows and model.training and not return_outputs:
            # DPO batches carry no `labels`, so the Trainer divides the whole loss by the
            # accumulation steps itself: the KL term is added unscaled.
            loss = loss + self.kl_to_base * self._anchor_kl(model)
        return loss


class MeteredKTOTrainer(_AccountingMixin, KTOTrainer):
    """KTOTrainer on rows already tokenized by data.kto_rows, with token accounting and the NaN
    guard."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_collator = MeteredCollator(self.data_collator, weights=False)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        # data.kto_rows tokenized the rows through the model's chat template (completion =
        # content + end-of-turn, as SFT trains it). What TRL's own preparation adds after its
        # tokenization is kept: the mismatched completions of its KL estimate, rotated by one
        # within each batch of `per_device_train_batch_size` rows (the same rule, so the KL
        # completions of a batch are that batch's completions).
        if "prompt_ids" not in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if not self.calculate_KL or "KL_completion_ids" in dataset.column_names:
            return dataset

        def add_kl_completion_ids(examples):
            examples["KL_completion_ids"] = (
                [examples["completion_ids"][-1]] + examples["completion_ids"][:-1]
            )
            return examples

        return dataset.map(
            add_kl_completion_ids, batched=True, batch_size=args.per_device_train_batch_size
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._pop_meta(inputs)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


DPO_EVAL_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


class EventsCallback(TrainerCallback):
    """Turns the Trainer's lifecycle into events: started, step, eval, checkpoint."""

    def __init__(self, writer: EventWriter, *, started_fields: dict[str, Any], gpus: int) -> None:
        self.writer = writer
        self.started_fields = started_fields
        self.gpus = gpus
        self.trainer: Any = None
        self.train_summary: dict[str, Any] = {}
        self.last_eval: dict[str, Any] = {}
        self._clock = Stopwatch()
        self._last_time = 0.0
        self._last_tokens = 0

    def _totals(self) -> RunTotals:
        return find_callback(self.trainer, RunTotals) or RunTotals()

    def on_train_begin(self, args, state, control, **kwargs):
        totals = self._totals()
        self._last_tokens = totals.real_tokens
        self._last_time = self._clock.seconds()
        fields = dict(self.started_fields)
        fields["totals"] = {
            **fields.get("totals", {}),
            "total_steps": state.max_steps,
            "total_epochs": args.num_train_epochs,
        }
        fields["resumed_from_step"] = state.global_step or None
        self.writer.emit("started", **fields)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "train_loss" in logs or "train_runtime" in logs:
            self.train_summary = logs
            return
        if "loss" not in logs or any(k.startswith("eval_") for k in logs):
            return
        totals = self._totals()
        now = self._clock.seconds()
        elapsed = max(now - self._last_time, 1e-9)
        tokens_per_second = (totals.real_tokens - self._last_tokens) / elapsed
        self._last_time, self._last_tokens = now, totals.real_tokens
        extra = {
            k: logs[k] for k in logs
            if k.startswith("rewards/")
            or k in ("mean_token_accuracy", "kl_to_base", "margin_shrink")
        }
        self.writer.emit(
            "step",
            step=state.global_step,
            epoch=round(float(state.epoch or 0.0), 4),
            progress=round(state.global_step / state.max_steps, 4) if state.max_steps else None,
            loss=logs.get("loss"),
            learning_rate=logs.get("learning_rate"),
            grad_norm=logs.get("grad_norm"),
            samples_processed=totals.samples,
            tokens_processed=totals.real_tokens,
            tokens_per_second=round(tokens_per_second, 1),
            memory=memory_snapshot(self.gpus),
            **extra,
        )

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = metrics or {}
        if "eval_loss" not in metrics:
            return
        best = state.best_metric is None or metrics["eval_loss"] < state.best_metric
        fields = {
            "step": state.global_step,
            "epoch": round(float(state.epoch or 0.0), 4),
            "eval_loss": metrics["eval_loss"],
            "is_best": best,
        }
        for key in DPO_EVAL_KEYS:
            if f"eval_{key}" in metrics:
                fields[key] = metrics[f"eval_{key}"]
        self.last_eval = fields
        self.writer.emit("eval", **fields)

    def on_save(self, args, state, control, **kwargs):
        self.writer.emit(
            "checkpoint",
            step=state.global_step,
            path=f"checkpoints/checkpoint-{state.global_step}",
        )


class BestCheckpointCallback(TrainerCallback):
    """Saves a checkpoint at every new best eval loss and evaluates once more at the last step.

    With these two, the checkpoint `load_best_model_at_end` restores is the best one seen at any
    evaluation, not only at the periodic save steps, and the final weights compete too.
    """

    def __init__(self, *, select: bool = True) -> None:
        # select=False (a held-out split too small to decide on): only the last evaluation.
        self.select = select

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps and args.eval_strategy != "no":
            control.should_evaluate = True
        return control

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not self.select:
            return control
        value = (metrics or {}).get("eval_loss")
        # The Trainer updates state.best_metric only after this callback, so this compares with the
        # best before this evaluation.
        if value is not None and (state.best_metric is None or value < state.best_metric):
            control.should_save = True
        return control


class StepHookCallback(TrainerCallback):
    """Calls `hook(step)` after each optimizer step: the test and embedding seam for stop hooks."""

    def __init__(self, hook: Callable[[int], None]) -> None:
        self.hook = hook

    def on_step_end(self, args, state, control, **kwargs):
        self.hook(state.global_step)
        return control
