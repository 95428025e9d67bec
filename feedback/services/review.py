"""The tenant's feedback settings and the corrections review queue.

With `review_corrections` on, a correction trains only once an admin approved it (the compiler
reads through `feedback.selectors.feedback_usable_for_training`, which applies the rule); a
rejected correction never trains, whatever the setting. An admin may edit a correction while
approving it (the new text is PII-redacted like any correction). `max_examples_per_user` caps
how many feedback rows one end user (`user_id`) contributes to one job (applied by the
compiler), so one user cannot steer a tenant's model.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from feedback.models import Feedback, FeedbackSettings
from feedback.pii import pii_redact
from tenants.errors import InvalidInput, NotFound
from tenants.models import Tenant
from tenants.services import audit_log_record

FEEDBACK_SETTING_KEYS = ("review_corrections", "max_examples_per_user")
MAX_EXAMPLES_PER_USER_RANGE = (1, 1_000_000)
REVIEW_ACTIONS = ("approve", "reject", "edit")
MAX_REVIEW_BATCH = 1000


def _validated(changes: dict[str, Any]) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    for key in sorted(set(changes) - set(FEEDBACK_SETTING_KEYS)):
        errors[key] = ["Unknown setting."]
    if "review_corrections" in changes and not isinstance(changes["review_corrections"], bool):
        errors["review_corrections"] = ["Must be a valid boolean."]
    if "max_examples_per_user" in changes:
        value = changes["max_examples_per_user"]
        low, high = MAX_EXAMPLES_PER_USER_RANGE
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not low <= value <= high):
            errors["max_examples_per_user"] = [
                f"Must be an integer from {low} to {high}, or null for no cap."]
    if errors:
        raise InvalidInput("validation_error", "The request has invalid fields.", details=errors)
    return dict(changes)


def feedback_settings_update(*, tenant: Tenant, changes: dict[str, Any], actor: str = "system",
                             ip_address: str | None = None, audit: bool = True
                             ) -> FeedbackSettings:
    """Validate and store a change of the tenant's feedback settings; returns the row. Reached
    by the API's PATCH and the dashboard through `tenants.services.tenant_settings_change` (the
    section registered in FeedbackConfig.ready)."""
    validated = _validated(changes)
    with transaction.atomic():
        row, _ = FeedbackSettings.objects.select_for_update().get_or_create(tenant=tenant)
        if "review_corrections" in validated:
            row.review_corrections = validated["review_corrections"]
        if "max_examples_per_user" in validated:
            row.max_examples_per_user = validated["max_examples_per_user"]
        row.updated_at = timezone.now()
        row.save()
        if audit:
            audit_log_record(action="settings.updated", actor=actor, ip_address=ip_address,
                             tenant=tenant, details={"changed": sorted(validated),
                                                     "section": "feedback"})
    return row


def correction_review(*, tenant: Tenant, feedback_ids: list[int], action: str,
                      correction: str | None = None, actor: str = "system",
                      ip_address: str | None = None) -> list[Feedback]:
    """Approve, reject or edit (= approve with a new text) corrections of the tenant, one or
    many at once. All ids must be the tenant's corrections (else 404, nothing changes); `edit`
    takes one id and the new `correction` text. Returns the reviewed rows."""
    if action not in REVIEW_ACTIONS:
        raise InvalidInput("validation_error", "The request has invalid fields.",
                           details={"action": [f"Must be one of {', '.join(REVIEW_ACTIONS)}."]})
    ids = list(dict.fromkeys(feedback_ids))
    if not ids or len(ids) > MAX_REVIEW_BATCH:
        raise InvalidInput("validation_error", "The request has invalid fields.",
                           details={"ids": [f"Give 1 to {MAX_REVIEW_BATCH} correction ids."]})
    if action == "edit":
        if len(ids) != 1:
            raise InvalidInput("validation_error", "The request has invalid fields.",
                               details={"ids": ["Edit one correction at a time."]})
        if not isinstance(correction, str) or not correction.strip():
            raise InvalidInput("validation_error", "The request has invalid fields.",
                               details={"correction": ["Required for edit: the new text."]})
    with transaction.atomic():
        rows = list(Feedback.objects.select_for_update()
                    .filter(tenant=tenant, type=Feedback.CORRECTION, id__in=ids).order_by("id"))
        missing = sorted(set(ids) - {row.id for row in rows})
        if missing:
            raise NotFound("not_found", f"No correction {missing[0]}.",
                           details={"missing_ids": missing[:100]})
        now = timezone.now()
        for row in rows:
            row.review_status = (Feedback.REVIEW_REJECTED if action == "reject"
                                 else Feedback.REVIEW_APPROVED)
            row.reviewed_at = now
            row.reviewed_by = actor[:200]
            fields = ["review_status", "reviewed_at", "reviewed_by"]
            if action == "edit":
                text, pii = pii_redact(correction.strip())
                row.correction = text
                row.pii_redactions = pii
                fields += ["correction", "pii_redactions"]
            row.save(update_fields=fields)
        audit_log_record(action=f"feedback.correction_{action}", actor=actor,
                         ip_address=ip_address, tenant=tenant,
                         target=",".join(str(row.id) for row in rows[:50]),
                         details={"count": len(rows)})
    return rows
