#!/usr/bin/env bash
# Production mode on one host: gunicorn (the web, deploy/gunicorn.conf.py) and
# AUTOLOADER_WORKERS background workers, supervised by `manage.py supervise`: any of them
# that exits is restarted with backoff (1 s doubling to 60 s, logged with its exit status),
# so a worker dying never takes the web down. SIGTERM or Ctrl-C stops them all.
# Run through `make serve`, which first checks the deployment, migrates and collects
# the static files. Several hosts: see docs/deploy.md (systemd units, Procfile).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
WORKERS=${AUTOLOADER_WORKERS:-2}

# exec: the supervisor takes this PID, so the process manager's signals reach it.
exec "$PYTHON" manage.py supervise --workers "$WORKERS" --web-config deploy/gunicorn.conf.py
