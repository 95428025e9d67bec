"""Signals that let later apps react to feedback-side data being withdrawn, without feedback
importing them (tenants <- feedback <- training <- adapters).

* `feedback_data_withdrawing` is sent inside the transaction of a dataset delete, a record delete
  or a revoked training consent, before the rows go, with `tenant`, `feedback_ids`,
  `message_ids`, `dataset_record_ids` (sets) and `reason` ("dataset_deleted",
  "dataset_record_deleted", "consent_revoked"). A receiver removes or marks what was derived
  from those rows (training: past jobs' data snapshots; through it, adapters: the versions
  trained on them) and returns a dict of lists, which the sender merges into its answer
  (e.g. `{"snapshots_rewritten": [...], "adapter_versions_needing_retraining": ["v2"]}`).
"""

from django.dispatch import Signal

feedback_data_withdrawing = Signal()


def withdrawal_answers_merge(responses) -> dict:
    """The receivers' answers of one `send`, merged: lists are concatenated (without repeats)."""
    merged: dict[str, list] = {}
    for _, answer in responses:
        for key, values in (answer or {}).items():
            bucket = merged.setdefault(key, [])
            for value in values:
                if value not in bucket:
                    bucket.append(value)
    return merged


# `feedback_readiness_requested` is sent by `feedback_stats` with `tenant`, `stamp` (when the
# tenant's feedback counters last changed) and `rows` (feedback rows received). A receiver that
# knows what training really needs (training compiles the data) returns `{method: {...}}` per
# training method; the stats document carries the merged answers as `readiness.methods`. No
# receiver: `readiness.methods` is empty.
feedback_readiness_requested = Signal()
