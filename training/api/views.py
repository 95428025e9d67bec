"""Training endpoints: start (LoRA SFT, DPO, KTO), list, status, curves, events, cancel; webhooks;
erasure. Thin: a serializer validates, one service or selector does the work."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response

from tenants.api.base import TenantAPIView
from tenants.api.pagination import StandardPagination
from tenants.services import audit_actor_from_request
from training import selectors, services, webhooks
from training.api.serializers import (
    DpoTrainSerializer,
    ErasureSerializer,
    KtoTrainSerializer,
    LoraTrainSerializer,
    WebhookCreateSerializer,
)
from training.erasure import training_data_erase_user
from training.models import Webhook


def _estimate_body(estimate: dict) -> dict:
    body = dict(estimate)
    body["estimated_cost"] = float(body["estimated_cost"])
    return body


class _TrainStartView(TenantAPIView):
    method = "sft"
    serializer_class = LoraTrainSerializer

    def post(self, request, tenant):
        serializer = self.serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        params = {k: data[k] for k in self.serializer_class.PARAM_FIELDS if k in data}
        actor, ip = audit_actor_from_request(request)
        job, estimate = services.training_job_create(
            tenant=self.tenant,
            request=services.JobRequest(
                method=self.method, params=params, preset=data.get("preset") or "",
                base_model=data.get("base_model") or None,
                continue_from=data.get("continue_from") or None,
                dry_run=data.get("dry_run", False),
            ),
            actor=actor, ip_address=ip,
        )
        body = _estimate_body(estimate)
        if job is None:
            return Response({"job_id": None, "status": "dry_run", "dry_run": True, **body})
        return Response({"job_id": job.id, "status": job.status, "dry_run": False,
                         "created_at": job.created_at.isoformat(), **body},
                        status=status.HTTP_201_CREATED)


class LoraTrainView(_TrainStartView):
    """Start a LoRA SFT job from the tenant's corrections, rated answers and datasets."""

    method = "sft"
    serializer_class = LoraTrainSerializer

    @extend_schema(request=LoraTrainSerializer, responses={201: OpenApiResponse(
        description="job_id, status, estimated_duration_minutes, estimated_cost")})
    def post(self, request, tenant):
        return super().post(request, tenant)


class DpoTrainView(_TrainStartView):
    """Start a DPO job from the tenant's preference pairs."""

    method = "dpo"
    serializer_class = DpoTrainSerializer

    @extend_schema(request=DpoTrainSerializer, responses={201: OpenApiResponse(
        description="job_id, status, estimated_duration_minutes, estimated_cost")})
    def post(self, request, tenant):
        return super().post(request, tenant)


class KtoTrainView(_TrainStartView):
    """Start a KTO job from the tenant's unpaired feedback: thumbs, ratings and corrections."""

    method = "kto"
    serializer_class = KtoTrainSerializer

    @extend_schema(request=KtoTrainSerializer, responses={201: OpenApiResponse(
        description="job_id, status, estimated_duration_minutes, estimated_cost")})
    def post(self, request, tenant):
        return super().post(request, tenant)


class TrainingJobListView(TenantAPIView):
    """The tenant's jobs, newest first (paginated: count, next, previous, results)."""

    @extend_schema(operation_id="training_jobs_list",
                   responses={200: OpenApiResponse(description="paginated job list")})
    def get(self, request, tenant):
        paginator = StandardPagination()
        page = paginator.paginate_queryset(selectors.training_job_list(tenant=self.tenant),
                                           request, view=self)
        return paginator.get_paginated_response(
            [selectors.training_job_document(job, summary=True) for job in page])


class TrainingJobDetailView(TenantAPIView):
    """One job as the seed's "Check Job Status" reads it."""

    @extend_schema(responses={200: OpenApiResponse(description="job status")})
    def get(self, request, tenant, job_id):
        job = selectors.training_job_get(tenant=self.tenant, job_id=job_id)
        return Response(selectors.training_job_document(job))


class TrainingJobMetricsView(TenantAPIView):
    """The loss curve: train and eval points (DPO rewards and margins included)."""

    @extend_schema(responses={200: OpenApiResponse(description="metric history")})
    def get(self, request, tenant, job_id):
        job = selectors.training_job_get(tenant=self.tenant, job_id=job_id)
        return Response(selectors.training_job_metrics(job=job))


