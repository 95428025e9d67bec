from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The browser dashboards: the top layer, reading through the apps' selectors and writing
    through the same services as the API (it owns no models)."""

    name = "dashboard"
    verbose_name = "Dashboards"
