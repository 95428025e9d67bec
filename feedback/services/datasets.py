"""The DataHub: registering datasets and uploading records to them.

Records are validated (`feedback.validation`), PII-redacted and de-duplicated by content hash
before they are stored; an upload is atomic unless the client asks to skip invalid records.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from feedback.models import Dataset, DatasetRecord
from feedback.openai_format import is_openai_preference, openai_preference_to_record
from feedback.pii import pii_counts_add, pii_redact_value
from feedback.validation import VALIDATORS, record_canonical_json, record_content_hash
from tenants.errors import Conflict, InvalidInput
from tenants.models import Tenant

UPLOAD_BATCH_SIZE = 500
MAX_LISTED_PROBLEMS = 1000


@transaction.atomic
def dataset_register(*, tenant: Tenant, name: str, type: str, allow_rag: bool = False,
                     allow_private_training: bool = True,
                     evaluation_only: bool = False) -> tuple[Dataset, bool]:
    """Register a dataset; registering the same name, type and data use again returns the
    existing one (so a setup script can be re-run). Same name with another type or data use is a
    conflict: consent to training is never changed as a side effect."""
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()  # serialise same-name races
    existing = Dataset.objects.filter(tenant=tenant, name=name).first()
    if existing is not None:
        if (existing.type, existing.allow_rag, existing.allow_private_training,
                existing.evaluation_only) == (type, allow_rag, allow_private_training,
                                              evaluation_only):
            return existing, False
        raise Conflict(
            "dataset_name_taken",
            f"A dataset named {name!r} already exists with another type or data use.",
            details={"id": existing.pk, "type": existing.type,
                     "data_use": {"allow_rag": existing.allow_rag,
                                  "allow_private_training": existing.allow_private_training,
                                  "evaluation_only": existing.evaluation_only}},
        )
    dataset = Dataset.objects.create(tenant=tenant, name=name, type=type, allow_rag=allow_rag,
                                     allow_private_training=allow_private_training,
                                     evaluation_only=evaluation_only)
    return dataset, True


def dataset_require_type(*, dataset: Dataset, upload_type: str) -> None:
    """Refuse records of the other kind (conversations into a preferences dataset, say)."""
    if dataset.type != upload_type:
        raise InvalidInput(
            "dataset_type_mismatch",
            f"Dataset {dataset.pk} holds {dataset.type}; upload {dataset.type} to it "
            f"(POST .../datasets/{dataset.pk}/upload/{dataset.type}) or register a "
            f"{upload_type} dataset.",
            details={"dataset_type": dataset.type, "upload_type": upload_type},
        )


@dataclass
class UploadItem:
    """One incoming record: where it came from, its parsed value, or why it could not parse."""

    locator: dict  # {"index": 3} or {"line": 7}
    value: Any = None
    parse_error: str | None = None


def upload_items_from_list(records: list) -> Iterator[UploadItem]:
    for index, value in enumerate(records):
        yield UploadItem(locator={"index": index}, value=value)


def upload_items_from_jsonl(lines: Iterable[tuple[int, Any, str | None]]) -> Iterator[UploadItem]:
    for line_number, value, error in lines:
        yield UploadItem(locator={"line": line_number}, value=value, parse_error=error)


def _field_path(dataset_type: str, locator: dict, field_name: str) -> str:
    if "line" in locator:
        return f"line {locator['line']}: {field_name}" if field_name else f"line {locator['line']}"
    base = f"{dataset_type}[{locator['index']}]"
    return f"{base}.{field_name}" if field_name else base


class _UploadRejected(Exception):
    def __init__(self, report: dict):
        super().__init__("upload rejected")
        self.report = report


def dataset_upload(*, tenant: Tenant, dataset: Dataset, items: Iterable[UploadItem],
                   expected_type: str | None = None, skip_invalid: bool = False,
                   source: str = "json", filename: str = "") -> dict:
    """Validate, redact, de-duplicate and store records; returns the upload report.

    Atomic: if any record is invalid and `skip_invalid` is false, nothing is stored and an
    `invalid_records` error lists every bad record (up to 1000, with the total). With
    `skip_invalid`, valid records are stored and the report lists what was skipped. Records
    whose redacted content is already in the dataset (or earlier in the same upload) are counted
    as duplicates and not stored again. The dataset's `last_validation_report` keeps the report.
    """
    if expected_type is not None:
        dataset_require_type(dataset=dataset, upload_type=expected_type)
    try:
        with transaction.atomic():
            report = _dataset_upload_locked(tenant, dataset, items, skip_invalid=skip_invalid,
                                            source=source, filename=filename)
    except _UploadRejected as rejected:
        Dataset.objects.filter(pk=dataset.pk).update(
            last_validation_report=rejected.report, updated_at=timezone.now())
        report = rejected.report
        raise InvalidInput(
            "invalid_records",
            f"{report['invalid']} of {report['received']} records are invalid; nothing was "
            "stored. Fix them, or send skip_invalid=true to store only the valid records.",
            details={"invalid_records": report["invalid_records"],
                     "invalid": report["invalid"], "received": report["received"],
                     "truncated": report["invalid"] > len(report["invalid_records"])},
        ) from None
    return report


@dataclass
class _Upload:
    """The running tally of one upload into a locked dataset, and the ORM writer (SQLite): records
    go out in batches, each checked against the dataset's stored hashes first."""

    tenant: Tenant
    dataset: Dataset
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    invalid_records: list[dict] = field(default_factory=list)
    duplicate_records: list[dict] = field(default_factory=list)
    pii_total: dict[str, int] = field(default_factory=dict)
    batch: list[tuple[dict, str, dict, dict, str]] = field(default_factory=list)

    def __enter__(self) -> _Upload:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add(self, locator: dict, data: dict, pii: dict, user_id: str) -> None:
        self.batch.append((locator, record_content_hash(data), data, pii, user_id))
        if len(self.batch) >= UPLOAD_BATCH_SIZE:
            self.flush()

    def finish(self) -> None:
        if self.batch:
            self.flush()

    def flush(self) -> None:
        """Store the batch's records whose content hash is new to the dataset."""
        hashes = [h for _, h, _, _, _ in self.batch]
        seen = set(DatasetRecord.objects.filter(dataset=self.dataset, content_hash__in=hashes)
                   .values_list("content_hash", flat=True))
        rows = []
        for locator, content_hash, data, pii, user_id in self.batch:
            if content_hash in seen:
                self.duplicates += 1
                if len(self.duplicate_records) < MAX_LISTED_PROBLEMS:
                    self.duplicate_records.append(locator)
                continue
            seen.add(content_hash)
            rows.append(DatasetRecord(tenant=self.tenant, dataset=self.dataset,
                                      content_hash=content_hash, data=data, pii_redactions=pii,
                                      user_id=user_id))
            self.pii_total = pii_counts_add(self.pii_total, pii)
        DatasetRecord.objects.bulk_create(rows, batch_size=UPLOAD_BATCH_SIZE)
        self.stored += len(rows)
        self.batch.clear()


