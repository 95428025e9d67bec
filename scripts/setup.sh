#!/usr/bin/env bash
# Installs everything into .venv (idempotent: skipped when pyproject.toml has not changed),
# migrates the database and builds the tiny offline base model.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export SYNAPSEX_EMBEDDED=${SYNAPSEX_EMBEDDED:-1}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.synapsex-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> Installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  # The CPU build of torch first: a bare `torch` requirement would pull CUDA builds.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[dev]"
  # DeepSpeed (ZeRO-3 on the cluster, tested on the CPU here) builds no ops at install time.
  DS_BUILD_OPS=0 .venv/bin/python -m pip install -q --no-build-isolation "deepspeed>=0.19"
  echo "$want" > "$stamp"
fi

echo "==> Migrating the database"
.venv/bin/python manage.py migrate --noinput -v0
echo "==> Building the tiny base model (offline, skipped when present)"
.venv/bin/python manage.py build_tiny_base
