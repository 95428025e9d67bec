"""One training job from start to manifest: the orchestration behind `python -m training.trainer`.

Layout of `output_dir`:
    events.jsonl          append-only events (seam 2)
    checkpoints/          periodic + best checkpoints (Trainer format) for `--resume`
    adapter/              adapter_model.safetensors + adapter_config.json, nothing else
    manifest.json         digests, lineage, hyperparameters, metrics
    deepspeed.json        the DeepSpeed config, when the job has one
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.trainer.config import JobConfig
from training.trainer.errors import (
    BAD_CONFIG,
    CRASH,
    OUT_OF_MEMORY,
    DataError,
    JobCancelled,
    TrainingFailure,
)
from training.trainer.events import EventHook, EventWriter, Stopwatch
from training.trainer.manifest import (
    ADAPTER_FILES,
    MANIFEST_FORMAT,
    adapter_files_digest,
    write_manifest,
)


def distributed_rank() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's or srun's environment; (0, 0, 1) alone."""
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))
    world = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))
    return rank, local_rank, world


def install_sigterm_handler() -> None:
    """SIGTERM (the platform's cancel, Slurm's scancel) unwinds the run as `cancelled`."""

    def _handler(signum: int, frame: Any) -> None:
        raise JobCancelled(f"cancelled by signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, _handler)


def classify_exception(exc: BaseException) -> TrainingFailure:
    """Map any exception to a TrainingFailure with a one-line reason."""
    if isinstance(exc, TrainingFailure):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return JobCancelled("interrupted")
    text = str(exc)
    oom_types: tuple[type, ...] = (MemoryError,)
    try:
        import torch

        oom_types += (torch.OutOfMemoryError,)
    except (ImportError, AttributeError):
        pass
    if isinstance(exc, oom_types) or "out of memory" in text.lower():
        return TrainingFailure(OUT_OF_MEMORY, f"out of memory: {text or type(exc).__name__}"[:500])
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return TrainingFailure(CRASH, f"{type(exc).__name__}: {first_line}"[:500])


def distributed_teardown() -> None:
    """Wait for every rank, then destroy the process group, before the interpreter exits.

    Left to interpreter shutdown, a gloo rank could abort after the job had completed
    ("terminate called without an active exception", exit 134: a fresh-clone CI run of the
    two-rank srun test), which fails the whole Slurm step."""
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def run_job(
    config: JobConfig,
    *,
    on_event: EventHook | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train, export the adapter and write the manifest; returns the `completed` event.

    On failure writes a `failed` event and raises the TrainingFailure. `on_event` sees every event
    (rank 0 only); `on_step(step)` runs after each optimizer step on every rank (raise from it to
    stop a run, as a test or an embedding platform might).
    """
    rank, _, world = distributed_rank()
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = EventWriter(out / "events.jsonl", enabled=rank == 0, hook=on_event)
    try:
        return _run(config, writer, out, world, on_step)
    except BaseException as exc:  # noqa: BLE001 - every failure must leave a `failed` event
        failure = classify_exception(exc)
        if failure.category == CRASH:
            # The full traceback goes to stderr (the job log); the event stays one line.
            traceback.print_exception(exc)
        writer.emit("failed", reason=failure.reason, category=failure.category)
        if failure is exc:
            raise
        raise failure from exc


def _run(
    config: JobConfig,
    writer: EventWriter,
    out: Path,
    world: int,
    on_step: Callable[[int], None] | None,
) -> dict[str, Any]:
    clock = Stopwatch()
    from training.trainer.data import LoadedData, dpo_rows, kto_rows, read_jsonl, tokenize_sft

    # Data first, before torch is even imported: a bad line fails the job in well under a second.
    train_data = read_jsonl(config.data.train, config.method)
    eval_data = read_jsonl(config.data.eval, config.method) if config.data.eval else None
    eval_file = eval_data  # what the manifest records, even when it cannot be scored
    if config.method == "kto" and eval_data is not None and len(eval_data.records) < 2:
        # TRL estimates KTO's KL reference by pairing each row's prompt with another row's answer
        # (rotated within a batch). A lone row is paired with its own answer, so its loss is
        # weight / 2 whatever the model: a number that looks like an eval loss and measures nothing.
        train_data.notes.append(
            f"the held-out split has {len(eval_data.records)} row(s): a KTO held-out loss needs "
            "at least 2 (its KL reference pairs each row with another row's answer), so none is "
            "computed")
        eval_data = None

    import torch
    import transformers

    from training.trainer.chat import chat_template_problem
    from training.trainer.modeling import load_base_model, load_tokenizer

    transformers.logging.set_verbosity_warning()
    transformers.set_seed(config.train.seed)

    try:
        tokenizer = load_tokenizer(
            config.base_model.name_or_path, revision=config.base_model.revision
        )
    except Exception as exc:  # noqa: BLE001
        raise TrainingFailure(BAD_CONFIG, f"cannot load tokenizer of base model: {exc}") from exc
    # Before the model loads: a base whose chat template cannot mark an answer trains nothing.
    problem = chat_template_problem(tokenizer)
    if problem:
        raise DataError(f"the base model cannot be trained on chats: {problem}")

    traffic = None
    if config.method == "sft" and config.data.replay_prompts:
        from training.trainer.replay import traffic_prompts

        traffic = traffic_prompts(config.data.replay_prompts)
    anchors = None
    if config.train.replay_rows or traffic:  # SFT or DPO: the config refuses them for KTO
        # Before the Trainer's arguments: the answers come from a plain copy of the model as it
        # is before the job, never from the one ZeRO-3 partitions as it loads.
        from training.trainer.replay import replay_generate

        replayed, note = replay_generate(
            base=config.base_model.name_or_path, revision=config.base_model.revision,
            init_adapter=config.init_adapter, rows=config.train.replay_rows,
            seed=config.train.seed, weight=config.train.replay_weight, traffic=traffic,
            as_anchors=config.method == "dpo")
        if config.method == "dpo":
            # DPO trains pairs: the replay rows only anchor its KL term (MeteredDPOTrainer).
            anchors = LoadedData(path="replay", records=replayed, sha256="", size=0)
        else:
            train_data.records.extend(replayed)
        train_data.notes.append(note)

    # The Trainer's arguments come before the model: under ZeRO-3 they register the DeepSpeed
    # config so from_pretrained can partition the weights as it loads them.
    checkpoints = out / "checkpoints"
    resume_from = _checkpoint_to_resume(checkpoints) if config.resume else None
    if not config.resume and checkpoints.exists() and writer.enabled:
        shutil.rmtree(checkpoints)  # a fresh run must not resume or rotate someone else's state
    cpu_deepspeed = _cpu_deepspeed_state(config, world)
    select_best = (eval_data is not None
                   and len(eval_data.records) >= config.train.select_min_eval_rows)
    if eval_data is not None and not select_best:
        train_data.notes.append(
            f"the held-out split has {len(eval_data.records)} rows (fewer than "
            f"{config.train.select_min_eval_rows}): its eval loss is reported but does not pick "
            "the exported checkpoint or stop early; the last weights are exported")
    args = _training_args(config, out, has_eval=eval_data is not None,
                          select_best=select_best, configured_state=cpu_deepspeed)

    # On a bf16-capable GPU the frozen base weights are loaded in bf16 (half the memory traffic of
    # fp32 under autocast); PEFT keeps the trainable LoRA weights in fp32. On a CPU they stay
    # fp32, also under bf16 autocast (train.precision "bf16").
    base_dtype = torch.bfloat16 if args.bf16 and not args.use_cpu else None
    try:
        model = load_base_model(config.base_model.name_or_path,
                                revision=config.base_model.revision, dtype=base_dtype)
    except Exception as exc:  # noqa: BLE001
        raise TrainingFailure(BAD_CONFIG, f"cannot load base model: {exc}") from exc

    peft_config = None
    if config.init_adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, config.init_adapter, is_trainable=True)
        except Exception as exc:  # noqa: BLE001
            raise TrainingFailure(BAD_CONFIG, f"cannot load init_adapter: {exc}") from exc
    else:
        peft_config = _lora_config(config)
    attention = getattr(model.config, "_attn_implementation", None)
    if config.method == "sft" and (config.padding_free or config.packing):
        from training.trainer.attention import NAME as PACKED_SDPA
        from training.trainer.attention import use_packed_attention

        # Without FlashAttention, SDPA over a padding-free row computes every example against
        # every other under a dense mask; packed_sdpa runs each example's own causal triangle.
        if use_packed_attention(model):
            attention = PACKED_SDPA

    from datasets import Dataset

    from training.trainer.trainers import (
        AnchorNullSpace,
        BestCheckpointCallback,
        EventsCallback,
        MeteredDPOTrainer,
        MeteredKTOTrainer,
        RunTotals,
        StepHookCallback,
        WeightedSFTTrainer,
        pad_id_of,
    )

    null_space_rows: list[list[int]] = []  # SFT's anchor rows, when train.anchor_null_space
    if config.method == "sft":
        train_rows = tokenize_sft(tokenizer, train_data, config.train.max_length)
        eval_rows = (
            tokenize_sft(tokenizer, eval_data, config.train.max_length) if eval_data else None
        )
        weighted = any(row["weight"] != 1.0 for row in train_rows)
        anchored = sum(row["anchor"] for row in train_rows)
        if config.train.kl_to_base and not anchored:
            train_data.notes.append(
                "train.kl_to_base is set but no row is marked anchor (replay rows are): "
                "no KL term")
        elif config.train.kl_to_base:
            margin = (f"; close-call hinge, weight {config.train.keep_margin:g}"
                      if config.train.keep_margin else "")
            train_data.notes.append(
                f"{anchored} anchor row(s) kept close to the model before the job "
                f"(KL term, weight {config.train.kl_to_base:g}{margin})")
        if config.train.anchor_null_space and config.init_adapter:
            train_data.notes.append(
                "train.anchor_null_space applies to a new adapter: this job continues one "
                "(init_adapter), so its update is not projected")
        elif config.train.anchor_null_space:
            null_space_rows = [row["input_ids"] for row in train_rows if row["anchor"]]
            train_data.notes.append(
                f"the LoRA update kept out of the input directions that carry "
                f"{config.train.anchor_null_space:g} of the {len(null_space_rows)} anchor "
                "row(s)' energy at each layer" if null_space_rows else
                "train.anchor_null_space is set but no row is marked anchor: nothing projected")
        trainer_cls, extra = WeightedSFTTrainer, {"weighted": weighted,
                                                   "kl_to_base": config.train.kl_to_base,
                                                   "keep_margin": config.train.keep_margin}
    elif config.method == "kto":
        train_rows = kto_rows(tokenizer, train_data, config.train.max_length)
        eval_rows = (
            kto_rows(tokenizer, eval_data, config.train.max_length) if eval_data else None
        )
        trainer_cls, extra = MeteredKTOTrainer, {}
        # Set from the rows that train (after drops), so the weighted ratio is the recommended
        # one whatever the compiler or a hand-written file holds.
        _set_kto_weights(args, train_rows)
        if eval_rows:  # likewise from the held-out rows that remain
            args.per_device_eval_batch_size = kto_eval_batch_size(len(eval_rows),
                                                                  config.train.batch_size)
    else:
        train_rows = dpo_rows(tokenizer, train_data, config.train.max_length)
        eval_rows = (
            dpo_rows(tokenizer, eval_data, config.train.max_length) if eval_data else None
        )
        extra = {}
        if anchors is not None and anchors.records:
            extra = {"anchor_rows": tokenize_sft(tokenizer, anchors, config.train.max_length),
                     "kl_to_base": config.train.kl_to_base}
            train_data.notes.append(
                f"{len(extra['anchor_rows'])} anchor row(s) kept close to the model before the "
                f"job (KL term, weight {config.train.kl_to_base:g})")
        trainer_cls = MeteredDPOTrainer

    scope = _scope(config, train_data, anchors)
    gpus = world if torch.cuda.is_available() else 0
    started_fields = {
        "job_id": config.job_id,
        "method": config.method,
        "model": {
            "name_or_path": config.base_model.name_or_path,
            "revision": config.base_model.revision,
            "init_adapter": config.init_adapter,
        },
        "parameters": {**_hyperparameters(config), "attention": attention},
        "totals": {
            "train_examples": len(train_rows),
            "eval_examples": len(eval_rows) if eval_rows else 0,
            "world_size": world,
        },
        "notes": train_data.notes + (eval_data.notes if eval_data else []),
    }
    events = EventsCallback(writer, started_fields=started_fields, gpus=gpus)
    callbacks: list[Any] = [RunTotals(), events]
    if eval_rows:
        callbacks.append(BestCheckpointCallback(select=select_best))
    if eval_rows and select_best:
        if config.train.early_stopping_patience:
            from transformers import EarlyStoppingCallback

            callbacks.append(EarlyStoppingCallback(config.train.early_stopping_patience))
    if on_step is not None:
        callbacks.append(StepHookCallback(on_step))
    null_space = None
    if null_space_rows:
        null_space = AnchorNullSpace(null_space_rows, keep=config.train.anchor_null_space,
                                     pad_id=pad_id_of(tokenizer))
        callbacks.append(null_space)

    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
        **extra,
    )
    events.trainer = trainer
    # events.jsonl is the record; the Trainer's print of every log dict only floods the job log.
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainable, total = _parameter_counts(trainer.model)
    started_fields["model"].update(parameters=total, trainable_parameters=trainable)
    distributed = None
    if config.deepspeed or world > 1:
        # Every rank says what it runs under in the job log; rank 0's started event keeps it.
        distributed = distributed_facts(trainer.model)
        started_fields["distributed"] = distributed
        print(f"synapsex-distributed {json.dumps(distributed)}", file=sys.stderr, flush=True)

    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if distributed is not None:
        engine = getattr(trainer, "deepspeed", None)
        distributed["engine_zero_stage"] = (engine.zero_optimization_stage()
                                            if engine is not None else None)
        distributed["resumed_from"] = resume_from.name if resume_from else None
        print(f"synapsex-distributed-trained {json.dumps(distributed)}", file=sys.stderr,
              flush=True)

    final_train_eval: dict[str, Any] = {}
    if config.method in ("dpo", "kto"):
        # Preference accuracy of the exported (best) adapter on the tenant's own pairs: the number
        # a user asks about first.
        final_train_eval = trainer.evaluate(trainer.train_dataset, metric_key_prefix="train_final")

    adapter_dir = _export_adapter(trainer, out)
    totals = find_totals(trainer)
    metrics = _final_metrics(config, trainer, events, final_train_eval, selected=select_best)
    if null_space is not None:
        metrics["anchor_null_space"] = null_space.summary
    if scope is not None:
        metrics["scope_gate"] = scope["summary"]
    if not writer.enabled:
        return {}
    manifest = _manifest(
        config,
        train_data,
        eval_file,
        train_rows,
        eval_rows,
        metrics,
        totals,
        clock.seconds(),
        world,
        adapter_dir,
    )
    if scope is not None:
        manifest["scope"] = scope["scope"]
    manifest_path = write_manifest(out / "manifest.json", manifest)
    real_fraction = totals.real_tokens / totals.computed_tokens if totals.computed_tokens else None
    return writer.emit(
        "completed",
        best_step=metrics.get("best_step"),
        metrics=metrics,
        steps=trainer.state.global_step,
        samples_processed=totals.samples,
        tokens_processed=totals.real_tokens,
        computed_tokens=totals.computed_tokens,
        real_token_fraction=round(real_fraction, 4) if real_fraction is not None else None,
        duration_seconds=round(clock.seconds(), 2),
        adapter_dir="adapter",
        manifest="manifest.json",
        manifest_path=str(manifest_path),
        **({"distributed": distributed} if distributed is not None else {}),
    )


def _scope(config: JobConfig, train_data: Any, anchors: Any) -> dict[str, Any] | None:
    """The adapter's scope (train.scope_gate; training.trainer.scope) from the job's rows: the
    prompts it trains (and those of the adapter it continues, from the scope beside that
    adapter's files), against its anchor (replay) prompts and the shipped general prompts. None
    when off, or when the adapter it continues has no scope (it answered every prompt)."""
    if not config.train.scope_gate:
        return None
    from training.trainer.scope import (
        PARENT_SCOPE_FILE,
        Scope,
        background_prompts,
        record_prompt,
        scope_build,
    )

    parent = None
    if config.init_adapter:
        # The adapter it continues answers within its own scope only if it has one (the
        # platform's bundle puts it beside the adapter's files); one without answered
        # everything, and so must this one.
        path = Path(config.init_adapter) / PARENT_SCOPE_FILE
        try:
            parent = json.loads(path.read_text()) if path.is_file() else None
            if parent is not None:
                Scope(parent)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"the scope of the adapter this job continues ({path}) cannot be "
                            f"read: {exc}") from exc
        if parent is None:
            train_data.notes.append(
                "train.scope_gate: the adapter this job continues (init_adapter) has no scope, "
                "so it answered every prompt, and so does this one")
            return None

    records = train_data.records + (anchors.records if anchors is not None else [])
    trained = [record_prompt(r) for r in records if not r.get("anchor")]
    anchored = [record_prompt(r) for r in records if r.get("anchor")]
    background = list(dict.fromkeys(anchored + background_prompts()))
    scope = scope_build(trained, background=background, threshold=config.train.scope_gate,
                        parent=parent)
    summary = Scope(scope).summary(background)
    inherited = (f", {len(parent['prompts'])} of them from the adapter it continues"
                 if parent is not None else "")
    train_data.notes.append(
        f"served only on prompts like its {summary['trained_prompts']} trained prompt(s)"
        f"{inherited} "
        f"(similarity at least {config.train.scope_gate:g}); others go to the base model. "
        f"{summary['background_reaching_adapter']} of {len(background)} general and anchor "
        "prompts would reach the adapter")
    return {"scope": scope, "summary": summary}


def find_totals(trainer: Any) -> Any:
    from training.trainer.trainers import RunTotals, find_callback

    return find_callback(trainer, RunTotals) or RunTotals()


def _checkpoint_to_resume(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint (trainer_state.json written last marks it complete)."""
    if not checkpoints.is_dir():
        return None
    candidates = []
    for folder in checkpoints.glob("checkpoint-*"):
        suffix = folder.name.rsplit("-", 1)[-1]
        if suffix.isdigit() and (folder / "trainer_state.json").is_file():
            candidates.append((int(suffix), folder))
    return max(candidates)[1] if candidates else None


def _cpu_deepspeed_state(config: JobConfig, world: int) -> bool:
    """DeepSpeed on CPUs across ranks (the local Slurm test of the LUMI launch): set up
    accelerate's distributed state with gloo before the Trainer's arguments do.

    Left to itself, accelerate (1.x) finds no GPU backend, initialises DeepSpeed's process group
    but keeps `backend=None`, and then believes it runs alone: every rank is process 0 of 1, the
    batch-size check fails (train_batch_size 4 != 4 * 1 * 2) and no rank shards the data. Given
    `backend="gloo"` up front it counts the ranks; the TrainingArguments then use this state
    (`use_configured_state`). On GPUs (LUMI: RCCL through torch's "nccl") nothing changes.
    """
    import torch

    if not config.deepspeed or world < 2 or torch.cuda.is_available():
        return False
    os.environ.setdefault("LOCAL_RANK", str(distributed_rank()[1]))
    from accelerate import PartialState

    previous = os.environ.get("ACCELERATE_USE_DEEPSPEED")
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend="gloo")
    finally:
        if previous is None:
            os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
        else:
            os.environ["ACCELERATE_USE_DEEPSPEED"] = previous
    return True


def distributed_facts(model: Any) -> dict[str, Any]:
    """What this rank runs under, for the job log (every rank) and the started event (rank 0):
    the process group's backend and size, DeepSpeed's accelerator, and under ZeRO-3 how many
    parameter elements this rank holds of the whole (about 1/world of them when partitioned)."""
    import torch

    facts: dict[str, Any] = {"rank": distributed_rank()[0], "world_size": 1, "backend": None}
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        facts["world_size"] = torch.distributed.get_world_size()
        facts["rank"] = torch.distributed.get_rank()
        facts["backend"] = str(torch.distributed.get_backend())
    try:
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

        zero3 = bool(is_deepspeed_zero3_enabled())
    except ImportError:
        zero3 = False
    facts["zero3"] = zero3
    if zero3:
        from deepspeed.accelerator import get_accelerator

        facts["accelerator"] = get_accelerator().device_name()
        local = total = 0
        for param in model.parameters():
            if hasattr(param, "ds_tensor"):
                local += param.ds_tensor.numel()
                total += param.ds_numel
        facts["zero3_local_numel"], facts["zero3_total_numel"] = local, total
    return facts


def kto_eval_batch_size(rows: int, batch_size: int) -> int:
    """An eval batch size for `rows` KTO rows that leaves no batch of one row: such a batch's KL
    reference is that row's own answer (see _run), and its loss a constant."""
    size = batch_size
    while size < rows and rows % size == 1:
        size += 1
    return size


def _bf16(precision: str) -> tuple[bool, bool]:
    """(bf16 autocast, on the CPU) for train.precision: "auto" is bf16 on a GPU with bf16,
    "bf16" also on a CPU, "fp32" never."""
    import torch

    if precision == "fp32":
        return False, False
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return True, False
        if precision == "bf16":
            raise TrainingFailure(BAD_CONFIG, "train.precision bf16: this GPU has no bf16")
        return False, False
    return precision == "bf16", precision == "bf16"


def _training_args(config: JobConfig, out: Path, *, has_eval: bool, select_best: bool = True,
                   configured_state: bool = False) -> Any:
    t = config.train
    use_bf16, cpu_autocast = _bf16(t.precision)
    save_every = t.save_every
    if has_eval and select_best and save_every % t.eval_every:
        # load_best_model_at_end needs saves on evaluation steps; round up to the next multiple.
        save_every = (save_every // t.eval_every + 1) * t.eval_every
    common: dict[str, Any] = {
        "output_dir": str(out / "checkpoints"),
        "num_train_epochs": t.epochs,
        "learning_rate": t.learning_rate,
        "per_device_train_batch_size": t.batch_size,
        "per_device_eval_batch_size": t.batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        # transformers 5: a float below 1 given as warmup_steps is a ratio of the total steps.
        "warmup_steps": t.warmup_ratio,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "lr_scheduler_type": "linear",
        "logging_strategy": "steps",
        "logging_steps": t.log_every,
        "logging_first_step": True,
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": t.eval_every if has_eval else None,
        "save_strategy": "steps",
        "save_steps": save_every,
        "save_total_limit": t.keep_checkpoints,
        "save_only_model": False,
        "load_best_model_at_end": has_eval and select_best,
        "metric_for_best_model": "eval_loss" if has_eval else None,
        "greater_is_better": False if has_eval else None,
        "restore_callback_states_from_checkpoint": True,
        "seed": t.seed,
        "data_seed": t.seed,
        "bf16": use_bf16,
        # transformers accepts bf16 without a GPU only when told the run is on the CPU.
        **({"use_cpu": True} if cpu_autocast else {}),
        "fp16": False,
        # transformers 5 name; TRL's `gradient_checkpointing=True` default then no longer applies
        # (it costs ~30% on a CPU for nothing at these sizes).
        "activation_checkpointing": config.gradient_checkpointing,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "deepspeed": _deepspeed_file(config, out),
    }
    if configured_state:
        common["accelerator_config"] = {"use_configured_state": True}
    if config.method == "sft":
        from trl import SFTConfig

        return SFTConfig(
            **common,
            # data.tokenize_sft already built `assistant_masks` from the model's chat template
            # (training.trainer.chat); TRL turns them into labels (loss on the answer only) for
            # tokenized rows, and its own flag is only for datasets it tokenizes itself.
            assistant_only_loss=False,
            packing=config.packing,
            padding_free=config.padding_free and not config.packing,
            # Already truncated in data.tokenize_sft; TRL needs max_length only to pack.
            max_length=t.max_length if config.packing else None,
            dataset_num_proc=None,
        )
    if config.method == "kto":
        from trl import KTOConfig

        # desirable_weight / undesirable_weight are set from the data (_set_kto_weights).
        return KTOConfig(**common, beta=t.beta, max_length=t.max_length)
    from trl import DPOConfig

    # sft_weight > 0: RPO, the preference loss plus the chosen answer's NLL (TRL's combined
    # losses; TrainSpec.sft_weight).
    losses = ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, t.sft_weight]}
              if t.sft_weight else {})
    return DPOConfig(**common, beta=t.beta, max_length=t.max_length, padding_free=False,
                     **losses)


