#!/usr/bin/env bash
# The README's second command: run the whole test suite. Uses DATABASE_URL / REDIS_URL when set
# (CI sets them to the real PostgreSQL and Redis); otherwise SQLite and an embedded Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
export SYNAPSEX_EMBEDDED=${SYNAPSEX_EMBEDDED:-1}
scripts/setup.sh
# A real browser for the dashboard tests: Debian's chromium (a test tool's own download fails).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ]; then
  echo "==> Installing Debian's chromium for the browser tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/var/torch_extensions}
exec .venv/bin/python -m pytest "$@"
