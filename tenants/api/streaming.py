"""Streamed JSONL downloads (exports) from the API."""

from __future__ import annotations

import json
from collections.abc import Iterable

from django.http import StreamingHttpResponse


class JsonlDownloadMixin:
    """For a view whose `format` query parameter names a data format, not a renderer.

    DRF reads `?format=` as a renderer choice and answers 404 for an unknown one before the view
    runs; here negotiation falls back to the default (JSON) renderer, so errors still get the
    envelope and the view reads `format` itself."""

    def perform_content_negotiation(self, request, force=False):
        return super().perform_content_negotiation(request, force=True)


def jsonl_streaming_response(lines: Iterable[dict], *, filename: str) -> StreamingHttpResponse:
    """One JSON object a line, written as it is produced (never the whole file in memory)."""
    response = StreamingHttpResponse(
        (json.dumps(line, ensure_ascii=False) + "\n" for line in lines),
        content_type="application/jsonl; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