_RECORD_COLUMNS = ("content_hash", "data", "pii_redactions", "user_id")


@dataclass
class _CopyUpload(_Upload):
    """The PostgreSQL writer: one COPY stream, open for the whole pass, in the upload's
    transaction (bulk_create spent more time building its INSERTs than the records took to check).

    Duplicates inside the upload are dropped here, by hash, as they come. Into an empty dataset
    (the locked dataset cannot gain rows meanwhile) the COPY goes straight into the table. Into a
    dataset that has records it goes into a temporary table; `finish` then takes out the rows
    whose hash the dataset already holds (they are duplicates: counted and listed in input order
    with the upload's own, their PII counts taken back) and inserts the rest. A conflict left
    after that would be a bug or a writer that skipped the dataset lock: the unique constraint
    refuses it and the upload rolls back, as the ORM writer's would.
    """

    direct: bool = True
    created_at: Any = None
    _hashes: set = field(default_factory=set)
    _listed: list[tuple[int, dict]] = field(default_factory=list)  # (position, locator)
    _cursor: Any = None
    _copy_context: Any = None
    _copy: Any = None
    _table: str = ""

    def __enter__(self) -> _CopyUpload:
        self.created_at = timezone.now()
        self.direct = not DatasetRecord.objects.filter(dataset=self.dataset).exists()
        self._cursor = connection.cursor()
        raw = self._cursor.cursor  # psycopg's own cursor, for COPY
        if self.direct:
            self._table = DatasetRecord._meta.db_table
            columns = ("tenant_id", "dataset_id", *_RECORD_COLUMNS, "created_at")
        else:
            self._table = f"upload_rows_{uuid.uuid4().hex[:12]}"
            raw.execute(f"CREATE TEMPORARY TABLE {self._table} (position integer, "
                        "content_hash varchar(64), data jsonb, pii_redactions jsonb, "
                        "user_id varchar(200), locator text) ON COMMIT DROP")
            columns = ("position", *_RECORD_COLUMNS, "locator")
        self._copy_context = raw.copy(
            f"COPY {self._table} ({', '.join(columns)}) FROM STDIN")
        self._copy = self._copy_context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._copy_context.__exit__(*exc)
        finally:
            if exc[0] is not None:
                self._cursor.close()

    def add(self, locator: dict, data: dict, pii: dict, user_id: str) -> None:
        canonical = record_canonical_json(data)
        content_hash = record_content_hash(data, canonical)
        if content_hash in self._hashes:
            self.duplicates += 1
            if len(self._listed) < MAX_LISTED_PROBLEMS:
                self._listed.append((self.received, locator))
            return
        self._hashes.add(content_hash)
        pii_json = json.dumps(pii) if pii else "{}"
        if pii:
            self.pii_total = pii_counts_add(self.pii_total, pii)
        if self.direct:
            self._copy.write_row((self.tenant.pk, self.dataset.pk, content_hash, canonical,
                                  pii_json, user_id, self.created_at))
        else:
            self._copy.write_row((self.received, content_hash, canonical, pii_json, user_id,
                                  json.dumps(locator)))
        self.stored += 1

    def finish(self) -> None:
        with self._cursor:
            if not self.direct:
                self._insert_new_rows(self._cursor.cursor)
        self.duplicate_records = [locator for _, locator in self._listed]

    def _insert_new_rows(self, cur) -> None:
        cur.execute(f"DELETE FROM {self._table} AS u USING {DatasetRecord._meta.db_table} AS r "
                    "WHERE r.dataset_id = %s AND r.content_hash = u.content_hash "
                    "RETURNING u.position, u.locator, u.pii_redactions::text",
                    [self.dataset.pk])
        known = cur.fetchall()
        for pii_json in (pii_json for _, _, pii_json in known if pii_json != "{}"):
            self.pii_total = pii_counts_add(
                self.pii_total, {kind: -n for kind, n in json.loads(pii_json).items()})
        self.duplicates += len(known)
        self.stored -= len(known)
        listed = [(position, json.loads(locator)) for position, locator, _ in known]
        self._listed = sorted(self._listed + listed, key=lambda pair: pair[0])
        del self._listed[MAX_LISTED_PROBLEMS:]
        columns = ", ".join(_RECORD_COLUMNS)
        cur.execute(f"INSERT INTO {DatasetRecord._meta.db_table} "
                    f"(tenant_id, dataset_id, {columns}, created_at) "
                    f"SELECT %s, %s, {columns}, %s FROM {self._table} ORDER BY position",
                    [self.tenant.pk, self.dataset.pk, self.created_at])
        cur.execute(f"DROP TABLE {self._table}")


