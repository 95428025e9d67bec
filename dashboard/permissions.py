"""Who may see and do what in the browser dashboards.

The API scopes by API key (`tenants.api.base`); the dashboards scope by Django session and
`tenants.Membership`. Every tenant page and every chart data endpoint goes through
`TenantMemberMixin`, so the tenant check lives in one place:
- not a member of the tenant (or the tenant does not exist) -> 404, no hint that it exists;
- a viewer may read (GET) but every action (POST) needs the admin role -> 403; a membership
  without a recognised role (blank, or a role since removed) reads like a viewer and acts like
  nobody.
Staff users are operators (SECURITY.md, "Staff on tenant pages"): a staff user who is not a
member sees every tenant read-only, and every such request (page or chart data) leaves an
`AuditLogEntry` `staff.tenant_view` on that tenant, so a tenant's log shows each time an operator
looked; their writes are 403 (acting needs an admin membership, and then it is the member who
acts, unaudited as a view). Only staff may open `/staff/`.
"""

from dataclasses import dataclass

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import Http404

from tenants.models import Membership, Tenant
from tenants.selectors import membership_get, membership_list_for_user, tenant_get_by_slug
from tenants.services import audit_actor_from_request, audit_log_record


@dataclass(frozen=True)
class TenantAccess:
    """A user's access to one tenant, as the templates and views need it."""

    tenant: Tenant
    role: str
    # A staff user reading a tenant they are not a member of: read-only, each request audited.
    staff_view: bool = False

    @property
    def can_act(self) -> bool:
        return self.role == Membership.ADMIN and not self.staff_view


def tenant_access_get(*, user, slug: str) -> TenantAccess:
    """The user's access to the tenant `slug`, or Http404 when they have none.

    A missing tenant and a tenant the user is not a member of look the same (404), so a member of
    one tenant cannot probe for the others' slugs.
    """
    if not user.is_authenticated:
        raise Http404
    membership = membership_get(user=user, slug=slug)
    if membership is not None:
        return TenantAccess(tenant=membership.tenant, role=membership.role)
    if user.is_staff:
        tenant = tenant_get_by_slug(slug=slug)
        if tenant is not None:
            return TenantAccess(tenant=tenant, role=Membership.VIEWER, staff_view=True)
    raise Http404


def tenant_accesses_for_user(user) -> list[TenantAccess]:
    """Every tenant the user is a member of, with the role, by slug."""
    return [TenantAccess(tenant=m.tenant, role=m.role)
            for m in membership_list_for_user(user=user)]


class TenantMemberMixin(LoginRequiredMixin):
    """Resolves `self.access` / `self.tenant` from the URL's `slug` for members only.

    POST, PUT, PATCH and DELETE need the admin role; a viewer gets 403 before the handler runs,
    so no action can forget the check.
    """

    admin_methods = {"post", "put", "patch", "delete"}

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        self.access = tenant_access_get(user=request.user, slug=kwargs["slug"])
        self.tenant = self.access.tenant
        if request.method.lower() in self.admin_methods and not self.access.can_act:
            if self.access.staff_view:
                raise PermissionDenied("Staff read tenants; acting needs an admin membership.")
            raise PermissionDenied("Viewers cannot change anything; ask a tenant admin.")
        if self.access.staff_view:
            actor, ip = audit_actor_from_request(request)
            audit_log_record(action="staff.tenant_view", actor=actor, tenant=self.tenant,
                             ip_address=ip, target=request.path[:200],
                             details={"method": request.method})
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["access"] = self.access
        context["tenant"] = self.tenant
        return context


class StaffRequiredMixin(LoginRequiredMixin):
    """Operators only: a logged-in user who is not staff gets 403."""

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        if not request.user.is_staff:
            raise PermissionDenied("The staff dashboard is for operators.")
        return super().dispatch(request, *args, **kwargs)