def _set_kto_weights(args: Any, rows: list[dict[str, Any]]) -> None:
    from training.trainer.config import kto_weights

    desirable = sum(1 for row in rows if row["label"])
    args.desirable_weight, args.undesirable_weight = kto_weights(desirable, len(rows) - desirable)


def _deepspeed_file(config: JobConfig, out: Path) -> str | None:
    if not config.deepspeed:
        return None
    path = out / "deepspeed.json"
    rank, _, _ = distributed_rank()
    if rank == 0:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config.deepspeed, indent=2), encoding="utf-8")
        tmp.replace(path)
    else:
        # Other ranks read the same file; wait for rank 0 on a shared filesystem.
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    return str(path)


def _lora_config(config: JobConfig) -> Any:
    from peft import LoraConfig

    targets = config.lora.target_modules
    return LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=list(targets) if isinstance(targets, tuple) else targets,
        task_type="CAUSAL_LM",
    )


def _parameter_counts(model: Any) -> tuple[int, int]:
    trainable = total = 0
    for param in model.parameters():
        count = param.ds_numel if hasattr(param, "ds_numel") else param.numel()
        total += count
        if param.requires_grad:
            trainable += count
    return trainable, total


def _hyperparameters(config: JobConfig) -> dict[str, Any]:
    data = config.to_dict()
    return {
        "method": config.method,
        "preset": config.preset,
        "lora": data["lora"],
        "train": data["train"],
        "padding_free": config.padding_free and config.method == "sft" and not config.packing,
        "packing": config.packing and config.method == "sft",
        "gradient_checkpointing": config.gradient_checkpointing,
        "deepspeed": bool(config.deepspeed),
    }


