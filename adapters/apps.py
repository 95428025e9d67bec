from django.apps import AppConfig


class AdaptersConfig(AppConfig):
    name = "adapters"
    verbose_name = "Adapters and serving"

    def ready(self) -> None:
        """Hook into the apps upstream without them importing us (tenants <- ... <- adapters)."""
        from django.db.models.signals import post_save

        from adapters import receivers
        from adapters.selectors import adapter_settings_section
        from adapters.services import lora_ab_test_validate, training_job_succeeded_receiver
        from adapters.services.settings import ADAPTER_SETTING_KEYS, adapter_settings_update
        from tenants.services import (
            tenant_settings_register_section,
            tenant_settings_register_validator,
        )
        from training.signals import training_job_succeeded

        training_job_succeeded.connect(
            training_job_succeeded_receiver, dispatch_uid="adapters.version_from_job")
        # The A/B split and auto-promotion live in adapters.AdapterSettings; the tenants app
        # composes the settings document from the sections the apps register.
        tenant_settings_register_section(keys=ADAPTER_SETTING_KEYS,
                                         reader=adapter_settings_section,
                                         writer=adapter_settings_update)
        tenant_settings_register_validator("lora_ab_test", lora_ab_test_validate)
        post_save.connect(receivers.feedback_saved_check_ab_winner, sender="feedback.Feedback",
                          dispatch_uid="adapters.feedback_saved_check_ab_winner")
        # The feedback hook caches "decisions wanted?"; a settings save forgets it.
        from adapters.services.decisions import adapter_settings_saved

        post_save.connect(adapter_settings_saved, sender="adapters.AdapterSettings",
                          dispatch_uid="adapters.settings_saved_forget")
