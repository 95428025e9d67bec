"""Feedback, conversation logging and DataHub endpoints. Thin: validate, call, render."""

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response

from feedback import selectors, services
from feedback.api.serializers import (
    ConversationLogSerializer,
    ConversationSerializer,
    CorrectionReviewSerializer,
    DatasetChangeSerializer,
    DatasetRecordSerializer,
    DatasetRegisterSerializer,
    DatasetSerializer,
    FeedbackCreateSerializer,
    FeedbackSerializer,
    MessageSerializer,
    PendingCorrectionSerializer,
    RecordIdsSerializer,
    UploadFileSerializer,
)
from feedback.openai_format import (
    EXPORT_FORMATS,
    OPENAI_CHAT,
    OPENAI_PREFERENCE,
    openai_chat_line,
    openai_preference_line,
)
from feedback.validation import jsonl_lines
from tenants.api.base import TenantAPIView
from tenants.api.pagination import StandardPagination, paginated_schema, wrapped_list_schema
from tenants.api.serializers import flatten_errors
from tenants.api.streaming import JsonlDownloadMixin, jsonl_streaming_response
from tenants.errors import InvalidInput, TooLarge, UnsupportedMedia
from tenants.idempotency import idempotent_response
from tenants.services import audit_actor_from_request

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
    description="Retry-safe POST: a retry with the same key and body returns the first "
                "response and writes nothing again; the same key with another body is a 409.",
)
SKIP_INVALID_PARAMETER = OpenApiParameter(
    "skip_invalid", OpenApiTypes.BOOL, OpenApiParameter.QUERY, required=False,
    description="Store the valid records and list the invalid ones as skipped, instead of "
                "refusing the whole upload (the default: any invalid record stores nothing).",
)


class BodyLimitMixin:
    """Refuse an oversize JSON body (413) before it is parsed: DRF's JSON parser would read the
    stream without Django's DATA_UPLOAD_MAX_MEMORY_SIZE check. Runs after authentication, so
    outsiders still get 401/403/404 first."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if request.method == "POST" and not (request.content_type or "").startswith("multipart/"):
            request._request.body  # noqa: B018 - raises RequestDataTooBig above the limit


def _parse_bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"", "0", "false", "no", "off"}:
        return False
    raise InvalidInput("validation_error", "The request has invalid fields.",
                       details={name: ["Must be true or false."]})


def _unlinked_hint(tenant, row) -> str:
    return (f"Message {row.message_external_id!r} is not known to the platform yet. The feedback "
            "is stored unlinked and counts in the stats, but it cannot train until the platform "
            "knows the answer it rates: log the conversation with POST "
            f"/v1/tenants/{tenant.slug}/conversations (conversation_id "
            f"{row.conversation_external_id!r}, a message with message_id "
            f"{row.message_external_id!r}) and it links automatically.")


class FeedbackView(BodyLimitMixin, TenantAPIView):
    """POST: submit feedback on a message. GET: the tenant's feedback, newest first.

    Feedback on a message the platform does not know is NOT refused: it is stored unlinked
    (201, `"linked": false`, with a `hint`) and linked as soon as the conversation is logged
    (`POST /v1/tenants/{t}/conversations`) or served by the chat endpoint. Unlinked feedback
    counts in the readiness numbers but is not usable for training until linked. The same user
    (`metadata.user_id`) reacting again to the same message replaces their earlier feedback of
    the same kind (vote, correction, rating, report); the history is kept.
    """

    @extend_schema(
        parameters=[
            OpenApiParameter("type", OpenApiTypes.STR, required=False),
            OpenApiParameter("conversation_id", OpenApiTypes.STR, required=False),
            OpenApiParameter("message_id", OpenApiTypes.STR, required=False),
            OpenApiParameter("include_history", OpenApiTypes.BOOL, required=False),
        ],
        responses=paginated_schema(FeedbackSerializer),
    )
    def get(self, request, tenant):
        rows = selectors.feedback_list(
            tenant=self.tenant, type=request.query_params.get("type"),
            conversation_id=request.query_params.get("conversation_id"),
            message_id=request.query_params.get("message_id"),
            include_history=_parse_bool(request.query_params.get("include_history", ""),
                                        "include_history"),
        )
        paginator = StandardPagination()
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(FeedbackSerializer(page, many=True).data)

    @extend_schema(request=FeedbackCreateSerializer, responses={201: FeedbackSerializer},
                   parameters=[IDEMPOTENCY_PARAMETER])
    def post(self, request, tenant):
        return idempotent_response(request, tenant=self.tenant,
                                   handler=lambda: self._create(request))

    def _create(self, request):
        serializer = FeedbackCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = services.feedback_submit(tenant=self.tenant, **serializer.validated_data)
        body = FeedbackSerializer(result.feedback).data
        body["supersedes"] = result.superseded_ids
        if result.feedback.message_id is None:
            body["hint"] = _unlinked_hint(self.tenant, result.feedback)
        return Response(body, status=status.HTTP_201_CREATED)


class FeedbackStatsView(TenantAPIView):
    """Training readiness: counts per type, the seed's rule, what is missing, what is usable."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, tenant):
        return Response(selectors.feedback_stats(tenant=self.tenant))


