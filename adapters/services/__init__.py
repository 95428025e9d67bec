"""Writes for adapters, one module per concern; this package keeps the names callers import.

* `versions`: storing a trained adapter as `v<N>`, activating (and its gate), archiving, the
  plan's limit.
* `evaluation`: every new version's evaluation after its job (golden set, trained prompts,
  general questions, reported prompts), queued on RQ, and the job-completed webhook after it.
* `ab`: promoting the A/B winner.
* `settings`: the tenant's adapter settings (A/B split, auto-promotion): validate, store, audit.
* `storage`: where a version's files live, writing them, reading them back sha256-verified.
* `integrity`: sha256 digests, the safetensors header, the trainer's manifest.

The A/B reads (`ab_test_settings`, `ab_test_arms`, `ab_route`) live in `adapters.selectors` and
`parse_version_label` in `adapters.models`; they are re-exported here for existing callers.
"""

from adapters.models import parse_version_label
from adapters.selectors import ab_route, ab_test_arms, ab_test_settings
from adapters.services.ab import (
    AB_WEIGHT_TOLERANCE,
    adapter_ab_test_auto_promote,
    adapter_ab_test_promote,
    audit_ab_settings_change,
    lora_ab_test_validate,
)
from adapters.services.evaluation import (
    adapter_version_evaluate,
    adapter_version_evaluation_queue,
    evaluation_summary,
)
from adapters.services.integrity import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    ALLOWED_SUFFIXES,
    MANIFEST,
    PICKLE_SUFFIXES,
    REQUIRED_ADAPTER_FILES,
    AdapterIntegrityError,
    manifest_file_entries,
    safetensors_header_check,
    sha256_of_bytes,
    sha256_of_file,
    verify_result_dir,
)
from adapters.services.settings import adapter_settings_update
from adapters.services.storage import (
    adapter_export_zip,
    adapter_files_read_verified,
    adapter_storage_prefix,
    stored_files_read,
)
from adapters.services.versions import (
    SYSTEM_ACTOR,
    activation_check,
    adapter_version_activate,
    adapter_version_archive,
    adapter_version_create_from_job,
    adapter_versions_enforce_plan_limit,
    training_job_succeeded_receiver,
)

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "AB_WEIGHT_TOLERANCE",
    "ALLOWED_SUFFIXES",
    "MANIFEST",
    "PICKLE_SUFFIXES",
    "REQUIRED_ADAPTER_FILES",
    "SYSTEM_ACTOR",
    "AdapterIntegrityError",
    "activation_check",
    "ab_route",
    "ab_test_arms",
    "ab_test_settings",
    "adapter_ab_test_auto_promote",
    "adapter_ab_test_promote",
    "adapter_export_zip",
    "adapter_files_read_verified",
    "adapter_settings_update",
    "adapter_storage_prefix",
    "adapter_version_activate",
    "adapter_version_archive",
    "adapter_version_create_from_job",
    "adapter_version_evaluate",
    "adapter_version_evaluation_queue",
    "adapter_versions_enforce_plan_limit",
    "audit_ab_settings_change",
    "evaluation_summary",
    "lora_ab_test_validate",
    "manifest_file_entries",
    "parse_version_label",
    "safetensors_header_check",
    "sha256_of_bytes",
    "sha256_of_file",
    "stored_files_read",
    "training_job_succeeded_receiver",
    "verify_result_dir",
]
