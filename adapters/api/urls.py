from django.urls import path

from adapters.api import views

T = "tenants/<slug:tenant>"

urlpatterns = [
    path(f"{T}/lora", views.LoraListView.as_view(), name="lora-list"),
    path(f"{T}/lora/metrics", views.LoraMetricsView.as_view(), name="lora-metrics"),
    path(f"{T}/lora/ab-test/promote", views.AbTestPromoteView.as_view(),
         name="lora-ab-promote"),
    path(f"{T}/lora/<str:version>", views.LoraDetailView.as_view(), name="lora-detail"),
    path(f"{T}/lora/<str:version>/activate", views.LoraActivateView.as_view(),
         name="lora-activate"),
    path(f"{T}/lora/<str:version>/download", views.LoraDownloadView.as_view(),
         name="lora-download"),
    path(f"{T}/lora/<str:version>/evaluation", views.LoraEvaluationView.as_view(),
         name="lora-version-evaluation"),
    path(f"{T}/lora/<str:version>/metrics", views.LoraVersionMetricsView.as_view(),
         name="lora-version-metrics"),
    path(f"{T}/chat/completions", views.ChatCompletionsView.as_view(), name="chat-completions"),
    path(f"{T}/models", views.ModelListView.as_view(), name="models-list"),
]
