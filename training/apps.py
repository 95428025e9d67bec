from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training jobs"

    def ready(self):
        # Automatic training: every new feedback row (after commit) may queue a job for its
        # tenant. training may import feedback (tenants <- feedback <- training), so the hook
        # lives here rather than in feedback.
        from django.db.models.signals import post_save

        from feedback.models import Feedback
        from training.services import feedback_saved_auto_train

        post_save.connect(feedback_saved_auto_train, sender=Feedback,
                          dispatch_uid="training.auto_train_on_feedback")
        # The feedback hook caches "automatic training on?"; a settings save forgets it.
        from training.models import TrainingSettings
        from training.services.auto import training_settings_saved

        post_save.connect(training_settings_saved, sender=TrainingSettings,
                          dispatch_uid="training.settings_saved_forget")

        # Dataset deletes and revoked consent (feedback app) reach past snapshots and versions.
        from feedback.signals import feedback_data_withdrawing
        from training.erasure import feedback_data_withdrawing_received

        feedback_data_withdrawing.connect(feedback_data_withdrawing_received,
                                          dispatch_uid="training.data_withdrawing")

        # The per-method readiness of the feedback stats: what the compiler really makes.
        from feedback.signals import feedback_readiness_requested
        from training.readiness import feedback_readiness_received

        feedback_readiness_requested.connect(feedback_readiness_received,
                                             dispatch_uid="training.readiness")

        # The training keys of the tenant settings document live in training.TrainingSettings;
        # the tenants app composes the document from the sections the apps register.
        from tenants.services import (
            tenant_settings_register_section,
            tenant_settings_register_validator,
        )
        from training.selectors import training_settings_section
        from training.services.settings import (
            TRAINING_SETTING_KEYS,
            base_model_setting_validate,
            training_settings_update,
        )

        tenant_settings_register_section(keys=TRAINING_SETTING_KEYS,
                                         reader=training_settings_section,
                                         writer=training_settings_update)
        tenant_settings_register_validator("base_model", base_model_setting_validate)