class ConversationListView(BodyLimitMixin, TenantAPIView):
    """POST: log a conversation served elsewhere, or append its new messages. GET: list.

    Ids are the client's (`conversation_id`, `message_id`, unique per tenant); missing ones are
    generated (`conv_<hex>`, `msg_<hex>`) and returned. Re-sending known messages is harmless.
    Content is stored PII-redacted. Feedback that was waiting for these messages is linked.
    """

    @extend_schema(responses=paginated_schema(ConversationSerializer))
    def get(self, request, tenant):
        paginator = StandardPagination()
        page = paginator.paginate_queryset(
            selectors.conversation_list(tenant=self.tenant), request, view=self)
        return paginator.get_paginated_response(ConversationSerializer(page, many=True).data)

    @extend_schema(request=ConversationLogSerializer, responses={201: OpenApiTypes.OBJECT},
                   parameters=[IDEMPOTENCY_PARAMETER])
    def post(self, request, tenant):
        return idempotent_response(request, tenant=self.tenant,
                                   handler=lambda: self._log(request))

    def _log(self, request):
        serializer = ConversationLogSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = services.conversation_log(
            tenant=self.tenant, conversation_id=data.get("conversation_id"),
            messages=data["messages"], metadata=data.get("metadata"))
        body = {
            "conversation_id": result.conversation.external_id,
            "created": result.conversation_created,
            "messages": [{"message_id": m.external_id, "role": m.role, "position": m.position,
                          "created": m.external_id in result.created_ids}
                         for m in result.messages],
            "messages_added": len(result.created_ids),
            "linked_feedback": result.linked_feedback,
            "pii_redactions": result.pii_redactions,
        }
        return Response(body, status=status.HTTP_201_CREATED)


