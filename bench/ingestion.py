"""Bulk ingestion: 100,000 conversations uploaded through the API vs PostgreSQL COPY.

Subject: `POST /v1/tenants/{t}/datasets/{id}/upload/conversations` (the seed's JSON body) in
batches of `--batch` conversations, one request after the other, over HTTP to gunicorn: the
platform's validation, PII redaction, content-hash dedup and storage are all included; each run
uploads into a freshly registered dataset. Also measured (informational): the same records as
one JSONL file through `POST .../datasets/{id}/upload` (multipart).

Baseline: the same conversations as `feedback_datasetrecord` rows via psycopg `COPY ... FROM
STDIN` in one transaction, with the least work such rows need: canonical JSON, sha256 content
hash, and dropping exact duplicates in memory (the table's unique constraint would refuse them).
No validation, no PII pass. Figure: rows per second (records received / wall time).
Goal: platform / COPY >= 0.25.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid

from bench import common, data, env
from bench.common import CannotRun, Comparison, Fact, Report

TITLE = "3. Bulk ingestion: conversations through the API vs PostgreSQL COPY"


def configure(p) -> None:
    p.add_argument("--count", type=int, default=None, help="conversations (100,000; quick 1,000)")
    p.add_argument("--batch", type=int, default=1000, help="conversations per API request")
    p.add_argument("--no-jsonl", action="store_true", help="skip the JSONL-file side")


def body(args, report: Report) -> None:
    env.configure()
    env.require_route("/v1/tenants/x/datasets/1/upload/conversations", "dataset upload")
    from django.utils import timezone

    from feedback.models import Dataset, DatasetRecord

    count = args.count or (1000 if args.quick else 100_000)
    records = data.conversations(count, seed=7)
    batches = [records[i:i + args.batch] for i in range(0, count, args.batch)]
    jsonl_bytes = ("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n").encode()
    report.inputs = {
        "conversations": count, "api_batch": args.batch, "requests": len(batches),
        "payload_MB": round(len(jsonl_bytes) / 1e6, 1),
        "duplicates_in_input": count - len({json.dumps(r, sort_keys=True) for r in records}),
        "gunicorn": "2 workers x 4 threads",
    }
    tenant, secret = env.tenant_make("bench-ingest")

    def new_dataset(api) -> int:
        status, data = api.call("POST", "datasets/register", {
            "name": f"bench-{uuid.uuid4().hex[:10]}", "type": "conversations",
            "data_use": {"allow_rag": False, "allow_private_training": True}}, expect=(200, 201))
        return data["id"]

    stored_counts: list[int] = []

    with env.Server() as server:
        api = env.Api(server, tenant.slug, secret)

        def platform_json(i: int) -> float:
            dataset_id = new_dataset(api)
            started = time.perf_counter()
            stored = 0
            for batch in batches:
                _, data = api.call("POST", f"datasets/{dataset_id}/upload/conversations",
                                   {"conversations": batch}, expect=(201,))
                stored += data["stored"]
            elapsed = time.perf_counter() - started
            stored_counts.append(stored)
            return count / elapsed

        def platform_jsonl(i: int) -> float:
            dataset_id = new_dataset(api)
            boundary = uuid.uuid4().hex
            multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                         f"filename=\"data.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n"
                         ).encode() + jsonl_bytes + f"\r\n--{boundary}--\r\n".encode()
            started = time.perf_counter()
            api.call("POST", f"datasets/{dataset_id}/upload", raw_body=multipart,
                     content_type=f"multipart/form-data; boundary={boundary}", expect=(201,))
            return count / (time.perf_counter() - started)

        def copy_baseline(i: int) -> float:
            dataset = Dataset.objects.create(tenant=tenant, name=f"copy-{uuid.uuid4().hex[:10]}",
                                             type=Dataset.CONVERSATIONS)
            now = timezone.now()
            started = time.perf_counter()
            with env.pg_connect() as conn:
                seen: set[str] = set()

                def rows():
                    for record in records:
                        canonical = json.dumps(record, sort_keys=True, ensure_ascii=False,
                                               separators=(",", ":"))
                        digest = hashlib.sha256(canonical.encode()).hexdigest()
                        if digest in seen:
                            continue
                        seen.add(digest)
                        yield {"tenant_id": tenant.pk, "dataset_id": dataset.pk,
                               "content_hash": digest, "data": canonical,
                               "pii_redactions": {}, "created_at": now}

                from bench.pgcopy import copy_rows

                copy_rows(conn, DatasetRecord, rows())
                conn.commit()
            return count / (time.perf_counter() - started)

        sides = {"baseline": copy_baseline, "subject": platform_json}
        if not args.no_jsonl:
            sides["jsonl"] = platform_jsonl
        results = common.rotated(args.runs, sides, log=common.log)

    if not stored_counts or min(stored_counts) <= 0:
        raise CannotRun("the platform stored no records")
    report.comparisons.append(Comparison(
        metric="rows per second", unit="rows/s",
        baseline_label="psycopg COPY (hash + dedup only)",
        subject_label=f"API upload/conversations, {args.batch}/request",
        baseline_runs=results["baseline"], subject_runs=results["subject"], goal=">= 0.25"))
    if "jsonl" in results:
        report.comparisons.append(Comparison(
            metric="rows per second", unit="rows/s",
            baseline_label="psycopg COPY (hash + dedup only)",
            subject_label="API JSONL file upload (one file)",
            baseline_runs=results["baseline"], subject_runs=results["jsonl"]))
    report.facts.append(Fact("records stored per platform run", stored_counts[0],
                             note=f"of {count} received; the rest were duplicates (or PII-"
                                  "redacted into duplicates)"))
    report.notes.append("Each run uploads into a new dataset of the same tenant, so later runs "
                        "insert into a bigger table (indexes grow) on both sides alike.")


def main(argv=None) -> int:
    return common.main("ingestion", TITLE, body, argv=argv, configure=configure, default_runs=3)


if __name__ == "__main__":
    raise SystemExit(main())