class TrainingJobEventsView(TenantAPIView):
    """The job's event log: every transition and notable happening, oldest first."""

    @extend_schema(responses={200: OpenApiResponse(description="event log")})
    def get(self, request, tenant, job_id):
        job = selectors.training_job_get(tenant=self.tenant, job_id=job_id)
        events = [
            {"type": e.type, "from_status": e.from_status or None,
             "to_status": e.to_status or None, "message": e.message, "data": e.data,
             "created_at": e.created_at.isoformat()}
            for e in selectors.training_job_events(job=job)
        ]
        return Response({"job_id": job.id, "events": events})


class TrainingJobCancelView(TenantAPIView):
    """Cancel a queued or running job; a job that already ended answers 409."""

    @extend_schema(request=None, responses={200: OpenApiResponse(description="job status")})
    def post(self, request, tenant, job_id):
        job = selectors.training_job_get(tenant=self.tenant, job_id=job_id)
        actor, ip = audit_actor_from_request(request)
        job = services.training_job_cancel(job=job, actor=actor, ip_address=ip)
        return Response(selectors.training_job_document(job))


class TrainingUsageView(TenantAPIView):
    """This month's training usage, quota and cost."""

    @extend_schema(responses={200: OpenApiResponse(description="usage")})
    def get(self, request, tenant):
        return Response(selectors.training_usage(tenant=self.tenant))


def _webhook_body(hook: Webhook) -> dict:
    return {"id": hook.id, "url": hook.url, "events": hook.events or list(Webhook.EVENTS),
            "is_active": hook.is_active, "created_at": hook.created_at.isoformat()}


class WebhookListView(TenantAPIView):
    """Register a URL for job state changes, or list the registered ones."""

    @extend_schema(operation_id="webhooks_list",
                   responses={200: OpenApiResponse(description="webhooks")})
    def get(self, request, tenant):
        hooks = Webhook.objects.filter(tenant=self.tenant)
        return Response({"webhooks": [_webhook_body(h) for h in hooks]})

    @extend_schema(request=WebhookCreateSerializer,
                   responses={201: OpenApiResponse(description="the webhook and signing secret")})
    def post(self, request, tenant):
        serializer = WebhookCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        hook = webhooks.webhook_create(tenant=self.tenant, **serializer.validated_data)
        body = _webhook_body(hook)
        # The receiver needs the secret to verify signatures; it is shown to write keys only.
        body["signing_secret"] = self.tenant.webhook_secret
        body["signature"] = {"header": "X-SynapseX-Signature",
                             "timestamp_header": "X-SynapseX-Timestamp",
                             "scheme": "sha256=HMAC-SHA256(secret, '<timestamp>.<body>')"}
        return Response(body, status=status.HTTP_201_CREATED)


class WebhookDetailView(TenantAPIView):
    @extend_schema(responses={200: OpenApiResponse(description="webhook and recent deliveries")})
    def get(self, request, tenant, webhook_id: int):
        hook = get_object_or_404(Webhook, tenant=self.tenant, pk=webhook_id)
        deliveries = [
            {"id": d.id, "event": d.event, "job_id": d.job_id, "status": d.status,
             "attempts": d.attempts, "response_status": d.response_status,
             "last_error": d.last_error or None, "created_at": d.created_at.isoformat(),
             "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None}
            for d in hook.deliveries.order_by("-created_at")[:50]
        ]
        return Response({**_webhook_body(hook), "deliveries": deliveries})

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, tenant, webhook_id: int):
        hook = get_object_or_404(Webhook, tenant=self.tenant, pk=webhook_id)
        webhooks.webhook_delete(webhook=hook)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ErasureView(TenantAPIView):
    """Erase one end user's feedback and messages from all future training."""

    @extend_schema(request=ErasureSerializer,
                   responses={200: OpenApiResponse(description="what was erased and marked")})
    def post(self, request, tenant):
        serializer = ErasureSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        actor, ip = audit_actor_from_request(request)
        result = training_data_erase_user(tenant=self.tenant,
                                          user_id=serializer.validated_data["user_id"],
                                          actor=actor, ip_address=ip)
        return Response(result)
