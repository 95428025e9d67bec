"""Adapter versions, activation, export, per-version metrics, A/B promotion and chat."""

from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.response import Response

from adapters import metrics, selectors, services
from adapters.api.serializers import (
    ActivateSerializer,
    AdapterVersionSerializer,
    ChatCompletionSerializer,
)
from adapters.serving import (
    chat_completion_create,
    chat_completion_stream,
    serving_models_list,
)
from tenants.api.base import TenantAPIView
from tenants.errors import InvalidInput
from tenants.services import audit_actor_from_request


def _version_body(tenant, version) -> dict:
    context = {"ab_weights": selectors.ab_weights_of(tenant)}
    return AdapterVersionSerializer(version, context=context).data


class LoraListView(TenantAPIView):
    """The tenant's adapter versions, newest first, with the active one and the A/B split."""

    @extend_schema(operation_id="lora_list", responses=inline_serializer(
        name="LoraVersionList", fields={
            "versions": AdapterVersionSerializer(many=True),
            "active_version": serializers.CharField(allow_null=True),
            "ab_test": serializers.DictField(),
            "plan": serializers.DictField(),
        }))
    def get(self, request, tenant):
        versions = selectors.adapter_version_list(tenant=self.tenant)
        context = {"ab_weights": selectors.ab_weights_of(self.tenant)}
        active = next((v for v in versions if v.is_active), None)
        ready = sum(1 for v in versions if not v.is_archived)
        return Response({
            "versions": AdapterVersionSerializer(versions, many=True, context=context).data,
            "active_version": active.version if active else None,
            "ab_test": services.ab_test_settings(self.tenant),
            "plan": {"slug": self.tenant.plan.slug,
                     "max_lora_versions": self.tenant.plan.max_lora_versions,
                     "stored_versions": ready},
        })


class LoraDetailView(TenantAPIView):
    """One version (GET), or delete its files (DELETE: archive; 409 when active or in A/B)."""

    @extend_schema(responses=AdapterVersionSerializer)
    def get(self, request, tenant, version):
        found = selectors.adapter_version_get(tenant=self.tenant, label=version)
        return Response(_version_body(self.tenant, found))

    @extend_schema(request=None, responses=AdapterVersionSerializer)
    def delete(self, request, tenant, version):
        found = selectors.adapter_version_get(tenant=self.tenant, label=version)
        actor, ip = audit_actor_from_request(request)
        archived = services.adapter_version_archive(version=found, actor=actor, ip_address=ip)
        return Response(_version_body(self.tenant, archived))


class LoraActivateView(TenantAPIView):
    """Serve this version from the next request on; rollback = activating an older version."""

    @extend_schema(request=ActivateSerializer, responses=AdapterVersionSerializer)
    def post(self, request, tenant, version):
        serializer = ActivateSerializer(data=request.data or {})
        serializer.is_valid(raise_exception=True)
        found = selectors.adapter_version_get(tenant=self.tenant, label=version)
        actor, ip = audit_actor_from_request(request)
        activated = services.adapter_version_activate(
            version=found, force=serializer.validated_data["force"], actor=actor,
            ip_address=ip)
        return Response(_version_body(self.tenant, activated))


