"""Writes for feedback, one module per concern; this package keeps the names callers import.

* `counters`: the tenant's maintained (sharded) counters and each feedback row's
  `excluded_reason`.
* `conversations`: logging conversations (served here or elsewhere), linking waiting feedback.
* `submit`: storing feedback on a message, superseding a user's earlier feedback.
* `datasets`: the DataHub's datasets and record uploads.
* `dataset_changes`: deleting datasets and records, changing their consent (data use).
* `review`: the tenant's feedback settings and the corrections review queue.

Three rules hold for every write here:
1. Text that can reach training (message content, corrections, dataset records) is PII-redacted
   before it is stored (`feedback.pii`); only counts of what was redacted are kept.
2. Every feedback write adds its counter delta to one of the tenant's counter shards in the
   same transaction (`counters_apply`, at the end), so the stats endpoint reads a few rows and
   is exact; writes that must not interleave lock the message and conversation ids they touch
   (`feedback_write_lock`), never the whole tenant.
3. A feedback row's `excluded_reason` says why it never reaches training ("" = usable); it is
   recomputed whenever something it depends on changes (linking, a report, a newer answer).
"""

from feedback.services.conversations import (
    ConversationLogResult,
    conversation_log,
    conversation_log_turns,
    new_public_id,
)
from feedback.services.counters import (
    FEEDBACK_COUNTER_SHARDS,
    counters_sum,
    feedback_contribution,
    feedback_counters_rebuild,
    feedback_counters_stale,
)
from feedback.services.dataset_changes import (
    dataset_data_use_change,
    dataset_delete,
    dataset_records_delete,
    feedback_data_withdraw,
)
from feedback.services.datasets import (
    MAX_LISTED_PROBLEMS,
    UPLOAD_BATCH_SIZE,
    UploadItem,
    dataset_register,
    dataset_require_type,
    dataset_upload,
    upload_items_from_jsonl,
    upload_items_from_list,
)
from feedback.services.review import (
    FEEDBACK_SETTING_KEYS,
    correction_review,
    feedback_settings_update,
)
from feedback.services.submit import FEEDBACK_FAMILIES, FeedbackSubmitResult, feedback_submit

__all__ = [
    "FEEDBACK_COUNTER_SHARDS",
    "counters_sum",
    "FEEDBACK_SETTING_KEYS",
    "correction_review",
    "dataset_data_use_change",
    "dataset_delete",
    "dataset_records_delete",
    "feedback_data_withdraw",
    "feedback_settings_update",
    "FEEDBACK_FAMILIES",
    "MAX_LISTED_PROBLEMS",
    "UPLOAD_BATCH_SIZE",
    "ConversationLogResult",
    "FeedbackSubmitResult",
    "UploadItem",
    "conversation_log",
    "conversation_log_turns",
    "dataset_register",
    "dataset_require_type",
    "dataset_upload",
    "feedback_contribution",
    "feedback_counters_rebuild",
    "feedback_counters_stale",
    "feedback_submit",
    "new_public_id",
    "upload_items_from_jsonl",
    "upload_items_from_list",
]
