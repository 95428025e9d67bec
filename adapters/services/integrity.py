"""Integrity of adapter files: sha256 digests, the safetensors header, the trainer's manifest.

Nothing here touches the database or storage: these checks run on a trainer's result folder
before a version is stored, and on stored files before they are served or exported.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from tenants.errors import PlatformFault

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
MANIFEST = "manifest.json"
REQUIRED_ADAPTER_FILES = (ADAPTER_WEIGHTS, ADAPTER_CONFIG)
# Formats that can execute code when loaded (pickle and friends): never accepted, never served.
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy"}
ALLOWED_SUFFIXES = {".safetensors", ".json"}


class AdapterIntegrityError(PlatformFault):
    """An adapter file does not match its recorded sha256 (or is not a safe format): the
    platform's own files are wrong, not the request (500)."""

    def __init__(self, message: str, *, details=None):
        super().__init__("adapter_integrity_error", message, details=details)


def sha256_of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safetensors_header_check(data: bytes, *, name: str) -> None:
    """Refuse anything that is not a safetensors file (8-byte length + JSON header)."""
    if len(data) < 8:
        raise AdapterIntegrityError(f"{name} is not a safetensors file (too short).")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len <= 0 or 8 + header_len > len(data):
        raise AdapterIntegrityError(f"{name} is not a safetensors file (bad header length).")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except ValueError as exc:
        raise AdapterIntegrityError(f"{name} is not a safetensors file (header is not JSON).") \
            from exc
    if not isinstance(header, dict):
        raise AdapterIntegrityError(f"{name} is not a safetensors file (header is not a map).")


def manifest_file_entries(manifest: dict) -> dict[str, dict]:
    """`{file name: {"sha256", "size"?}}` from the trainer's manifest, tolerant of its shape.

    Accepts `adapter.files` (the trainer's `synapsex-adapter-manifest/1`), `files` or
    `adapter_files`, as a map name -> sha256, a map name -> {sha256, size},
    or a list of {path|name, sha256, size}; names may carry an `adapter/` prefix.
    """
    adapter_section = manifest.get("adapter")
    raw = (adapter_section.get("files") if isinstance(adapter_section, dict) else None) \
        or manifest.get("files") or manifest.get("adapter_files") or {}
    entries: dict[str, dict] = {}
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict) and (item.get("path") or item.get("name")):
                entries[Path(item.get("path") or item["name"]).name] = dict(item)
    elif isinstance(raw, dict):
        for name, value in raw.items():
            entry = {"sha256": value} if isinstance(value, str) else dict(value or {})
            entries[Path(name).name] = entry
    return entries


def _manifest_read(result_dir: Path) -> dict:
    manifest_path = result_dir / MANIFEST
    if not manifest_path.is_file():
        raise AdapterIntegrityError(f"The training result has no {MANIFEST}.",
                                    details={"result_dir": str(result_dir)})
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise AdapterIntegrityError(f"{MANIFEST} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise AdapterIntegrityError(f"{MANIFEST} must be a JSON object.")
    return manifest


def _result_file_problem(path: Path, entry: dict | None, data: bytes) -> str | None:
    """Why one adapter file of a result folder is refused, or None when it matches."""
    if not entry or not entry.get("sha256"):
        return "not listed in manifest.json with a sha256"
    actual = sha256_of_bytes(data)
    if actual != str(entry["sha256"]).lower():
        return f"sha256 mismatch: manifest {entry['sha256']}, file {actual}"
    if entry.get("size") is not None and int(entry["size"]) != len(data):
        return f"size mismatch: manifest {entry['size']}, file {len(data)}"
    return None


def verify_result_dir(result_dir: Path) -> tuple[dict, dict[str, bytes]]:
    """Read and check a trainer result folder. Returns (manifest, {file name: bytes}).

    Every `.safetensors`/`.json` file in `adapter/` must be listed in the manifest and match its
    sha256 (and size when given); pickle-capable files refuse the whole result.
    """
    result_dir = Path(result_dir)
    manifest = _manifest_read(result_dir)
    adapter_dir = result_dir / "adapter"
    if not adapter_dir.is_dir():
        raise AdapterIntegrityError("The training result has no adapter/ folder.")

    expected = manifest_file_entries(manifest)
    contents: dict[str, bytes] = {}
    problems: dict[str, str] = {}
    for path in sorted(adapter_dir.iterdir()):
        if not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            problems[path.name] = "pickle-capable formats are refused; only safetensors is served"
            continue
        if suffix not in ALLOWED_SUFFIXES:
            continue  # e.g. PEFT's README.md: not part of the adapter, not stored
        entry = expected.get(path.name)
        data = path.read_bytes() if entry and entry.get("sha256") else b""
        problem = _result_file_problem(path, entry, data)
        if problem:
            problems[path.name] = problem
            continue
        contents[path.name] = data
    for name in REQUIRED_ADAPTER_FILES:
        if name not in contents and name not in problems:
            problems[name] = "missing from adapter/"
    if problems:
        raise AdapterIntegrityError(
            "The trained adapter does not match its manifest; it was not stored.",
            details={"files": problems},
        )
    safetensors_header_check(contents[ADAPTER_WEIGHTS], name=ADAPTER_WEIGHTS)
    return manifest, contents