class LoraDownloadView(TenantAPIView):
    """Export: a zip of adapter_model.safetensors + adapter_config.json + manifest.json (or one
    of them with `?file=`), each checked against its recorded sha256 first."""

    FILES = ("adapter_model.safetensors", "adapter_config.json", "manifest.json")

    @extend_schema(
        parameters=[OpenApiParameter("file", str, enum=list(FILES), required=False)],
        responses={(200, "application/zip"): OpenApiResponse(description="the adapter")},
    )
    def get(self, request, tenant, version):
        found = selectors.adapter_version_get(tenant=self.tenant, label=version)
        wanted = request.query_params.get("file")
        if wanted is not None and wanted not in self.FILES:
            raise InvalidInput("validation_error", "The request has invalid fields.",
                               details={"file": [f"One of {', '.join(self.FILES)}."]})
        if wanted:
            data = services.adapter_files_read_verified(found)[wanted]
            content_type = ("application/json" if wanted.endswith(".json")
                            else "application/octet-stream")
            filename = f"{self.tenant.slug}-{found.version}-{wanted}"
        else:
            data = services.adapter_export_zip(found)
            content_type = "application/zip"
            filename = f"{self.tenant.slug}-{found.version}.zip"
        response = HttpResponse(data, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["X-Adapter-SHA256"] = found.sha256
        return response


class LoraVersionMetricsView(TenantAPIView):
    """Online metrics of one version, from feedback on the messages it served."""

    @extend_schema(operation_id="lora_version_metrics",
                   responses=OpenApiResponse(description="per-version metrics"))
    def get(self, request, tenant, version):
        found = selectors.adapter_version_get(tenant=self.tenant, label=version)
        return Response(metrics.version_online_metrics(version=found))


class LoraEvaluationView(TenantAPIView):
    """How the version scored after training: its answers, the then-active version's and the
    base model's on the tenant's golden set, its trained prompts, general questions and reported
    prompts; regressions; side-by-side samples; and what the activation gate decides now."""

    @extend_schema(operation_id="lora_version_evaluation",
                   responses=OpenApiResponse(description="the version's evaluation"))
    def get(self, request, tenant, version):
        found = selectors.adapter_version_get(tenant=self.tenant, label=version)
        body = selectors.adapter_version_evaluation(version=found)
        current = selectors.adapter_version_current(tenant=self.tenant)
        if current is None or current.pk != found.pk:
            decision = services.activation_check(found, current)
            body["activation"] = {"active_version": current.version if current else None,
                                  "needs_force": bool(decision["blocked"]), **decision}
        return Response(body)


class LoraMetricsView(TenantAPIView):
    """Online metrics of every version, the comparison of the A/B arms, the auto-rollback check
    of the active version (each with its sequential test) and the latest automatic decisions."""

    @extend_schema(operation_id="lora_metrics",
                   responses=OpenApiResponse(description="all versions + A/B comparison"))
    def get(self, request, tenant):
        return Response({
            "versions": metrics.versions_online_metrics(tenant=self.tenant),
            "ab_test": metrics.ab_test_comparison(tenant=self.tenant),
            "rollback": metrics.rollback_check(tenant=self.tenant),
            "decisions": metrics.online_decisions_recent(tenant=self.tenant),
        })


class AbTestPromoteView(TenantAPIView):
    """Activate the A/B test's significant winner and turn the split off, in one call."""

    @extend_schema(request=None, responses=OpenApiResponse(description="promoted version"))
    def post(self, request, tenant):
        actor, ip = audit_actor_from_request(request)
        result = services.adapter_ab_test_promote(tenant=self.tenant, actor=actor, ip_address=ip)
        return Response({
            "promoted": _version_body(self.tenant, result["promoted"]),
            "comparison": result["comparison"],
            "lora_ab_test": result["settings"]["lora_ab_test"],
        })


class ChatResponseSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    created = serializers.IntegerField()
    model = serializers.CharField()
    choices = serializers.ListField(child=serializers.DictField())
    usage = serializers.DictField()
    conversation_id = serializers.CharField()
    message_id = serializers.CharField()
    adapter_version = serializers.CharField(allow_null=True)


class ChatCompletionsView(TenantAPIView):
    """OpenAI-compatible chat completions, answered by the tenant's active adapter or A/B arm;
    with `stream: true`, server-sent events in OpenAI's `chat.completion.chunk` format."""

    @extend_schema(request=ChatCompletionSerializer, responses={
        (200, "application/json"): ChatResponseSerializer,
        (200, "text/event-stream"): OpenApiResponse(
            response=OpenApiTypes.STR,
            description="with stream=true: `data: {chat.completion.chunk}` events, then "
                        "`data: [DONE]`"),
    })
    def post(self, request, tenant):
        serializer = ChatCompletionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        arguments = {
            "tenant": self.tenant, "messages": data["messages"],
            "max_tokens": data["max_tokens"], "temperature": data["temperature"],
            "top_p": data.get("top_p"), "conversation_id": data.get("conversation_id"),
            "adapter_version": data.get("adapter_version"), "model": data.get("model"),
            "user": data.get("user", ""),
        }
        if data["stream"]:
            response = StreamingHttpResponse(chat_completion_stream(**arguments),
                                             content_type="text/event-stream")
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"  # proxies must pass each event on at once
            return response
        return Response(chat_completion_create(**arguments))


class ModelListView(TenantAPIView):
    """The `model` values chat accepts for this tenant ("base" and each ready version), in
    OpenAI's list shape."""

    @extend_schema(operation_id="models_list", responses=inline_serializer(
        name="ModelList", fields={
            "object": serializers.CharField(),
            "data": serializers.ListField(child=serializers.DictField()),
        }))
    def get(self, request, tenant):
        return Response(serving_models_list(tenant=self.tenant))
