from django.apps import AppConfig


class AdaptersConfig(AppConfig):
    name = "adapters"
    verbose_name = "Adapters and serving"

    def ready(self) -> None:
        """Hook into the apps upstream without them importing us (tenants <- ... <- adapters)."""
        from django.db.models.signals import post_save, pre_save

        from adapters import receivers
        from adapters.services import lora_ab_test_validate, training_job_succeeded_receiver
        from tenants.services import tenant_settings_register_validator
        from training.signals import training_job_succeeded

        training_job_succeeded.connect(
            training_job_succeeded_receiver, dispatch_uid="adapters.version_from_job")
        tenant_settings_register_validator("lora_ab_test", lora_ab_test_validate)
        pre_save.connect(receivers.tenant_settings_remember, sender="tenants.Tenant",
                         dispatch_uid="adapters.tenant_settings_remember")
        post_save.connect(receivers.tenant_settings_audit_ab, sender="tenants.Tenant",
                          dispatch_uid="adapters.tenant_settings_audit_ab")
        post_save.connect(receivers.feedback_saved_check_ab_winner, sender="feedback.Feedback",
                          dispatch_uid="adapters.feedback_saved_check_ab_winner")
