"""Production settings: the ordinary env-driven settings with HTTPS-only defaults.

Use `DJANGO_SETTINGS_MODULE=synapsex_site.production_settings` behind a TLS-terminating proxy.
Required in the environment: SECRET_KEY (50+ random characters; or SECRET_KEY_FILE),
ALLOWED_HOSTS, DATABASE_URL, REDIS_URL. `python manage.py check --deploy` is clean with them
(tests/security/test_keys_and_secrets.py runs it in a subprocess). Every default below can
still be overridden from the environment, e.g. SECURE_SSL_REDIRECT=false where the proxy
redirects itself.
"""

import os

from django.core.exceptions import ImproperlyConfigured

from synapsex_site.env import env_bool, env_int

# Before the base settings read them: production never generates a local secret key, and
# secure cookies / HTTPS are the defaults rather than opt-ins.
if os.environ.get("SYNAPSEX_EMBEDDED", "").strip().lower() in {"1", "true", "yes", "on"}:
    raise ImproperlyConfigured("production_settings with SYNAPSEX_EMBEDDED=1: unset it.")
os.environ.setdefault("SECURE_COOKIES", "true")
os.environ.setdefault("SECURE_SSL_REDIRECT", "true")
os.environ.setdefault("SECURE_HSTS_SECONDS", str(365 * 24 * 3600))
os.environ.setdefault("BEHIND_TLS_PROXY", "true")

from synapsex_site.settings import *  # noqa: E402,F403
from synapsex_site.settings import DEBUG, SECRET_KEY  # noqa: E402

if DEBUG:
    raise ImproperlyConfigured("DEBUG must be off in production (unset DEBUG).")
if len(SECRET_KEY or "") < 50 or len(set(SECRET_KEY)) < 5:
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 random characters.")

SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600, minimum=300)
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# drf-spectacular adds a schema lint (operationId / enum naming warnings) to the deploy checks.
# It says nothing about deployment security and the schema is validated by the test suite
# (tests/tenants/test_admin_and_schema.py, tests/security/test_schema_fuzz.py).
SPECTACULAR_SETTINGS = {**SPECTACULAR_SETTINGS, "ENABLE_DJANGO_DEPLOY_CHECK": False}  # noqa: F405
