"""Tenant pages for the data a tenant controls: deleting a dataset (after a confirmation page),
changing its consent, and the corrections review queue. Same services as the API
(`feedback.services`), same access rules (`TenantMemberMixin`: members read, admins act)."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect
from django.views import View

from dashboard.permissions import TenantMemberMixin
from dashboard.views import (
    TenantPage,
    error_lines,
    found_or_404,
    settings_change,
    settings_document,
)
from feedback.selectors import correction_review_queue, dataset_get
from tenants.errors import DomainError
from tenants.services import audit_actor_from_request

REVIEW_PAGE_ROWS = 200


def withdrawal_summary(result: dict) -> str:
    """What a withdrawal reached, for the page's message."""
    parts = []
    snapshots = result.get("snapshots_rewritten") or []
    if snapshots:
        parts.append(f"{len(snapshots)} past job snapshot{'s' if len(snapshots) != 1 else ''} "
                     "rewritten without them")
    versions = result.get("adapter_versions_needing_retraining") or []
    if versions:
        parts.append(f"{', '.join(versions)} flagged as needing retraining")
    return "; ".join(parts)


class DatasetDeleteView(TenantPage):
    """GET: the confirmation page (what goes, what it reaches). POST: delete."""

    template_name = "dashboard/dataset_delete.html"
    nav = "datasets"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["dataset"] = found_or_404(dataset_get, tenant=self.tenant,
                                          dataset_id=self.kwargs["dataset_id"])
        return context

    def post(self, request, slug, dataset_id):
        from feedback.services import dataset_delete

        dataset = found_or_404(dataset_get, tenant=self.tenant, dataset_id=dataset_id)
        actor, ip = audit_actor_from_request(request)
        result = dataset_delete(tenant=self.tenant, dataset=dataset, actor=actor,
                                ip_address=ip)
        summary = withdrawal_summary(result)
        messages.success(request, f"Dataset “{dataset.name}” and its {result['records_deleted']} "
                                  f"records deleted{'; ' + summary if summary else ''}.")
        return redirect("dashboard:datasets", self.tenant.slug)


class DatasetConsentView(TenantMemberMixin, View):
    """POST the dataset's data use (checkboxes `allow_private_training`, `allow_rag`)."""

    def post(self, request, slug, dataset_id):
        from feedback.services import dataset_data_use_change

        dataset = found_or_404(dataset_get, tenant=self.tenant, dataset_id=dataset_id)
        actor, ip = audit_actor_from_request(request)
        dataset, withdrawn = dataset_data_use_change(
            tenant=self.tenant, dataset=dataset,
            allow_private_training=request.POST.get("allow_private_training") == "on",
            allow_rag=request.POST.get("allow_rag") == "on", actor=actor, ip_address=ip)
        if withdrawn:
            summary = withdrawal_summary(withdrawn)
            messages.success(request, "Training consent revoked: later jobs skip this dataset"
                                      f"{'; ' + summary if summary else ''}.")
        else:
            messages.success(request, "Data use saved.")
        return redirect("dashboard:dataset", self.tenant.slug, dataset.pk)


class CorrectionReviewView(TenantPage):
    """The pending corrections with the answers they correct; approve, edit or reject one, or
    approve / reject the ticked ones."""

    template_name = "dashboard/review.html"
    nav = "review"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        pending = correction_review_queue(tenant=self.tenant)
        context["pending_count"] = pending.count()
        context["pending"] = pending[:REVIEW_PAGE_ROWS]
        document = settings_document(self.tenant)
        context["review_on"] = document.get("review_corrections", False)
        context["max_examples_per_user"] = document.get("max_examples_per_user")
        return context

    def post(self, request, slug):
        if request.POST.get("section") == "settings":
            return self.post_settings(request)
        from feedback.services import correction_review

        action = request.POST.get("action", "")
        ids = [int(value) for value in request.POST.getlist("ids") if value.isdigit()]
        if action.startswith(("approve:", "reject:", "edit:")):  # one row's own button
            action, _, one = action.partition(":")
            ids = [int(one)] if one.isdigit() else []
        if not ids:
            messages.error(request, "Tick at least one correction.")
            return redirect("dashboard:review", self.tenant.slug)
        actor, ip = audit_actor_from_request(request)
        text = request.POST.get(f"correction_{ids[0]}") if action == "edit" else None
        try:
            rows = correction_review(tenant=self.tenant, feedback_ids=ids, action=action,
                                     correction=text, actor=actor, ip_address=ip)
        except DomainError as exc:
            for line in error_lines(exc):
                messages.error(request, line)
        else:
            done = {"approve": "approved", "reject": "rejected", "edit": "edited and approved"}
            messages.success(request, f"{len(rows)} correction{'s' if len(rows) != 1 else ''} "
                                      f"{done[action]}.")
        return redirect("dashboard:review", self.tenant.slug)

    def post_settings(self, request):
        """The review setting and the per-user cap, through the same service as PATCH
        .../settings (same checks, same audit entry)."""
        cap_text = request.POST.get("max_examples_per_user", "").strip()
        changes = {"review_corrections": request.POST.get("review_corrections") == "on",
                   "max_examples_per_user": int(cap_text) if cap_text.isdigit() else cap_text
                   or None}
        try:
            settings_change(request, tenant=self.tenant, changes=changes)
        except DomainError as exc:
            for line in error_lines(exc):
                messages.error(request, line)
        else:
            messages.success(request, "Review settings saved.")
        return redirect("dashboard:review", self.tenant.slug)
