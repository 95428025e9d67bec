"""Signals that let later apps react to training without training importing them.

Training sits below adapters (tenants <- feedback <- training <- adapters): it never imports
adapters, not even through `apps.get_model`. Where it needs something only adapters knows, it
sends one of these and the adapters app's receivers (adapters/receivers.py) answer.

* `training_job_succeeded` is sent by the runner once a job's trainer finished and its results are
  fetched and verified, inside the runner's completion step, with `job` (the TrainingJob) and
  `result_dir` (a local folder with `adapter/` and `manifest.json`). The adapters app connects
  the receiver that stores the files and creates the adapter version; the runner reads the
  receivers' return values to log which version was created.
* `training_job_completed` is sent by the runner after a job's completion committed, with `job`.
  A receiver that returns `DEFER_COMPLETED_WEBHOOKS` takes over the job-completed webhook: it
  sends it later with `training.webhooks.webhook_deliveries_create(..., extra=...)` (the adapters
  app does, after the new version's evaluation, so that the webhook carries the evaluation).
  With no such answer the runner sends the webhook at once.
* `training_parent_version_resolve` is sent when a job asks to continue from an adapter version,
  with `tenant`, `label` (what the request said, e.g. "v3") and `base_label` (the job's base
  model). A receiver returns the stored version to start from, or raises a domain error
  (unknown version, archived, another base model). No answer means no such version.
* `training_user_data_erasing` is sent inside the erasure's transaction, before the rows go, with
  `tenant`, `feedback_ids`, `message_ids` and `dataset_record_ids` (sets). A receiver marks
  what learned from them and returns the labels it marked (e.g. adapter versions needing
  retraining). Dataset deletes and revoked consent send it too (`training.erasure`).
"""

from django.dispatch import Signal

DEFER_COMPLETED_WEBHOOKS = "defer_completed_webhooks"

training_job_succeeded = Signal()
training_job_completed = Signal()
training_parent_version_resolve = Signal()
training_user_data_erasing = Signal()
