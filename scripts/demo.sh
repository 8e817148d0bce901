#!/usr/bin/env bash
# Run the example project against the local ZooKeeper started by `make zk-start`.
set -euo pipefail
cd "$(dirname "$0")/../example_project"
HOST="${1:-127.0.0.1}"; PORT="${2:-8000}"; ZKPORT="${3:-2181}"
export ZKFLAGS_URL="${ZKFLAGS_URL:-zk://127.0.0.1:${ZKPORT}/zkflags-example}"
# The command line reads the same settings from example_project/.env (django-environ).
printf '# Written by `make demo`: the demo ZooKeeper, for manage.py zkflags ...\nZKFLAGS_URL=%s\n' "$ZKFLAGS_URL" > .env
PY=../.venv/bin/python
$PY manage.py migrate --noinput -v0
$PY manage.py demo_setup
echo "Serving the example project on http://$HOST:$PORT/  (admin: http://$HOST:$PORT/admin/)"
echo "ZooKeeper: $ZKFLAGS_URL  (stop it with 'make zk-stop')"
echo "Command line: cd example_project && ../.venv/bin/python manage.py zkflags list"
exec $PY manage.py runserver "$HOST:$PORT"
