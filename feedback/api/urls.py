from django.urls import path

from feedback.api import views

T = "tenants/<slug:tenant>"

urlpatterns = [
    path(f"{T}/feedback", views.FeedbackView.as_view(), name="feedback"),
    path(f"{T}/feedback/stats", views.FeedbackStatsView.as_view(), name="feedback-stats"),
    path(f"{T}/feedback/review", views.CorrectionReviewListView.as_view(),
         name="feedback-review"),
    path(f"{T}/feedback/review/<int:feedback_id>", views.CorrectionReviewDetailView.as_view(),
         name="feedback-review-detail"),
    path(f"{T}/conversations", views.ConversationListView.as_view(), name="conversations"),
    path(f"{T}/conversations/<str:conversation_id>", views.ConversationDetailView.as_view(),
         name="conversation-detail"),
    path(f"{T}/datasets", views.DatasetListView.as_view(), name="datasets"),
    path(f"{T}/datasets/register", views.DatasetRegisterView.as_view(), name="dataset-register"),
    path(f"{T}/datasets/<int:dataset_id>", views.DatasetDetailView.as_view(),
         name="dataset-detail"),
    path(f"{T}/datasets/<int:dataset_id>/records", views.DatasetRecordsView.as_view(),
         name="dataset-records"),
    path(f"{T}/datasets/<int:dataset_id>/records/delete",
         views.DatasetRecordsDeleteView.as_view(), name="dataset-records-delete"),
    path(f"{T}/datasets/<int:dataset_id>/records/<int:record_id>",
         views.DatasetRecordDetailView.as_view(), name="dataset-record-detail"),
    path(f"{T}/datasets/<int:dataset_id>/export", views.DatasetExportView.as_view(),
         name="dataset-export"),
    path(f"{T}/datasets/<int:dataset_id>/upload/conversations",
         views.DatasetUploadView.as_view(kind="conversations"),
         name="dataset-upload-conversations"),
    path(f"{T}/datasets/<int:dataset_id>/upload/preferences",
         views.DatasetUploadView.as_view(kind="preferences"), name="dataset-upload-preferences"),
    path(f"{T}/datasets/<int:dataset_id>/upload", views.DatasetFileUploadView.as_view(),
         name="dataset-upload-file"),
    path(f"{T}/datasets/<int:dataset_id>/upload/jsonl", views.DatasetFileUploadView.as_view(),
         name="dataset-upload-jsonl"),
]
