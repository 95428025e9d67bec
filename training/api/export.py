"""GET /v1/tenants/{t}/export: the tenant's training data in OpenAI's fine-tuning formats."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema

from feedback.openai_format import (
    EXPORT_FORMATS,
    OPENAI_CHAT,
    openai_chat_line,
    openai_preference_line,
)
from tenants.api.base import TenantAPIView
from tenants.api.streaming import JsonlDownloadMixin, jsonl_streaming_response
from tenants.errors import InvalidInput
from training.compiler import training_data_compile


class TrainingDataExportView(JsonlDownloadMixin, TenantAPIView):
    """The data a training job of the tenant would use now, streamed as JSONL in OpenAI's
    formats: `format=openai-chat` (the SFT examples: corrections, rated answers, consenting
    conversation datasets) or `openai-preference` (the DPO pairs: corrections against the answer
    they correct, thumbs pairs, consenting preference datasets). Train and held-out examples
    both; text as stored (PII-redacted). A dataset's own records: GET .../datasets/{id}/export.
    """

    @extend_schema(parameters=[OpenApiParameter("format", OpenApiTypes.STR, required=True,
                                                enum=list(EXPORT_FORMATS))],
                   responses={(200, "application/jsonl"): OpenApiTypes.STR})
    def get(self, request, tenant):
        wanted = request.query_params.get("format") or ""
        if wanted not in EXPORT_FORMATS:
            raise InvalidInput("validation_error", "The request has invalid fields.",
                               details={"format": [f"Must be one of {', '.join(EXPORT_FORMATS)}."]})
        method = "sft" if wanted == OPENAI_CHAT else "dpo"
        compiled = training_data_compile(tenant=self.tenant, method=method)
        to_line = openai_chat_line if method == "sft" else openai_preference_line
        records = compiled.train + compiled.eval
        return jsonl_streaming_response((to_line(r) for r in records),
                                        filename=f"{self.tenant.slug}-{wanted}.jsonl")
