"""Bulk rows into PostgreSQL with COPY, filling every column the Django model defines.

Used for the baseline of the ingestion benchmark and to create a million feedback rows for the
stats benchmark in seconds. Columns not given take the model field's default, so a field added
by a later migration does not break the benchmark.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import models


def _text(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def model_columns(model: type[models.Model]) -> list[models.Field]:
    return [f for f in model._meta.concrete_fields if not f.primary_key or not f.auto_created]


def copy_rows(conn, model: type[models.Model], rows: Iterable[dict[str, Any]]) -> int:
    """COPY `rows` (dicts keyed by field attname, e.g. `tenant_id`) into the model's table.

    Runs inside the connection's current transaction; the caller commits. Returns the row count.
    """
    fields = [f for f in model_columns(model) if not isinstance(f, models.AutoField)]
    defaults = {}
    for f in fields:
        if f.has_default():
            defaults[f.attname] = f.get_default()
        elif f.null:
            defaults[f.attname] = None
        elif f.blank and f.empty_strings_allowed:
            defaults[f.attname] = ""  # what the ORM stores for a blank text field left out
    columns = ", ".join(f'"{f.column}"' for f in fields)
    count = 0
    with conn.cursor() as cur, cur.copy(
        f'COPY "{model._meta.db_table}" ({columns}) FROM STDIN'
    ) as copy:
        for row in rows:
            values = []
            for f in fields:
                if f.attname in row:
                    values.append(_text(row[f.attname]))
                elif f.attname in defaults:
                    values.append(_text(defaults[f.attname]))
                else:
                    raise KeyError(f"{model.__name__}.{f.attname} has no default; give it")
            copy.write_row(values)
            count += 1
    return count
