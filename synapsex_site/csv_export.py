"""CSV export that is safe to open in a spreadsheet (no formula injection).

Tenants' users write feedback and corrections; an operator or customer opening an export in
Excel / LibreOffice / Google Sheets must not have a cell like `=HYPERLINK(...)` or
`=cmd|' /C calc'!A0` evaluated. OWASP's rule: a cell that starts with `=`, `+`, `-`, `@`, a tab
or a carriage return is prefixed with a single quote, which spreadsheets show as text. Numbers
(ints, floats) are written as they are, so a negative rating stays a number.

Any endpoint that exports tenant text as CSV (e.g. a future `GET .../feedback/export.csv`) should
build its body with `csv_export_rows` (or at least pass every cell through `csv_safe_cell`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_safe_cell(value: Any) -> Any:
    """The value as a spreadsheet will take it as plain text; non-strings are left alone
    (numbers) or stringified (None -> "", others via str)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    text = str(value).replace("\x00", "")
    # Leading whitespace does not stop a spreadsheet from reading a formula: look past it.
    if text.lstrip(" ").startswith(FORMULA_PREFIXES) or text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def csv_export_rows(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A whole CSV document (header + rows), every cell passed through `csv_safe_cell`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow([csv_safe_cell(h) for h in header])
    for row in rows:
        writer.writerow([csv_safe_cell(cell) for cell in row])
    return buffer.getvalue()
