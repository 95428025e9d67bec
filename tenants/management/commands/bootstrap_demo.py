"""Local runs: a demo tenant, an admin user and an API key, printed for the person starting it.

The credentials are kept in var/demo-credentials.json (local runs only, git-ignored) so that a
restart prints the same ones instead of piling up keys.
"""

import json
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from tenants.models import Membership, Tenant
from tenants.selectors import api_key_get_active
from tenants.services import api_key_create, tenant_create


class Command(BaseCommand):
    help = "Create (once) the demo tenant, an admin user and an API key, and print them."

    def add_arguments(self, parser):
        parser.add_argument("--slug", default="demo")
        parser.add_argument("--plan", default="enterprise")

    def handle(self, *args, slug: str, plan: str, **options):
        path = settings.VAR_DIR / "demo-credentials.json"
        saved = json.loads(path.read_text()) if path.exists() else {}
        tenant = Tenant.objects.filter(slug=slug).first()
        api_key = saved.get("api_key")
        if tenant is None:
            tenant, api_key = tenant_create(slug=slug, name="Demo tenant", plan_slug=plan)
        elif not api_key or api_key_get_active(secret=api_key) is None:
            _, api_key = api_key_create(tenant=tenant, name="demo key")

        User = get_user_model()
        password = saved.get("password")
        user = User.objects.filter(username="admin").first()
        if user is None or not password or not user.check_password(password):
            password = secrets.token_urlsafe(12)
            if user is None:
                user = User.objects.create_superuser("admin", "admin@example.com", password)
            else:
                user.set_password(password)
                user.save(update_fields=["password"])
        Membership.objects.get_or_create(user=user, tenant=tenant,
                                         defaults={"role": Membership.ADMIN})
        path.write_text(json.dumps({"api_key": api_key, "password": password}))
        path.chmod(0o600)
        self.stdout.write(f"Tenant:   {tenant.slug} (plan {tenant.plan.name})")
        self.stdout.write(f"Login:    admin / {password}  (dashboard and /admin/)")
        port = os.environ.get("PORT", "8000")  # scripts/run.sh's web port
        self.stdout.write(f"API base: http://127.0.0.1:{port}/v1/tenants/{tenant.slug}/")
        self.stdout.write(f"API key:  {api_key}")
