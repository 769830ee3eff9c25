#!/bin/sh
# Entry point of infra/docker/Dockerfile.postgres, with the interface of the registry's postgres
# image that docker-compose.yml relies on:
#
#   POSTGRES_PASSWORD      superuser password (required on the first start)
#   POSTGRES_USER          superuser (default postgres)     POSTGRES_DB   its database (default postgres)
#   POSTGRES_INITDB_ARGS   extra initdb arguments (compose: scram-sha-256 over TCP, peer locally)
#   /docker-entrypoint-initdb.d/*.sh, *.sql   run once, on the first start of an empty PGDATA, against
#                          a server that listens on its socket only (so a TCP health check turns
#                          healthy only once they ran)
#
# A first start that fails half-way empties PGDATA again, so that the next start initialises anew
set -eu

PGDATA=${PGDATA:-/var/lib/postgresql/data}
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-postgres}
export PGDATA

if [ "${1:-postgres}" != postgres ]; then
    exec "$@"
fi
shift || true

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set (see .env.example)}"
    case "$POSTGRES_PASSWORD" in
        *change-me*) echo "postgres: POSTGRES_PASSWORD still holds the 'change-me' placeholder of .env.example" >&2
                     exit 78 ;;
    esac
    if [ -n "$(ls -A "$PGDATA" 2>/dev/null)" ]; then
        echo "postgres: $PGDATA holds files but no cluster (PG_VERSION missing); refusing to initialise over them" >&2
        exit 1
    fi
    cleanup() { find "$PGDATA" -mindepth 1 -delete 2>/dev/null || true; }
    trap 'echo "postgres: first-start initialisation failed; $PGDATA emptied again" >&2; cleanup' EXIT
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of arguments
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
           ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    # clients on the compose network authenticate with their passwords (initdb's host lines cover loopback)
    printf '\n# etfuse: every other host, with a password\nhost all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
    pg_ctl --wait --silent -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" start
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
             --set=db="$POSTGRES_DB" -c 'CREATE DATABASE :"db"'
    fi
    for script in /docker-entrypoint-initdb.d/*; do
        case "$script" in
            *.sh)  echo "postgres: running $script"; sh "$script" ;;
            *.sql) echo "postgres: running $script"
                   psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$script" ;;
            *)     [ -e "$script" ] && echo "postgres: ignoring $script" ;;
        esac
    done
    pg_ctl --wait --silent -m fast stop
    trap - EXIT
    echo "postgres: cluster initialised in $PGDATA"
fi

exec postgres -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"
