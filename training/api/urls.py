from django.urls import path

from training.api import views
from training.api.export import TrainingDataExportView

_T = "tenants/<slug:tenant>/"

urlpatterns = [
    path(_T + "train/lora", views.LoraTrainView.as_view(), name="train-lora"),
    path(_T + "train/dpo", views.DpoTrainView.as_view(), name="train-dpo"),
    path(_T + "train/kto", views.KtoTrainView.as_view(), name="train-kto"),
    path(_T + "train/usage", views.TrainingUsageView.as_view(), name="train-usage"),
    path(_T + "train", views.TrainingJobListView.as_view(), name="train-list"),
    path(_T + "train/<str:job_id>", views.TrainingJobDetailView.as_view(), name="train-detail"),
    path(_T + "train/<str:job_id>/metrics", views.TrainingJobMetricsView.as_view(),
         name="train-metrics"),
    path(_T + "train/<str:job_id>/events", views.TrainingJobEventsView.as_view(),
         name="train-events"),
    path(_T + "train/<str:job_id>/cancel", views.TrainingJobCancelView.as_view(),
         name="train-cancel"),
    path(_T + "webhooks", views.WebhookListView.as_view(), name="webhooks"),
    path(_T + "webhooks/<int:webhook_id>", views.WebhookDetailView.as_view(),
         name="webhook-detail"),
    path(_T + "erasure", views.ErasureView.as_view(), name="erasure"),
    path(_T + "export", TrainingDataExportView.as_view(), name="training-data-export"),
]
