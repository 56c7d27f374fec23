#!/usr/bin/env bash
# Production mode on one host: gunicorn (the web, deploy/gunicorn.conf.py) and
# AUTOLOADER_WORKERS background workers. SIGTERM or Ctrl-C stops them all; if one of
# them dies, the others are stopped too, so a process manager restarts the whole set.
# Run through `make serve`, which first checks the deployment, migrates and collects
# the static files. Several hosts: see docs/deploy.md (systemd units, Procfile).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
WORKERS=${AUTOLOADER_WORKERS:-2}
pids=()

stop() {
    trap - INT TERM
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait || true
}
trap 'stop; exit 0' INT TERM

"$PYTHON" -m gunicorn -c deploy/gunicorn.conf.py &
pids+=($!)
for ((i = 0; i < WORKERS; i++)); do
    "$PYTHON" manage.py autoloader_worker &
    pids+=($!)
done
echo "serve: web (gunicorn) and $WORKERS worker(s) running: ${pids[*]}" >&2

# The first process to exit ends the set.
rc=0
wait -n || rc=$?
echo "serve: a process exited (status $rc); stopping the others" >&2
stop
exit "$rc"
