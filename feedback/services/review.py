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
from tenants.settings_sections import SettingInvalid, settings_section_validate

FEEDBACK_SETTING_KEYS = ("review_corrections", "max_examples_per_user")
MAX_EXAMPLES_PER_USER_RANGE = (1, 1_000_000)
REVIEW_ACTIONS = ("approve", "reject", "edit")
MAX_REVIEW_BATCH = 1000


def _review_corrections_check(tenant: Tenant, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SettingInvalid("Must be a valid boolean.")
    return value


def _max_examples_per_user_check(tenant: Tenant, value: Any) -> int | None:
    low, high = MAX_EXAMPLES_PER_USER_RANGE
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or not low <= value <= high):
        raise SettingInvalid(f"Must be an integer from {low} to {high}, or null for no cap.")
    return value


FEEDBACK_SETTING_CHECKS = {"review_corrections": _review_corrections_check,
                           "max_examples_per_user": _max_examples_per_user_check}


def feedback_settings_update(*, tenant: Tenant, changes: dict[str, Any], actor: str = "system",
                             ip_address: str | None = None, audit: bool = True
                             ) -> FeedbackSettings:
    """Validate and store a change of the tenant's feedback settings; returns the row. Reached
    by the API's PATCH and the dashboard through `tenants.services.tenant_settings_change` (the
    section registered in FeedbackConfig.ready)."""
    validated = settings_section_validate(tenant=tenant, changes=changes,
                                          checks=FEEDBACK_SETTING_CHECKS)
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
