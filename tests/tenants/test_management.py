import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from tenants.models import ApiKey, Plan, Tenant
from tests.conftest import api_client

pytestmark = pytest.mark.django_db


def test_plans_match_the_seed():
    plans = {p.slug: p for p in Plan.objects.all()}
    assert set(plans) == {"free", "pro", "hybrid", "enterprise"}
    assert (plans["free"].monthly_job_quota, plans["pro"].monthly_job_quota,
            plans["hybrid"].monthly_job_quota,
            plans["enterprise"].monthly_job_quota) == (0, 2, 10, None)
    assert (plans["pro"].max_lora_versions, plans["hybrid"].max_lora_versions,
            plans["enterprise"].max_lora_versions) == (1, 5, None)
    assert str(plans["pro"].sft_price_per_1000) == "0.1000"
    assert str(plans["pro"].dpo_price_per_1000) == "0.1500"
    assert not plans["free"].allows_training and plans["enterprise"].allows_training


def test_create_tenant_prints_a_working_key_on_its_last_line(capsys):
    call_command("create_tenant", "my_tenant", "--plan", "hybrid")
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line.startswith("sk-") and " " not in last_line
    tenant = Tenant.objects.get(slug="my_tenant")
    assert tenant.plan.slug == "hybrid"
    assert ApiKey.objects.get(tenant=tenant).access == ApiKey.READ_WRITE
    assert api_client(last_line).get("/v1/tenants/my_tenant/settings").status_code == 200


def test_create_tenant_refuses_unknown_plans_and_duplicates():
    with pytest.raises(CommandError, match="Unknown plan"):
        call_command("create_tenant", "x", "--plan", "platinum")
    call_command("create_tenant", "dup")
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_tenant", "dup")


def test_settings_fail_loudly_on_bad_values():
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "synapsex_site.settings",
           "SYNAPSEX_EMBEDDED": "1", "DEBUG": "perhaps",
           "SYNAPSEX_VAR_DIR": str(settings.VAR_DIR)}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"],
                            env=env, capture_output=True, text=True, cwd=settings.BASE_DIR)
    assert result.returncode != 0
    assert "DEBUG='perhaps' is not a boolean" in result.stderr


def test_secret_key_is_required_outside_debug_and_local_runs():
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "synapsex_site.settings",
           "SYNAPSEX_VAR_DIR": str(settings.VAR_DIR)}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"],
                            env=env, capture_output=True, text=True, cwd=settings.BASE_DIR)
    assert result.returncode != 0
    assert "SECRET_KEY is required" in result.stderr


def test_bootstrap_demo_prints_working_credentials_and_reuses_them(capsys, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    call_command("bootstrap_demo")
    first = capsys.readouterr().out
    key = first.split("API key:")[1].split()[0]
    password = first.split("admin / ")[1].split()[0]
    assert api_client(key).get("/v1/tenants/demo/settings").status_code == 200
    from django.contrib.auth import authenticate

    assert authenticate(username="admin", password=password) is not None
    call_command("bootstrap_demo")
    assert f"API key:  {key}" in capsys.readouterr().out
    assert ApiKey.objects.filter(tenant__slug="demo").count() == 1
