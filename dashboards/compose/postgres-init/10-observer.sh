#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory: creates the
# read-only role of Grafana's PostgreSQL datasource and of postgres_exporter.
# pg_monitor: the statistics views; pg_read_all_data: SELECT on chat_sessions / chat_messages
# (the service creates those tables later, through its migrations).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v observer="$OBSERVER_USER" -v password="$OBSERVER_PASSWORD" <<'SQL'
CREATE ROLE :"observer" LOGIN PASSWORD :'password';
GRANT pg_monitor, pg_read_all_data TO :"observer";
SQL
