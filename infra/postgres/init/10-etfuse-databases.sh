#!/bin/sh
# Roles and databases of the etfuse stack, created once on the first start of an empty data volume
# (the postgres image runs /docker-entrypoint-initdb.d/* as the superuser, over its local socket).
#
#   mlflow   owns  mlflow (tracking + model registry) and mlflow_auth (basic-auth users)
#   prefect  owns  prefect (Prefect server: flow runs, deployments, work pools)
#
# tests/infra/test_native_stack.py runs this very script against a throw-away PostgreSQL 15, with
# PGHOST/PGPORT/PGPASSWORD pointing at it.  Passwords come from the environment (compose: .env) and
# reach psql as variables, never as part of an SQL string built here.
set -eu

: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set (see .env.example)}"
: "${PREFECT_DB_PASSWORD:?PREFECT_DB_PASSWORD is not set (see .env.example)}"
for value in "${POSTGRES_PASSWORD:-}" "$MLFLOW_DB_PASSWORD" "$PREFECT_DB_PASSWORD"; do
    case "$value" in
        *change-me*)
            echo "10-etfuse-databases.sh: a database password still holds the 'change-me' placeholder" \
                 "of .env.example; refusing to initialise the cluster" >&2
            exit 1 ;;
    esac
done

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
     --set=mlflow_pw="$MLFLOW_DB_PASSWORD" --set=prefect_pw="$PREFECT_DB_PASSWORD" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE ROLE prefect LOGIN PASSWORD :'prefect_pw';
CREATE DATABASE mlflow OWNER mlflow ENCODING 'UTF8';
CREATE DATABASE mlflow_auth OWNER mlflow ENCODING 'UTF8';
CREATE DATABASE prefect OWNER prefect ENCODING 'UTF8';
REVOKE ALL ON DATABASE mlflow, mlflow_auth, prefect FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE mlflow, mlflow_auth TO mlflow;
GRANT CONNECT, TEMPORARY ON DATABASE prefect TO prefect;
SQL

# Prefect's migrations create pg_trgm (a trusted extension: the database owner may create it too;
# creating it here keeps the first server start independent of that).
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname prefect \
     -c 'CREATE EXTENSION IF NOT EXISTS pg_trgm'

echo "10-etfuse-databases.sh: roles mlflow, prefect and databases mlflow, mlflow_auth, prefect created"
