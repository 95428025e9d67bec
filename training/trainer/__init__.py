"""The standalone trainer: job.json in; events.jsonl, checkpoints/, adapter/, manifest.json out.

Imports no Django (and nothing heavy here, so `training.trainer.config` stays cheap to import).
Public entry points:
    python -m training.trainer --config job.json [--resume]       the CLI (run.run_job behind it)
    python -m training.trainer.tiny_model --out DIR [--seed N]     the embedded default base model
    training.trainer.config: PRESETS, SFT_DEFAULTS, DPO_DEFAULTS, LORA_DEFAULTS, load_job_config,
        parse_job_config, JobConfig
    training.trainer.run: run_job(config, on_event=None, on_step=None)
    training.trainer.tiny_model: build_tiny_base(out_dir, seed=0) -> Path
    training.trainer.modeling: load_model_and_tokenizer(path, adapter_dir=None),
        generate_reply(model, tokenizer, messages, max_new_tokens=64, temperature=0.0) -> str
    training.trainer.chat: chat_template_problem(path_or_tokenizer) -> str | None (why a base
        cannot train on chats), assistant_turn(tokenizer, history, answer) -> Turn (the loss mask)
    training.trainer.manifest: verify_adapter_dir(path, manifest) -> None, AdapterVerificationError
    training.trainer.events: read_events(path), read_events_from(source, offset=0),
        last_terminal_event(events), EventWriter
    training.trainer.errors: TrainingFailure, categories, EXIT_CODES
"""
