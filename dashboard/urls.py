from django.urls import include, path

from dashboard import data_views, views

app_name = "dashboard"

tenant_urls = [
    path("", views.OverviewView.as_view(), name="overview"),
    path("overview.json", views.OverviewDataView.as_view(), name="overview_data"),
    path("datasets/", views.DatasetListView.as_view(), name="datasets"),
    path("datasets/<int:dataset_id>/", views.DatasetDetailView.as_view(), name="dataset"),
    path("datasets/<int:dataset_id>/data-use", data_views.DatasetConsentView.as_view(),
         name="dataset_consent"),
    # After the dataset's other actions: the isolation matrix posts to each route in this order.
    path("datasets/<int:dataset_id>/delete", data_views.DatasetDeleteView.as_view(),
         name="dataset_delete"),
    path("review/", data_views.CorrectionReviewView.as_view(), name="review"),
    path("training/", views.TrainingListView.as_view(), name="training"),
    path("training/<str:job_id>/", views.JobDetailView.as_view(), name="job"),
    path("training/<str:job_id>/data.json", views.JobDataView.as_view(), name="job_data"),
    path("training/<str:job_id>/cancel", views.JobCancelView.as_view(), name="job_cancel"),
    path("adapters/", views.AdapterListView.as_view(), name="adapters"),
    path("adapters/data.json", views.AdapterDataView.as_view(), name="adapters_data"),
    path("adapters/ab-test", views.AbTestUpdateView.as_view(), name="ab_test"),
    path("adapters/v<int:number>/activate", views.AdapterActivateView.as_view(),
         name="adapter_activate"),
    path("api-keys/", views.ApiKeyListView.as_view(), name="api_keys"),
    path("api-keys/<int:key_id>/revoke", views.ApiKeyRevokeView.as_view(), name="api_key_revoke"),
    path("settings/", views.SettingsView.as_view(), name="settings"),
]

urlpatterns = [
    path("", views.HomeView.as_view(), name="home"),
    path("staff/", views.StaffDashboardView.as_view(), name="staff"),
    path("staff/data.json", views.StaffDataView.as_view(), name="staff_data"),
    path("staff/jobs/<str:job_id>/curves.json", views.StaffJobCurveView.as_view(),
         name="staff_job_curves"),
]
# Tenant pages: each view resolves `slug` through TenantMemberMixin (members only).
urlpatterns.append(path("t/<slug:slug>/", include(tenant_urls)))
