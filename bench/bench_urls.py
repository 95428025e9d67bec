"""Bench-only URLs: the product's URLs plus the trivial DRF baseline endpoint and a ping.

`POST /bench/tenants/<tenant>/noop` is the baseline of the feedback POST benchmark: the same
server, the same DRF stack (API-key authentication, tenant scoping, throttle, JSON parsing and
rendering, the error envelope) and the same request body, but no work of its own: it parses the
body and answers 201 with a tiny JSON object. The difference to `POST .../feedback` is then what
the feedback path itself costs (validation, PII pass, the transaction, the counter shard).
"""

from django.http import HttpResponse
from django.urls import path
from rest_framework import status
from rest_framework.response import Response

from synapsex_site.urls import handler404, handler500  # noqa: F401 - the root URLconf's
from synapsex_site.urls import urlpatterns as product_urlpatterns
from tenants.api.base import TenantAPIView


class TrivialView(TenantAPIView):
    """Reads the JSON body, does nothing with it, answers 201."""

    def post(self, request, tenant: str):
        return Response({"ok": True, "fields": len(request.data)}, status=status.HTTP_201_CREATED)


def ping(request):
    return HttpResponse("ok")


urlpatterns = [
    path("bench/ping", ping),
    path("bench/tenants/<slug:tenant>/noop", TrivialView.as_view()),
    *product_urlpatterns,
]
