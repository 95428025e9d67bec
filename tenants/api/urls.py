from django.urls import path

from tenants.api import views

urlpatterns = [
    path("tenants/<slug:tenant>/settings", views.TenantSettingsView.as_view(),
         name="tenant-settings"),
    path("tenants/<slug:tenant>/api-keys", views.ApiKeyListView.as_view(), name="api-keys"),
    path("tenants/<slug:tenant>/api-keys/<int:key_id>/revoke", views.ApiKeyRevokeView.as_view(),
         name="api-key-revoke"),
]
