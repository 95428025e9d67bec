"""Security test fixtures (helpers in tests/security/helpers.py)."""

import pytest

from tests.security.helpers import seed_tenant


@pytest.fixture(autouse=True)
def isolated_storage(media_root, settings, tmp_path):
    """Adapter files and snapshots of these tests go to a temporary folder (tests/conftest.py's
    `media_root`), job folders too, never var/."""
    settings.TRAINING_WORK_DIR = tmp_path / "jobs"
    return media_root


@pytest.fixture
def two_tenants(make_tenant):
    """acme and globex, each full of its own marker ("ACMEMARKQX" / "GLOBEXMARKQZ")."""
    a = seed_tenant(make_tenant, "acme", "ACMEMARKQX", job_hex="aaaa1111aaaa",
                    version_number=31, username="alice-acme")
    b = seed_tenant(make_tenant, "globex", "GLOBEXMARKQZ", job_hex="bbbb2222bbbb",
                    version_number=47, username="bob-globex")
    return a, b

