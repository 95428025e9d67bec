from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response

from tenants.api.base import TenantAPIView
from tenants.api.pagination import wrapped_list_schema
from tenants.api.serializers import (
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    TenantSettingsSerializer,
)
from tenants.models import ApiKey
from tenants.selectors import tenant_settings_document
from tenants.services import (
    api_key_create,
    api_key_revoke,
    audit_actor_from_request,
    audit_log_record,
    tenant_settings_change,
)


class TenantSettingsView(TenantAPIView):
    """GET and PATCH the tenant's settings (A/B split, automatic training, compute backend)."""

    @extend_schema(responses=TenantSettingsSerializer)
    def get(self, request, tenant):
        return Response(tenant_settings_document(tenant=self.tenant))

    @extend_schema(request=TenantSettingsSerializer, responses=TenantSettingsSerializer)
    def patch(self, request, tenant):
        serializer = TenantSettingsSerializer(
            data=request.data, partial=True, context={"tenant": self.tenant}
        )
        serializer.is_valid(raise_exception=True)
        actor, ip = audit_actor_from_request(request)
        updated = tenant_settings_change(tenant=self.tenant, changes=serializer.validated_data,
                                         actor=actor, ip_address=ip)
        return Response(updated)


class ApiKeyListView(TenantAPIView):
    """List the tenant's API keys (never their secrets) or create one (secret shown once)."""

    @extend_schema(responses=wrapped_list_schema("keys", ApiKeySerializer, name="ApiKeyList"))
    def get(self, request, tenant):
        keys = ApiKey.objects.filter(tenant=self.tenant)
        return Response({"keys": ApiKeySerializer(keys, many=True).data})

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: ApiKeySerializer})
    def post(self, request, tenant):
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key, secret = api_key_create(tenant=self.tenant, **serializer.validated_data)
        actor, ip = audit_actor_from_request(request)
        audit_log_record(action="api_key.created", actor=actor, ip_address=ip,
                         tenant=self.tenant, target=key.prefix)
        body = ApiKeySerializer(key).data
        body["secret"] = secret
        return Response(body, status=status.HTTP_201_CREATED)


class ApiKeyRevokeView(TenantAPIView):
    @extend_schema(request=None, responses=ApiKeySerializer)
    def post(self, request, tenant, key_id: int):
        key = get_object_or_404(ApiKey, tenant=self.tenant, pk=key_id)
        api_key_revoke(key=key)
        actor, ip = audit_actor_from_request(request)
        audit_log_record(action="api_key.revoked", actor=actor, ip_address=ip,
                         tenant=self.tenant, target=key.prefix)
        return Response(ApiKeySerializer(key).data)