class ConversationDetailView(TenantAPIView):
    """One conversation with its (PII-redacted) messages in order."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, tenant, conversation_id: str):
        conversation = selectors.conversation_get(tenant=self.tenant,
                                                  conversation_id=conversation_id)
        body = ConversationSerializer(conversation).data
        messages = conversation.messages.select_related("served_by_version", "conversation")
        body["messages"] = MessageSerializer(messages.order_by("position"), many=True).data
        return Response(body)


class DatasetRegisterView(BodyLimitMixin, TenantAPIView):
    """Register a DataHub dataset -> 201 with its `id` (200 with the same dataset when the same
    name, type and data use are registered again; 409 if the name is taken otherwise)."""

    @extend_schema(request=DatasetRegisterSerializer, responses={201: DatasetSerializer},
                   parameters=[IDEMPOTENCY_PARAMETER])
    def post(self, request, tenant):
        return idempotent_response(request, tenant=self.tenant,
                                   handler=lambda: self._register(request))

    def _register(self, request):
        serializer = DatasetRegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        data_use = data.get("data_use") or {}
        dataset, created = services.dataset_register(
            tenant=self.tenant, name=data["name"], type=data["type"],
            allow_rag=data_use.get("allow_rag", False),
            allow_private_training=data_use.get("allow_private_training", True),
            evaluation_only=data_use.get("evaluation_only", False),
        )
        body = DatasetSerializer(dataset).data
        body["created"] = created
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class DatasetListView(TenantAPIView):
    @extend_schema(responses=wrapped_list_schema("datasets", DatasetSerializer, name="DatasetList"))
    def get(self, request, tenant):
        datasets = selectors.dataset_list(tenant=self.tenant)
        return Response({"datasets": DatasetSerializer(datasets, many=True).data})


class DatasetDetailView(TenantAPIView):
    """GET: a dataset with its record count, duplicates, PII redaction counts and the report of
    its last upload (accepted or refused). PATCH: change its `data_use` consent or name;
    `allow_private_training: false` takes its records out of every later job and out of past
    jobs' snapshots, and flags the versions trained on them. DELETE: the dataset and all its
    records go, with the same consequences; the answer lists what was removed and flagged."""

    @extend_schema(responses=DatasetSerializer)
    def get(self, request, tenant, dataset_id: int):
        dataset = selectors.dataset_get(tenant=self.tenant, dataset_id=dataset_id)
        return Response(DatasetSerializer(dataset).data)

    @extend_schema(request=DatasetChangeSerializer, responses=DatasetSerializer)
    def patch(self, request, tenant, dataset_id: int):
        dataset = selectors.dataset_get(tenant=self.tenant, dataset_id=dataset_id)
        serializer = DatasetChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        data_use = data.get("data_use") or {}
        actor, ip = audit_actor_from_request(request)
        dataset, withdrawn = services.dataset_data_use_change(
            tenant=self.tenant, dataset=dataset, name=data.get("name"),
            allow_rag=data_use.get("allow_rag"),
            allow_private_training=data_use.get("allow_private_training"),
            actor=actor, ip_address=ip)
        body = DatasetSerializer(dataset).data
        body["consent_revoked"] = bool(withdrawn)
        body.update(withdrawn)
        return Response(body)

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    def delete(self, request, tenant, dataset_id: int):
        dataset = selectors.dataset_get(tenant=self.tenant, dataset_id=dataset_id)
        actor, ip = audit_actor_from_request(request)
        return Response(services.dataset_delete(tenant=self.tenant, dataset=dataset,
                                                actor=actor, ip_address=ip))


class DatasetRecordsView(TenantAPIView):
    """The stored (validated, PII-redacted, de-duplicated) records of a dataset."""

    @extend_schema(responses=paginated_schema(DatasetRecordSerializer))
    def get(self, request, tenant, dataset_id: int):
        dataset = selectors.dataset_get(tenant=self.tenant, dataset_id=dataset_id)
        paginator = StandardPagination()
        page = paginator.paginate_queryset(dataset.records.order_by("id"), request, view=self)
        return paginator.get_paginated_response(DatasetRecordSerializer(page, many=True).data)


class DatasetRecordDetailView(TenantAPIView):
    """DELETE one record of a dataset (past snapshots lose it, versions trained on it are
    flagged); the answer lists what was removed and flagged."""

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT})
    def delete(self, request, tenant, dataset_id: int, record_id: int):
        dataset = selectors.dataset_get(tenant=self.tenant, dataset_id=dataset_id)
        actor, ip = audit_actor_from_request(request)
        return Response(services.dataset_records_delete(
            tenant=self.tenant, dataset=dataset, record_ids=[record_id], actor=actor,
            ip_address=ip))


class DatasetRecordsDeleteView(TenantAPIView):
    """POST `{"ids": [...]}`: delete several records of a dataset at once (all or nothing: an
    id the dataset does not have is a 404 and nothing is deleted)."""

    @extend_schema(request=RecordIdsSerializer, responses={200: OpenApiTypes.OBJECT})
    def post(self, request, tenant, dataset_id: int):
        dataset = selectors.dataset_get(tenant=self.tenant, dataset_id=dataset_id)
        serializer = RecordIdsSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        actor, ip = audit_actor_from_request(request)
        return Response(services.dataset_records_delete(
            tenant=self.tenant, dataset=dataset, record_ids=serializer.validated_data["ids"],
            actor=actor, ip_address=ip))


class DatasetExportView(JsonlDownloadMixin, TenantAPIView):
    """GET `?format=openai-chat` (conversations datasets) or `openai-preference` (preferences
    datasets; the default follows the dataset's type): the stored records as OpenAI's
    fine-tuning JSONL, streamed."""

    @extend_schema(parameters=[OpenApiParameter("format", OpenApiTypes.STR, required=False,
                                                enum=list(EXPORT_FORMATS))],
                   responses={(200, "application/jsonl"): OpenApiTypes.STR})
    def get(self, request, tenant, dataset_id: int):
        dataset = selectors.dataset_get(tenant=self.tenant, dataset_id=dataset_id)
        native = OPENAI_CHAT if dataset.type == "conversations" else OPENAI_PREFERENCE
        wanted = request.query_params.get("format") or native
        if wanted != native:
            raise InvalidInput("validation_error", "The request has invalid fields.",
                               details={"format": [f"Dataset {dataset.pk} holds {dataset.type}: "
                                                   f"export it as {native}."]})
        to_line = openai_chat_line if native == OPENAI_CHAT else openai_preference_line
        records = selectors.dataset_records(dataset=dataset)
        return jsonl_streaming_response((to_line(r.data) for r in records),
                                        filename=f"dataset-{dataset.pk}-{native}.jsonl")


class _CorrectionReviewMixin:
    def _review(self, request, ids, data):
        actor, ip = audit_actor_from_request(request)
        rows = services.correction_review(tenant=self.tenant, feedback_ids=ids,
                                          action=data["action"],
                                          correction=data.get("correction"), actor=actor,
                                          ip_address=ip)
        return Response({"reviewed": len(rows), "action": data["action"],
                         "corrections": PendingCorrectionSerializer(rows, many=True).data})


class CorrectionReviewListView(_CorrectionReviewMixin, TenantAPIView):
    """GET: the corrections review queue (`status` pending, the default, or approved /
    rejected), each with the answer it corrects. POST `{"ids": [...], "action": "approve" |
    "reject"}`: review many at once. With the tenant setting `review_corrections` on, only
    approved corrections train; a rejected one never trains."""

    @extend_schema(parameters=[OpenApiParameter("status", OpenApiTypes.STR, required=False,
                                                enum=["pending", "approved", "rejected"])],
                   responses=paginated_schema(PendingCorrectionSerializer))
    def get(self, request, tenant):
        status_filter = request.query_params.get("status") or "pending"
        if status_filter not in ("pending", "approved", "rejected"):
            raise InvalidInput("validation_error", "The request has invalid fields.",
                               details={"status": ["Must be pending, approved or rejected."]})
        rows = selectors.correction_review_queue(tenant=self.tenant, status=status_filter)
        paginator = StandardPagination()
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(
            PendingCorrectionSerializer(page, many=True).data)

    @extend_schema(request=CorrectionReviewSerializer, responses={200: OpenApiTypes.OBJECT})
    def post(self, request, tenant):
        serializer = CorrectionReviewSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "ids" not in data:
            raise InvalidInput("validation_error", "The request has invalid fields.",
                               details={"ids": ["This field is required."]})
        return self._review(request, data["ids"], data)


class CorrectionReviewDetailView(_CorrectionReviewMixin, TenantAPIView):
    """POST `{"action": "approve" | "reject" | "edit", "correction": "..." (edit)}` on one
    correction; edit replaces its text (PII-redacted) and approves it."""

    @extend_schema(request=CorrectionReviewSerializer, responses={200: OpenApiTypes.OBJECT},
                   operation_id="tenants_feedback_review_one")
    def post(self, request, tenant, feedback_id: int):
        serializer = CorrectionReviewSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._review(request, [feedback_id], serializer.validated_data)


def _upload_response(dataset, report: dict) -> Response:
    body = {"dataset_id": dataset.pk, "type": dataset.type, **report,
            "skipped_records": report["invalid_records"]}
    return Response(body, status=status.HTTP_201_CREATED)


class DatasetUploadView(BodyLimitMixin, TenantAPIView):
    """POST .../upload/conversations or .../upload/preferences with the seed's JSON body.

    Every record is validated first; any invalid record refuses the whole upload (400
    `invalid_records`, each bad record named by index and field path, nothing stored) unless
    `skip_invalid` is true (query parameter or body flag). Duplicates are counted, not stored.
    Uploading to a dataset of the other type is a 400 `dataset_type_mismatch`. Bodies are limited
    to 10 MB; use the JSONL file upload for larger sets.
    """

    kind: str = ""

    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT},
                   parameters=[IDEMPOTENCY_PARAMETER, SKIP_INVALID_PARAMETER])
    def post(self, request, tenant, dataset_id: int):
        return idempotent_response(request, tenant=self.tenant,
                                   handler=lambda: self._upload(request, dataset_id))

    def _upload(self, request, dataset_id: int):
        dataset = selectors.dataset_get(tenant=self.tenant, dataset_id=dataset_id)
        body = request.data
        if not isinstance(body, dict):
            raise InvalidInput("validation_error", "The body must be a JSON object.",
                               details={"non_field_errors": [
                                   f'Expected {{"{self.kind}": [...]}}.']})
        skip_invalid = _parse_bool(request.query_params.get("skip_invalid",
                                                            body.get("skip_invalid", False)),
                                   "skip_invalid")
        services.dataset_require_type(dataset=dataset, upload_type=self.kind)
        records = body.get(self.kind)
        if not isinstance(records, list):
            raise InvalidInput("validation_error", "The request has invalid fields.",
                               details={self.kind: [f"Required: a list of {self.kind} records."]})
        report = services.dataset_upload(
            tenant=self.tenant, dataset=dataset, expected_type=self.kind,
            items=services.upload_items_from_list(records), skip_invalid=skip_invalid,
            source="json")
        return _upload_response(dataset, report)


class DatasetFileUploadView(TenantAPIView):
    """POST .../upload (or .../upload/jsonl): multipart/form-data, field `file`, a JSONL file of
    records of the dataset's type, one JSON object per line (`{"messages": [...]}` or
    `{"prompt", "chosen", "rejected"}`). Read line by line, never whole; errors name the line.
    Same atomicity, `skip_invalid` and duplicate rules as the JSON uploads."""

    @extend_schema(request={"multipart/form-data": UploadFileSerializer},
                   responses={201: OpenApiTypes.OBJECT},
                   parameters=[IDEMPOTENCY_PARAMETER, SKIP_INVALID_PARAMETER])
    def post(self, request, tenant, dataset_id: int):
        limit = settings.MAX_UPLOAD_FILE_BYTES
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit + 64 * 1024:
            raise TooLarge("payload_too_large", f"Files are limited to {limit} bytes.")
        if not (request.content_type or "").startswith("multipart/form-data"):
            raise UnsupportedMedia(
                "unsupported_media_type",
                "Send the JSONL file as multipart/form-data in the field 'file'.")
        return idempotent_response(request, tenant=self.tenant,
                                   handler=lambda: self._upload(request, dataset_id))

    def _upload(self, request, dataset_id: int):
        dataset = selectors.dataset_get(tenant=self.tenant, dataset_id=dataset_id)
        serializer = UploadFileSerializer(data=request.data)
        if not serializer.is_valid():
            raise InvalidInput("validation_error", "The request has invalid fields.",
                               details=flatten_errors(serializer.errors))
        uploaded = serializer.validated_data["file"]
        if uploaded.size > settings.MAX_UPLOAD_FILE_BYTES:
            raise TooLarge("payload_too_large",
                           f"Files are limited to {settings.MAX_UPLOAD_FILE_BYTES} bytes.")
        skip_invalid = serializer.validated_data["skip_invalid"] or _parse_bool(
            request.query_params.get("skip_invalid", ""), "skip_invalid")
        report = services.dataset_upload(
            tenant=self.tenant, dataset=dataset,
            items=services.upload_items_from_jsonl(jsonl_lines(uploaded)),
            skip_invalid=skip_invalid, source="jsonl", filename=uploaded.name[:200])
        return _upload_response(dataset, report)
