"""manifest.json: what an adapter is, where it came from, and the digests that prove it.

`verify_adapter_dir` is the check the serving side runs before it loads an adapter it fetched from
storage: a file whose sha256 differs from the manifest is refused, and so is any pickle-format file
(loading one can execute code).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.trainer.data import sha256_file

MANIFEST_FORMAT = "synapsex-adapter-manifest/1"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class AdapterVerificationError(ValueError):
    """An adapter folder does not match its manifest (tampered, truncated or incomplete)."""


def adapter_files_digest(adapter_dir: str | Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of each adapter file, keyed by file name."""
    adapter_dir = Path(adapter_dir)
    return {
        name: {
            "sha256": sha256_file(adapter_dir / name),
            "size": (adapter_dir / name).stat().st_size,
        }
        for name in ADAPTER_FILES
    }


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename): a reader never sees a half-written manifest."""
    path = Path(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_manifest(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterVerificationError(f"cannot read manifest {path}: {exc}") from exc


def verify_adapter_dir(path: str | Path, manifest: dict[str, Any] | str | Path) -> None:
    """Raise AdapterVerificationError unless `path` holds exactly the files the manifest lists.

    `manifest` is the decoded manifest or a path to manifest.json. Checks size and sha256 of every
    listed file and refuses pickle-format files anywhere in the folder.
    """
    folder = Path(path)
    if not isinstance(manifest, dict):
        manifest = load_manifest(manifest)
    files = (manifest.get("adapter") or {}).get("files")
    if not isinstance(files, dict) or not files:
        raise AdapterVerificationError("manifest lists no adapter files")
    if not folder.is_dir():
        raise AdapterVerificationError(f"adapter folder {folder} does not exist")
    pickles = sorted(p.name for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise AdapterVerificationError(
            f"adapter folder {folder} holds pickle-format file(s) {', '.join(pickles)}; "
            "only safetensors adapters are accepted"
        )
    for name, expected in files.items():
        file = folder / name
        if Path(name).name != name:
            raise AdapterVerificationError(f"manifest names a file outside the folder: {name!r}")
        if not file.is_file():
            raise AdapterVerificationError(f"{name} is missing from {folder}")
        size = file.stat().st_size
        if size != expected.get("size"):
            raise AdapterVerificationError(
                f"{name} is {size} bytes, the manifest says {expected.get('size')}"
            )
        actual = sha256_file(file)
        if actual != expected.get("sha256"):
            raise AdapterVerificationError(
                f"sha256 mismatch for {name}: file has {actual}, "
                f"manifest says {expected.get('sha256')}"
            )
