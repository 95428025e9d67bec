"""Taking withdrawn rows out of past jobs' data snapshots (erasure, dataset delete, revoked
consent): the snapshot files in storage, and the job's local bundle copy if one is on this host,
are rewritten without every example derived from those rows.

Which example came from which rows: snapshots written since this module exists carry
`sources.json` next to the data files (per file, per line, the `feedback:<id>`, `message:<id>`,
`dataset_record:<id>` the example was built from; not a trainer input, so not in the manifest's
`files`). Older snapshots have no such map; there an example goes when its id names a withdrawn
feedback or record (`fb_<id>`, `ds_<id>`) or when any of its texts equals a withdrawn text
(which can take out an identical example of someone else too: more, never less).

The job's manifest (in storage and on the row) gets the new files' sha256, bytes and lines (so
a resumed job still verifies its download) and a `scrubbed` entry saying when and how many
examples went; the id lists stay, they are what finds the versions trained on the rows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from feedback.models import DatasetRecord, Feedback, Message
from training.models import TrainingJob

SOURCES_FILE = "sources.json"
DATA_FILES = ("train.jsonl", "eval.jsonl", "replay.jsonl")


def _read(path: str) -> bytes | None:
    if not default_storage.exists(path):
        return None
    with default_storage.open(path, "rb") as handle:
        return handle.read()


def _write(path: str, data: bytes) -> None:
    if default_storage.exists(path):
        default_storage.delete(path)
    default_storage.save(path, ContentFile(data))


def _record_texts(record: dict) -> set[str]:
    texts = {str(m.get("content", "")).strip() for m in record.get("messages") or []
             if isinstance(m, dict)}
    texts |= {str(record[k]).strip() for k in ("prompt", "chosen", "rejected") if k in record}
    texts.discard("")
    return texts


def withdrawn_texts(*, feedback_ids, message_ids, dataset_record_ids) -> set[str]:
    """The texts of rows about to be withdrawn (read before they go): the fallback match for
    snapshots written without a sources map."""
    texts = {c.strip() for c in Feedback.objects.filter(id__in=feedback_ids)
             .values_list("correction", flat=True)}
    texts |= {c.strip() for c in Message.objects.filter(id__in=message_ids)
              .values_list("content", flat=True)}
    for data in DatasetRecord.objects.filter(id__in=dataset_record_ids).values_list("data",
                                                                                   flat=True):
        if isinstance(data, dict):
            texts |= _record_texts(data)
    texts.discard("")
    return texts


def _uses_any(manifest: dict, feedback_ids, message_ids, dataset_record_ids) -> bool:
    return bool(set(manifest.get("feedback_ids") or []) & feedback_ids
                or set(manifest.get("message_ids") or []) & message_ids
                or set(manifest.get("dataset_record_ids") or []) & dataset_record_ids)


def training_snapshots_scrub(*, tenant, feedback_ids: set, message_ids: set,
                             dataset_record_ids: set, texts: set[str] | None = None,
                             reason: str = "erasure") -> list[dict]:
    """Rewrite every snapshot of the tenant that used any of these rows; returns
    [{"job_id", "examples_removed"}] for the snapshots that changed."""
    withdrawn = ({f"feedback:{i}" for i in feedback_ids} | {f"message:{i}" for i in message_ids}
                 | {f"dataset_record:{i}" for i in dataset_record_ids})
    named_ids = {f"fb_{i}" for i in feedback_ids} | {f"ds_{i}" for i in dataset_record_ids}
    if texts is None:
        texts = withdrawn_texts(feedback_ids=feedback_ids, message_ids=message_ids,
                                dataset_record_ids=dataset_record_ids)
    rewritten = []
    jobs = (TrainingJob.objects.filter(tenant=tenant).exclude(snapshot_prefix="")
            .select_for_update().order_by("created_at"))
    for job in jobs:
        manifest = job.snapshot_manifest or {}
        if not _uses_any(manifest, feedback_ids, message_ids, dataset_record_ids):
            continue
        removed = _job_snapshot_scrub(job, withdrawn, named_ids, texts, reason)
        if removed:
            rewritten.append({"job_id": job.id, "examples_removed": removed})
    return rewritten


def _keep(record: dict, sources: list | None, withdrawn: set, named_ids: set,
          texts: set) -> bool:
    if sources is not None:
        return not (set(sources) & withdrawn)
    return record.get("id") not in named_ids and not (_record_texts(record) & texts)


def _job_snapshot_scrub(job: TrainingJob, withdrawn: set, named_ids: set, texts: set,
                        reason: str) -> int:
    prefix = job.snapshot_prefix
    manifest = dict(job.snapshot_manifest)
    raw_sources = _read(f"{prefix}/{SOURCES_FILE}")
    source_map = json.loads(raw_sources) if raw_sources else {}
    removed_total = 0
    new_files: dict[str, bytes] = {}
    new_sources: dict[str, list] = {}
    for name in DATA_FILES:
        data = _read(f"{prefix}/{name}")
        if data is None:
            continue
        lines = [line for line in data.decode("utf-8").splitlines() if line.strip()]
        line_sources = source_map.get(name)
        kept_lines, kept_sources = [], []
        for index, line in enumerate(lines):
            sources = (line_sources[index] if line_sources is not None
                       and index < len(line_sources) else None)
            if _keep(json.loads(line), sources, withdrawn, named_ids, texts):
                kept_lines.append(line)
                kept_sources.append(sources)
        if len(kept_lines) == len(lines):
            continue
        removed_total += len(lines) - len(kept_lines)
        new_files[name] = "".join(line + "\n" for line in kept_lines).encode("utf-8")
        if line_sources is not None:
            new_sources[name] = kept_sources
    if not removed_total:
        return 0
    files = dict(manifest.get("files") or {})
    counts = dict(manifest.get("counts") or {})
    for name, data in new_files.items():
        _write(f"{prefix}/{name}", data)
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                       "lines": data.count(b"\n")}
        counts[name.split(".")[0]] = data.count(b"\n")
        _bundle_copy_replace(job, name, data)
    if new_sources:
        _write(f"{prefix}/{SOURCES_FILE}",
               json.dumps({**source_map, **new_sources}).encode("utf-8"))
    manifest["files"] = files
    manifest["counts"] = counts
    # The job's status then: a job already preparing or running has read the old files, so the
    # version it makes learned from the rows (adapters flags it when it is created).
    manifest["scrubbed"] = [*(manifest.get("scrubbed") or []), {
        "at": timezone.now().isoformat(), "reason": reason, "examples_removed": removed_total,
        "job_status": job.status}]
    _write(f"{prefix}/manifest.json", (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    job.snapshot_manifest = manifest
    job.save(update_fields=["snapshot_manifest"])
    return removed_total


def _bundle_copy_replace(job: TrainingJob, name: str, data: bytes) -> None:
    """The local worker's copy of the snapshot (the job's bundle folder), if it is on this host."""
    copy = Path(settings.TRAINING_WORK_DIR) / job.id / name
    if copy.is_file():
        copy.write_bytes(data)
