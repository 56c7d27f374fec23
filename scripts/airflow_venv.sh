#!/usr/bin/env bash
# Make (once) a virtualenv with Apache Airflow and its HTTP provider, outside the product's,
# for the tests that run examples/airflow_full_refresh_dag.py under real Airflow
# (tests/airflow, marked `airflow`). Prints the venv's python on its last line:
#
#   export AUTOLOADER_AIRFLOW_PYTHON=$(bash scripts/airflow_venv.sh | tail -1)
#   .venv/bin/pytest -m airflow
#
# Environment:
#   AIRFLOW_VERSION   the apache-airflow release (default 3.3.2; 2.10.5 works too)
#   AIRFLOW_VENV      where the venv goes (default /tmp/airflow-venv-$AIRFLOW_VERSION)
#   PYTHON            the interpreter to make it with (default python3)
#
# A venv that already has that release is reused. Airflow's constraint files live on
# GitHub, which is out of reach here, so pip resolves on its own; it did so for 3.3.2 and
# 2.10.5 with nothing pinned (about a minute each). Pin a package below if that changes.
set -euo pipefail

AIRFLOW_VERSION=${AIRFLOW_VERSION:-3.3.2}
AIRFLOW_VENV=${AIRFLOW_VENV:-/tmp/airflow-venv-$AIRFLOW_VERSION}
PYTHON=${PYTHON:-python3}
STAMP="$AIRFLOW_VENV/.autoloader-airflow-$AIRFLOW_VERSION"

if [[ ! -f $STAMP ]]; then
    echo "Installing apache-airflow==$AIRFLOW_VERSION into $AIRFLOW_VENV" >&2
    rm -rf "$AIRFLOW_VENV"
    "$PYTHON" -m venv "$AIRFLOW_VENV"
    export PIP_DISABLE_PIP_VERSION_CHECK=1
    # A current pip resolves Airflow's few hundred requirements much faster.
    "$AIRFLOW_VENV/bin/python" -m pip install --quiet --upgrade pip \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    # The machine's pip configuration may name local indexes that are absent: pip says so
    # once per package, which only buries real errors.
    "$AIRFLOW_VENV/bin/python" -m pip install --quiet \
        "apache-airflow==$AIRFLOW_VERSION" apache-airflow-providers-http \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    "$AIRFLOW_VENV/bin/python" -c "import airflow, airflow.providers.http" >&2
    touch "$STAMP"
fi
echo "$AIRFLOW_VENV/bin/python"
