#!/usr/bin/env bash
# Makes sure the JDBC drivers the spark engine's Iceberg catalog needs are there: Debian's
# sqlite-jdbc and postgresql jars (Spark's Iceberg JDBC catalog shares the embedded engine's
# catalog database). Iceberg's own Spark runtime comes from the snowpark-connect-deps-iceberg
# wheel (pyproject.toml); nothing is downloaded at run time.
set -euo pipefail

JARS=(/usr/share/java/sqlite-jdbc.jar /usr/share/java/postgresql.jar)
PACKAGES=(libxerial-sqlite-jdbc-java libpostgresql-jdbc-java)

missing=0
for jar in "${JARS[@]}"; do
    [[ -e $jar ]] || missing=1
done
if [[ $missing -eq 0 ]]; then
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    echo "ensure_spark_jars: installing Debian's ${PACKAGES[*]}" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${PACKAGES[@]}"; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${PACKAGES[@]}"
    fi
    for jar in "${JARS[@]}"; do
        [[ -e $jar ]] || { echo "ensure_spark_jars: $jar is still missing" >&2; exit 1; }
    done
else
    echo "ensure_spark_jars: warning: JDBC driver jars are missing, the spark engine and its" \
        "tests will fail; install them with: sudo apt-get install -y ${PACKAGES[*]}" >&2
fi
