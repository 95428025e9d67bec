"""`python -m training.trainer --config job.json [--resume]`: the trainer's one entry point.

The same command runs in the local worker's child process and inside the LUMI container (under
srun or torchrun). Exit status 0 means `completed` was written; anything else comes with a
one-line `failed` event (see errors.EXIT_CODES for the status per category).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.trainer.errors import EXIT_CODES, TrainingFailure


def _fallback_output_dir(config_path: Path) -> Path:
    # When job.json itself is bad, the failure still goes where the platform looks for events:
    # the output_dir the file names if it can be read at all, else the file's folder.
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
        if isinstance(raw, dict) and isinstance(raw.get("output_dir"), str):
            out = Path(raw["output_dir"])
            return out if out.is_absolute() else config_path.parent / out
    except (OSError, ValueError):
        pass
    return config_path.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.trainer", description=__doc__)
    parser.add_argument("--config", required=True, help="path to job.json")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in output_dir"
    )
    args = parser.parse_args(argv)

    from training.trainer.config import load_job_config
    from training.trainer.events import EventWriter
    from training.trainer.run import (
        distributed_rank,
        distributed_teardown,
        install_sigterm_handler,
        run_job,
    )

    install_sigterm_handler()
    config_path = Path(args.config)
    try:
        config = load_job_config(config_path, resume=True if args.resume else None)
    except TrainingFailure as failure:
        rank, _, _ = distributed_rank()
        writer = EventWriter(_fallback_output_dir(config_path) / "events.jsonl", enabled=rank == 0)
        writer.emit("failed", reason=failure.reason, category=failure.category)
        print(f"failed ({failure.category}): {failure.reason}", file=sys.stderr)
        return EXIT_CODES[failure.category]

    try:
        completed = run_job(config)
    except TrainingFailure as failure:
        print(f"failed ({failure.category}): {failure.reason}", file=sys.stderr)
        return EXIT_CODES[failure.category]
    distributed_teardown()
    if completed:
        print(json.dumps({"completed": completed.get("manifest_path")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