def _export_adapter(trainer: Any, out: Path) -> Path:
    """Write only the shippable adapter: `default`'s safetensors + config, never `ref/` or pickles.

    `trainer.save_model` is what gathers ZeRO-3-partitioned weights, and it must run on every rank;
    rank 0 then keeps the two files and drops the rest (tokenizer, training_args.bin, README).
    """
    staging = out / "adapter-staging"
    adapter_dir = out / "adapter"
    trainer.save_model(str(staging))
    if not trainer.args.should_save:
        return adapter_dir
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    adapter_dir.mkdir(parents=True)
    for name in ADAPTER_FILES:
        source = staging / name
        if not source.is_file():
            raise TrainingFailure(CRASH, f"export produced no {name}")
        shutil.copyfile(source, adapter_dir / name)
    shutil.rmtree(staging, ignore_errors=True)
    return adapter_dir


def _final_metrics(
    config: JobConfig, trainer: Any, events: Any, final_train_eval: dict[str, Any],
    *, selected: bool = True,
) -> dict[str, Any]:
    """`best_step` is the step of the exported weights: the best evaluation's when the held-out
    split picked the checkpoint, else the last step (`best_eval_loss` stays the lowest seen)."""
    state = trainer.state
    train_losses = [h["loss"] for h in state.log_history if "loss" in h and "eval_loss" not in h]
    metrics: dict[str, Any] = {
        "train_loss": events.train_summary.get("train_loss"),
        "last_train_loss": train_losses[-1] if train_losses else None,
        "global_step": state.global_step,
        "best_step": (state.best_global_step if selected else None) or state.global_step,
        "best_eval_loss": state.best_metric,
        # What train.precision resolved to on this machine.
        "precision": "bf16" if trainer.args.bf16 else "fp32",
    }
    if config.method == "kto":
        labels = trainer.train_dataset["label"]
        metrics["kto_balance"] = {
            "desirable": int(sum(labels)),
            "undesirable": len(labels) - int(sum(labels)),
            "desirable_weight": trainer.args.desirable_weight,
            "undesirable_weight": trainer.args.undesirable_weight,
        }
    evals = [h for h in state.log_history if "eval_loss" in h]
    if evals:
        best = next((h for h in evals if h.get("step") == metrics["best_step"]), evals[-1])
        metrics["eval_loss"] = best["eval_loss"]
        for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
            if f"eval_{key}" in best:
                metrics[f"eval_{key}"] = best[f"eval_{key}"]
    # TRL logs its DPO reward metrics under "eval_" whatever the evaluate() prefix, so the pass
    # over the training pairs comes back as "eval_rewards/*" next to "train_final_loss".
    for key, value in final_train_eval.items():
        if key.startswith(("eval_rewards/", "train_final_rewards/")):
            metrics["train_" + key.split("_", 1)[1].removeprefix("final_")] = value
        elif key == "train_final_loss":
            metrics["train_pairs_loss"] = value
    return metrics


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in (
        "torch",
        "transformers",
        "peft",
        "trl",
        "datasets",
        "accelerate",
        "safetensors",
        "deepspeed",
    ):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def _manifest(
    config: JobConfig,
    train_data: Any,
    eval_data: Any,
    train_rows: list,
    eval_rows: list | None,
    metrics: dict[str, Any],
    totals: Any,
    seconds: float,
    world: int,
    adapter_dir: Path,
) -> dict[str, Any]:
    import hashlib

    from training.trainer.events import utc_timestamp

    snapshot = hashlib.sha256(train_data.sha256.encode())
    if eval_data is not None:
        snapshot.update(eval_data.sha256.encode())
    return {
        "format": MANIFEST_FORMAT,
        "job_id": config.job_id,
        "method": config.method,
        "created_at": utc_timestamp(),
        "adapter": {"dir": "adapter", "files": adapter_files_digest(adapter_dir)},
        "base_model": {
            "path": config.base_model.path,
            "hf_id": config.base_model.hf_id,
            "revision": config.base_model.revision,
        },
        "init_adapter": config.init_adapter,
        "data": {
            "snapshot_sha256": snapshot.hexdigest(),
            "train": {
                "path": train_data.path,
                "sha256": train_data.sha256,
                "size": train_data.size,
            },
            "eval": None
            if eval_data is None
            else {"path": eval_data.path, "sha256": eval_data.sha256, "size": eval_data.size},
        },
        "examples": {"train": len(train_rows), "eval": len(eval_rows) if eval_rows else 0},
        "hyperparameters": _hyperparameters(config),
        "metrics": metrics,
        "tokens_processed": totals.real_tokens,
        "samples_processed": totals.samples,
        "duration_seconds": round(seconds, 2),
        "world_size": world,
        "libraries": _library_versions(),
    }
