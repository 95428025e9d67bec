"""The tenant-scoped base for every `/v1/tenants/{tenant}/...` endpoint.

Scoping happens once, here: the URL's tenant must be the API key's tenant, otherwise the answer
is 404 whether or not the tenant exists (no hint to outsiders). Views read `self.tenant`.
"""

from rest_framework import generics, viewsets
from rest_framework.exceptions import NotFound
from rest_framework.views import APIView

from tenants.models import ApiKey, Tenant


class TenantScopedMixin:
    tenant_url_kwarg = "tenant"
    tenant: Tenant

    def check_permissions(self, request):
        # Another tenant's key learns nothing here, not even that its key is read-only: the
        # tenant check comes before the permission checks (a missing key still gets its 401).
        key = request.auth
        if isinstance(key, ApiKey) and key.tenant.slug != self.kwargs.get(self.tenant_url_kwarg):
            raise NotFound("Tenant not found.")
        super().check_permissions(request)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication + permissions + throttling
        key = request.auth
        slug = kwargs.get(self.tenant_url_kwarg)
        if not isinstance(key, ApiKey) or key.tenant.slug != slug:
            raise NotFound("Tenant not found.")
        self.tenant = key.tenant

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["tenant"] = getattr(self, "tenant", None)
        return context


class TenantAPIView(TenantScopedMixin, APIView):
    """A plain endpoint of one tenant."""


class TenantGenericAPIView(TenantScopedMixin, generics.GenericAPIView):
    """A generic endpoint whose queryset is filtered to the tenant by `get_queryset`."""

    def get_queryset(self):
        return super().get_queryset().filter(tenant=self.tenant)


class TenantModelViewSet(TenantScopedMixin, viewsets.GenericViewSet):
    def get_queryset(self):
        return super().get_queryset().filter(tenant=self.tenant)
