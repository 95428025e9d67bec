"""`python manage.py create_tenant SLUG --plan PLAN`: the key is printed alone on the last line."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tenants.models import Plan, Tenant
from tenants.services import tenant_create


class Command(BaseCommand):
    help = "Create a tenant with a read-write API key; prints the key alone on its last line."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--plan", default="pro", help="free, pro, hybrid or enterprise")
        parser.add_argument("--name", default="")

    def handle(self, *args, slug: str, plan: str, name: str, **options):
        if not Plan.objects.filter(slug=plan).exists():
            choices = ", ".join(Plan.objects.values_list("slug", flat=True))
            raise CommandError(f"Unknown plan {plan!r}; choose one of: {choices}")
        if Tenant.objects.filter(slug=slug).exists():
            raise CommandError(f"Tenant {slug!r} already exists.")
        try:
            tenant, secret = tenant_create(slug=slug, name=name, plan_slug=plan)
        except ValidationError as exc:
            raise CommandError(f"Invalid slug {slug!r}: letters, digits, - and _ only.") from exc
        self.stdout.write(f"Created tenant {tenant.slug} on plan {tenant.plan.name}.")
        self.stdout.write(secret)
