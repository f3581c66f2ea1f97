#!/bin/sh
# First start of the PostgreSQL volume: MLflow's database is POSTGRES_DB; Prefect gets its own.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -c "CREATE DATABASE \"$PREFECT_DB\""
