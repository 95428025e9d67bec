"""What a tenant's users said: conversations, messages, feedback, and curated datasets."""

from django.db import models
from django.utils import timezone


class Conversation(models.Model):
    """A conversation, served by the platform (chat endpoint) or logged by an integration."""

    SOURCE_CHAT = "chat"
    SOURCE_LOGGED = "logged"

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE,
                               related_name="conversations")
    external_id = models.CharField(max_length=200, help_text="The client's conversation_id")
    source = models.CharField(max_length=10, choices=[(SOURCE_CHAT, "Served by the platform"),
                                                      (SOURCE_LOGGED, "Logged by integration")])
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "external_id"],
                                    name="unique_conversation_per_tenant")
        ]

    def __str__(self) -> str:
        return self.external_id


class Message(models.Model):
    """One turn. `content` is stored PII-redacted; `served_by_version` null means the base model
    (for chat) or unknown (for logged conversations)."""

    ROLE_CHOICES = [("system", "system"), ("user", "user"), ("assistant", "assistant")]

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE,
                                     related_name="messages")
    external_id = models.CharField(max_length=200, help_text="The client's message_id")
    role = models.CharField(max_length=10, choices=ROLE_CHOICES)
    content = models.TextField()
    position = models.PositiveIntegerField()
    served_by_version = models.ForeignKey("adapters.AdapterVersion", null=True, blank=True,
                                          on_delete=models.SET_NULL, related_name="messages")
    pii_redactions = models.JSONField(default=dict, blank=True,
                                      help_text="Counts of redacted kinds, never the values")
    user_id = models.CharField(max_length=200, blank=True, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["conversation_id", "position"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "external_id"],
                                    name="unique_message_per_tenant")
        ]
        indexes = [models.Index(fields=["conversation", "position"])]

    def __str__(self) -> str:
        return f"{self.external_id} ({self.role})"


class Feedback(models.Model):
    """A user's reaction to a served message.

    `correction` is stored PII-redacted. When the same user reacts again to the same message the
    newest row has `is_latest=True` and the older ones stay as history with `is_latest=False`.
    """

    THUMBS_UP = "thumbs_up"
    THUMBS_DOWN = "thumbs_down"
    CORRECTION = "correction"
    RATING = "rating"
    REPORT = "report"
    TYPE_CHOICES = [(t, t) for t in (THUMBS_UP, THUMBS_DOWN, CORRECTION, RATING, REPORT)]

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE,
                               related_name="feedback")
    conversation = models.ForeignKey(Conversation, null=True, blank=True,
                                     on_delete=models.SET_NULL, related_name="feedback")
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="feedback")
    conversation_external_id = models.CharField(max_length=200)
    message_external_id = models.CharField(max_length=200)
    type = models.CharField(max_length=12, choices=TYPE_CHOICES)
    correction = models.TextField(blank=True)
    rating = models.PositiveSmallIntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    user_id = models.CharField(max_length=200, blank=True, db_index=True)
    is_latest = models.BooleanField(default=True)
    pii_redactions = models.JSONField(default=dict, blank=True)
    excluded_reason = models.CharField(max_length=50, blank=True,
                                       help_text="Why this row never reaches training, if so")
    pii_hold = models.BooleanField(
        default=False, help_text="The correction was mostly PII: kept, never trained on")
    review_status = models.CharField(
        max_length=10, blank=True, default="",
        choices=[("", "not reviewed"), ("approved", "approved"), ("rejected", "rejected")],
        help_text="A correction's review: with the tenant's review_corrections on only approved "
                  "ones train; a rejected one never trains")
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    REVIEW_APPROVED = "approved"
    REVIEW_REJECTED = "rejected"

    # Why a row is held back from training (`excluded_reason`); "" means usable.
    EXCLUDED_REPORT = "report"
    EXCLUDED_SUPERSEDED = "superseded"
    EXCLUDED_UNLINKED = "unlinked"
    EXCLUDED_NOT_ASSISTANT = "not_assistant_message"
    EXCLUDED_PII_HOLD = "pii_hold"
    EXCLUDED_MESSAGE_REPORTED = "message_reported"

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "type", "is_latest"]),
            models.Index(fields=["tenant", "created_at"]),
            models.Index(fields=["tenant", "message_external_id"]),
            models.Index(fields=["tenant", "is_latest", "excluded_reason"],
                         name="feedback_usable_idx"),
            # The counters' staleness probe (newest row of a tenant above a bound) is one probe
            # here, whatever the other tenants wrote since (issue 16).
            models.Index(fields=["tenant", "id"], name="feedback_tenant_id_idx"),
        ]
        verbose_name_plural = "feedback"

    def __str__(self) -> str:
        return f"{self.type} on {self.message_external_id}"


