"""Data snapshots: a compiled job's train.jsonl, eval.jsonl, replay.jsonl (prompts of the tenant's
traffic to replay, when the job has any) and manifest.json in storage (what the trainer reads,
and what erasure rewrites), and copying them back into a job's bundle verified."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from training.compiler import GOLDEN_FRACTION, MIN_EXAMPLES_FOR_EVAL, CompiledData, kto_balance
from training.replay_traffic import TrafficReplay


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def snapshot_prefix(*, tenant, job_id: str) -> str:
    # Built from ids the platform issued, never from tenant-supplied names (seam 4).
    return f"tenants/{tenant.slug}/snapshots/{job_id}"


def snapshot_write(*, tenant, job_id: str, compiled: CompiledData,
                   replay: TrafficReplay | None = None) -> tuple[str, dict]:
    """Write train.jsonl, eval.jsonl, manifest.json and, with prompts from the tenant's traffic
    to replay (training.replay_traffic), replay.jsonl to storage; returns (prefix, manifest).

    The manifest lists every feedback, message and dataset record id the snapshot used, so each
    adapter trained from it can say exactly what it learned from (and erasure can find it).
    """
    prefix = snapshot_prefix(tenant=tenant, job_id=job_id)
    files = {"train.jsonl": _jsonl(compiled.train), "eval.jsonl": _jsonl(compiled.eval)}
    record_sources = dict(compiled.record_sources)
    message_ids = list(compiled.message_ids)
    if replay is not None and replay.records:
        files["replay.jsonl"] = _jsonl(replay.records)
        record_sources["replay"] = replay.sources
        message_ids = sorted(set(message_ids) | set(replay.message_ids))
    manifest = {
        "format": "synapsex-snapshot/1",
        "job_id": job_id,
        "tenant": tenant.slug,
        "method": compiled.method,
        "created_at": timezone.now().isoformat(),
        "counts": {
            "train": len(compiled.train),
            "eval": len(compiled.eval),
            "sft_examples": compiled.sft_examples,
            "dpo_pairs": compiled.dpo_pairs,
            "kto_desirable": compiled.kto_desirable,
            "kto_undesirable": compiled.kto_undesirable,
            "token_count": compiled.token_count,
            "excluded": compiled.excluded,
            **({"replay": len(replay.records), "replay_skipped": replay.skipped}
               if replay is not None else {}),
        },
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                   "lines": data.count(b"\n")}
            for name, data in files.items()
        },
        "split": {"golden_fraction": GOLDEN_FRACTION,
                  "min_examples_for_eval": MIN_EXAMPLES_FOR_EVAL,
                  "rule": "golden set: sha256('golden:' + example id) in the lowest "
                          "golden_fraction of the range (stable across jobs)"},
        "eval_ids": [r["id"] for r in compiled.eval],
        **({"kto": kto_balance(compiled.train)} if compiled.method == "kto" else {}),
        "feedback_ids": compiled.feedback_ids,
        "message_ids": message_ids,
        "dataset_record_ids": compiled.dataset_record_ids,
    }
    files["manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    # Not a trainer input (so not in the manifest's files): which rows made each line, for
    # erasure's rewrite of this snapshot (training.snapshot_scrub).
    files["sources.json"] = json.dumps({
        f"{part}.jsonl": lines for part, lines in record_sources.items()}).encode()
    for name, data in files.items():
        path = f"{prefix}/{name}"
        if default_storage.exists(path):
            default_storage.delete(path)
        default_storage.save(path, ContentFile(data))
    return prefix, manifest


def snapshot_download(*, prefix: str, manifest: dict, dest: Path) -> None:
    """Copy a snapshot's data files into `dest`, checking them against the manifest's sha256."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, info in manifest.get("files", {}).items():
        with default_storage.open(f"{prefix}/{name}", "rb") as handle:
            data = handle.read()
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise ValueError(f"snapshot file {name} does not match its manifest sha256")
        (dest / name).write_bytes(data)
