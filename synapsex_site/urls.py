"""Root URLs: the versioned API under /v1/, schema and docs, dashboards, the Django admin."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

import synapsex_site.openapi  # noqa: F401 - registers the API-key scheme for the schema
from tenants.api.errors import api_not_found

api_v1 = [
    path("", include("tenants.api.urls")),
    path("", include("feedback.api.urls")),
    path("", include("training.api.urls")),
    path("", include("adapters.api.urls")),
]

urlpatterns = [
    path("v1/", include(api_v1)),
    path("v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("v1/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/django-rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
    path("", include("dashboard.site_urls")),
]

# Anything else under /v1/ answers with the API's error envelope, not an HTML page.
urlpatterns.append(path("v1/<path:rest>", api_not_found))

handler404 = "tenants.api.errors.handler404"
handler500 = "tenants.api.errors.handler500"