class Dataset(models.Model):
    """A curated dataset in the DataHub: SFT conversations or DPO preference pairs."""

    CONVERSATIONS = "conversations"
    PREFERENCES = "preferences"

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE,
                               related_name="datasets")
    name = models.CharField(max_length=200)
    type = models.CharField(max_length=20, choices=[(CONVERSATIONS, CONVERSATIONS),
                                                    (PREFERENCES, PREFERENCES)])
    allow_rag = models.BooleanField(default=False)
    allow_private_training = models.BooleanField(default=True)
    evaluation_only = models.BooleanField(
        default=False, help_text="Held out for evaluation: scored as part of the golden set of "
                                 "every new version, never trained on")
    record_count = models.PositiveIntegerField(default=0)
    duplicate_count = models.PositiveIntegerField(default=0)
    pii_redaction_counts = models.JSONField(default=dict, blank=True)
    last_validation_report = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class DatasetRecord(models.Model):
    """One validated, PII-redacted record of a dataset; unique by content hash."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="records")
    content_hash = models.CharField(max_length=64)
    data = models.JSONField()
    pii_redactions = models.JSONField(default=dict, blank=True)
    user_id = models.CharField(max_length=200, blank=True, db_index=True,
                               help_text="The end user the record came from, if the upload said "
                                         "(erasure and per-user caps find it by this)")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "content_hash"],
                                    name="unique_record_per_dataset")
        ]


class FeedbackCounterShard(models.Model):
    """One of a tenant's feedback counter shards; the tenant's counters are the sum of its shards.

    The stats endpoint reads these few rows instead of counting a million feedback rows. Each
    feedback write adds its delta to one shard picked at random, in the same transaction as the
    rows it counts, so the sum is exact; writers of one tenant spread over
    `FEEDBACK_COUNTER_SHARDS` rows instead of queueing on one (the hot row of issue 16).
    `feedback.services.feedback_counters_rebuild` recomputes them from the rows if they ever
    drift (it locks every shard of the tenant, writes the total into shard 0, empties the rest).
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE,
                               related_name="feedback_counter_shards")
    shard = models.PositiveSmallIntegerField()
    counts = models.JSONField(default=dict, blank=True)
    last_feedback_id = models.BigIntegerField(
        default=0, help_text="Newest feedback row this shard counted; a row newer than every "
                             "shard's, written around the services (bulk loads), makes the "
                             "next read or write recount")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "shard"],
                                               name="feedback_counter_shard_unique")]

    def __str__(self) -> str:
        return f"counters of {self.tenant_id}, shard {self.shard}"


class FeedbackSettings(models.Model):
    """A tenant's feedback settings (one row per tenant, made on its first change): whether
    corrections wait for an admin's approval before they can train, and how many examples one
    end user may contribute to one training job.

    No row means the defaults (read by `feedback.selectors.feedback_settings_get` without writing
    one); `feedback.services.feedback_settings_update` is the only writer.
    """

    tenant = models.OneToOneField("tenants.Tenant", on_delete=models.CASCADE,
                                  related_name="feedback_settings")
    review_corrections = models.BooleanField(default=False)
    max_examples_per_user = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many feedback rows of one end user "
                                         "(user_id) in one job; empty: no cap")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "feedback settings"

    def __str__(self) -> str:
        return f"feedback settings of tenant {self.tenant_id}"