def _record_user_id(value: Any) -> tuple[str, list]:
    """The optional `user_id` of an incoming record (whose data it is: erasure and per-user caps
    find the record by it); not part of the stored record's content."""
    user_id = value.get("user_id", "") if isinstance(value, dict) else ""
    if user_id in ("", None):
        return "", []
    if not isinstance(user_id, str) or len(user_id) > 200 or "\x00" in user_id:
        return "", [("user_id", "Must be a string of at most 200 characters.")]
    return user_id, []


def _upload_item_check(item: UploadItem, dataset_type: str) -> tuple[list, dict, dict, str]:
    """(errors as [(field, message)], redacted record, PII counts, user id) of one incoming
    record. OpenAI preference lines are converted first (`feedback.openai_format`)."""
    if item.parse_error:
        return [("", item.parse_error)], {}, {}, ""
    value = item.value
    user_id, errors = _record_user_id(value)
    if dataset_type == Dataset.PREFERENCES and is_openai_preference(value):
        value, conversion_errors = openai_preference_to_record(value)
        if conversion_errors:
            return errors + conversion_errors, {}, {}, ""
    check, normalize = VALIDATORS[dataset_type]
    errors += check(value)
    if errors:
        return errors, {}, {}, ""
    data, pii = pii_redact_value(normalize(value))
    if dataset_type == Dataset.PREFERENCES and data["chosen"] == data["rejected"]:
        return [("rejected", "'chosen' and 'rejected' are identical once personal "
                             "data is redacted.")], {}, {}, ""
    return [], data, pii, user_id


