from django.apps import AppConfig


class FeedbackConfig(AppConfig):
    name = "feedback"
    verbose_name = "Feedback and datasets"

    def ready(self):
        # The feedback keys of the tenant settings document live in feedback.FeedbackSettings;
        # the tenants app composes the document from the sections the apps register.
        from feedback.selectors import feedback_settings_section
        from feedback.services import FEEDBACK_SETTING_KEYS, feedback_settings_update
        from tenants.services import tenant_settings_register_section

        tenant_settings_register_section(keys=FEEDBACK_SETTING_KEYS,
                                         reader=feedback_settings_section,
                                         writer=feedback_settings_update)
