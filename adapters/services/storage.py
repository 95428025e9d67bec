"""Adapter files in object storage: where they live, writing, sha256-verified reading, export.

Serving and export both read through `stored_files_read`, so a file changed in storage after
it was recorded is refused the same way everywhere.
"""

from __future__ import annotations

import io
import logging
import zipfile

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from adapters.models import AdapterVersion
from adapters.services.integrity import AdapterIntegrityError, sha256_of_bytes
from tenants.errors import Gone
from tenants.models import Tenant

logger = logging.getLogger(__name__)


def adapter_storage_prefix(*, tenant: Tenant, number: int) -> str:
    """Seam 4: built from ids the platform issued (slug, number), never from tenant input."""
    return f"tenants/{tenant.slug}/adapters/v{number}"


def storage_put(name: str, data: bytes) -> None:
    """Write `name`, replacing what is there: storages rename on collision, and the path is part
    of the contract (serving and export find the files by it)."""
    if default_storage.exists(name):
        default_storage.delete(name)
    saved = default_storage.save(name, ContentFile(data))
    if saved != name:  # pragma: no cover - a storage that renames anyway
        default_storage.delete(saved)
        raise RuntimeError(f"storage saved {name!r} as {saved!r}")


def storage_delete_quietly(names: list[str], *, why: str) -> None:
    """Best-effort removal (cleanup after a failed write, archiving): a storage hiccup is logged,
    never raised, because the database row is what the caller must get right."""
    for name in names:
        try:
            if default_storage.exists(name):
                default_storage.delete(name)
        except Exception:  # pragma: no cover - best effort
            logger.warning("could not delete %s while %s", name, why)


def stored_files_read(*, storage_prefix: str,
                      expected: dict[str, str]) -> tuple[dict[str, bytes], dict[str, str]]:
    """Read each named file under `storage_prefix` and check it against its recorded sha256.

    Returns the verified contents and, for each file that failed, why (missing or mismatch);
    serving and export both refuse a version with any problem.
    """
    out: dict[str, bytes] = {}
    problems: dict[str, str] = {}
    for name, recorded in sorted(expected.items()):
        try:
            with default_storage.open(f"{storage_prefix}/{name}", "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            problems[name] = "missing from storage"
            continue
        actual = sha256_of_bytes(data)
        if actual != recorded:
            problems[name] = f"sha256 mismatch: recorded {recorded}, stored file {actual}"
            continue
        out[name] = data
    return out, problems


def adapter_files_read_verified(version: AdapterVersion) -> dict[str, bytes]:
    """The version's files from storage, each checked against its recorded sha256."""
    if version.is_archived:
        raise Gone("version_archived",
                   f"{version.version} is archived; its files were deleted.")
    out, problems = stored_files_read(storage_prefix=version.storage_prefix,
                                      expected=version.files or {})
    if problems:
        raise AdapterIntegrityError(
            f"The stored files of {version.version} do not match their recorded sha256; "
            "refusing to serve them.", details={"version": version.version, "files": problems})
    return out


def adapter_export_zip(version: AdapterVersion) -> bytes:
    """A zip with the adapter as vLLM / LoRAX / PEFT load it, sha256-verified first."""
    files = adapter_files_read_verified(version)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(f"{version.version}/{name}", data)
    return buffer.getvalue()