def _dataset_upload_locked(tenant, dataset, items, *, skip_invalid, source, filename) -> dict:
    locked = Dataset.objects.select_for_update().get(pk=dataset.pk, tenant=tenant)
    writer = _CopyUpload if connection.vendor == "postgresql" else _Upload
    upload = writer(tenant=tenant, dataset=locked)
    with upload:  # one pass: check, redact, de-duplicate and write each record as it comes
        for item in items:
            upload.received += 1
            errors, data, pii, user_id = _upload_item_check(item, locked.type)
            if errors:
                upload.invalid += 1
                if len(upload.invalid_records) < MAX_LISTED_PROBLEMS:
                    upload.invalid_records.append({**item.locator, "errors": [
                        {"field": _field_path(locked.type, item.locator, f), "message": m}
                        for f, m in errors]})
                continue
            if upload.invalid and not skip_invalid:
                continue  # the upload will be refused; keep validating to list every bad record
            upload.add(item.locator, data, pii, user_id)

    report = {
        "at": timezone.now().isoformat(), "source": source, "filename": filename,
        "received": upload.received, "invalid": upload.invalid,
        "invalid_records": upload.invalid_records, "skip_invalid": skip_invalid,
    }
    if upload.received == 0:
        raise InvalidInput("empty_upload", "The upload has no records.",
                           details={"records": ["At least one record is required."]})
    if upload.invalid and not skip_invalid:
        report.update(accepted=False, stored=0, duplicates=0)
        raise _UploadRejected(report)
    upload.finish()
    locked.record_count = DatasetRecord.objects.filter(dataset=locked).count()
    locked.duplicate_count += upload.duplicates
    locked.pii_redaction_counts = pii_counts_add(locked.pii_redaction_counts, upload.pii_total)
    report.update(accepted=True, stored=upload.stored, duplicates=upload.duplicates,
                  duplicate_records=upload.duplicate_records, skipped=upload.invalid,
                  pii_redactions=upload.pii_total, record_count=locked.record_count)
    locked.last_validation_report = report
    locked.updated_at = timezone.now()
    locked.save(update_fields=["record_count", "duplicate_count", "pii_redaction_counts",
                               "last_validation_report", "updated_at"])
    return report
