"""Object storage through django-storages: local files, and S3 on a loopback moto server.

moto's standalone server stands in for S3 because no S3 service can be reached from here; the
client side (django-storages S3Storage over boto3, real HTTP) is the product's own code path.
"""

import shutil
import socket
import subprocess
import time

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from storages.backends.s3 import S3Storage


def _roundtrip(storage):
    name = storage.save("tenants/acme/adapters/v1/adapter_config.json",
                        ContentFile(b'{"r": 16}'))
    assert storage.exists(name)
    assert storage.size(name) == 9
    with storage.open(name, "rb") as fh:
        assert fh.read() == b'{"r": 16}'
    dirs, files = storage.listdir("tenants/acme/adapters/v1")
    assert "adapter_config.json" in files
    storage.delete(name)
    assert not storage.exists(name)


def test_local_file_storage_roundtrip(tmp_path):
    _roundtrip(FileSystemStorage(location=tmp_path))


@pytest.fixture(scope="module")
def moto_s3():
    binary = shutil.which("moto_server")
    if binary is None:
        import sys
        from pathlib import Path

        binary = str(Path(sys.executable).parent / "moto_server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto_server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_s3_storage_roundtrip_on_a_loopback_server(moto_s3):
    import boto3

    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1",
                 **credentials).create_bucket(Bucket="synapsex-test")
    storage = S3Storage(bucket_name="synapsex-test", endpoint_url=moto_s3,
                        region_name="us-east-1", access_key="test", secret_key="test",
                        file_overwrite=False, default_acl=None)
    _roundtrip(storage)


def test_settings_select_s3_when_a_bucket_is_configured(tmp_path):
    import subprocess
    import sys

    from django.conf import settings

    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "synapsex_site.settings",
           "SYNAPSEX_EMBEDDED": "1", "S3_BUCKET": "adapters", "S3_ENDPOINT_URL": "http://x:1",
           "SYNAPSEX_VAR_DIR": str(tmp_path)}
    code = ("import django; django.setup();"
            "from django.core.files.storage import default_storage as s;"
            "b = s.bucket_name; print(s.__class__.__name__, b)")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, cwd=settings.BASE_DIR)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["S3Storage", "adapters"]
