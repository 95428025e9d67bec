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
