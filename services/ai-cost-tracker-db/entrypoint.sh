#!/bin/sh
# PostgreSQL entrypoint: on first start, initialise a cluster (scram-sha-256 for every TCP
# connection), create POSTGRES_USER with POSTGRES_PASSWORD and the database POSTGRES_DB it owns;
# then run postgres in the foreground as user postgres. The password is read from the
# environment by psql itself (\getenv) and never appears in argv, a file or the log.
# The role is not a superuser (the superuser `postgres` can only log in on the local socket); it
# owns its database and may create databases, so a restore can drop and recreate it.
# Extra arguments are passed to postgres (`-c name=value`).
set -eu

if [ "$(id -u)" = 0 ]; then
    # Started as root: make sure the data directory belongs to postgres, then drop privileges.
    mkdir -p "$(dirname "${PGDATA:-/var/lib/postgresql/data/pgdata}")" /var/run/postgresql
    chown postgres:postgres "$(dirname "${PGDATA:-/var/lib/postgresql/data/pgdata}")" /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$0" "$@"
fi

: "${POSTGRES_USER:?POSTGRES_USER must be set}"
: "${POSTGRES_DB:?POSTGRES_DB must be set}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
PGDATA="${PGDATA:-/var/lib/postgresql/data/pgdata}"
export PGDATA

# Debian and the official image keep the server binaries in a versioned directory.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/postgres" ]; then
    echo "entrypoint: no PostgreSQL server under /usr/lib/postgresql/*/bin" >&2
    exit 1
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    # Initialise into a scratch directory and move it into place only when complete, so an
    # interrupted first start is redone from scratch instead of leaving a half-made cluster.
    init="$PGDATA.init"
    sock="$(mktemp -d)"
    rm -rf "$init"
    echo "entrypoint: initialising a new cluster"
    "$PGBIN/initdb" -D "$init" --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    {
        echo "# Added by the entrypoint: password (scram-sha-256) for every TCP client."
        echo "host all all 0.0.0.0/0 scram-sha-256"
        echo "host all all ::/0 scram-sha-256"
    } >>"$init/pg_hba.conf"
    # A temporary server reachable only through a private socket: no TCP, so health checks on
    # port 5432 cannot pass before the role and database exist.
    "$PGBIN/pg_ctl" -D "$init" -w -s \
        -o "-c listen_addresses='' -c unix_socket_directories=$sock" start
    "$PGBIN/psql" -v ON_ERROR_STOP=1 -q -h "$sock" -U postgres -d postgres <<'SQL'
\getenv app_user POSTGRES_USER
\getenv app_password POSTGRES_PASSWORD
\getenv app_db POSTGRES_DB
SET password_encryption = 'scram-sha-256';
CREATE ROLE :"app_user" LOGIN CREATEDB PASSWORD :'app_password';
CREATE DATABASE :"app_db" OWNER :"app_user";
SQL
    "$PGBIN/pg_ctl" -D "$init" -w -s -m fast stop
    rmdir "$sock"
    # An empty PGDATA directory is replaced; a non-empty one that is no cluster stops us here.
    if [ -d "$PGDATA" ]; then rmdir "$PGDATA"; fi
    mv "$init" "$PGDATA"
    echo "entrypoint: cluster ready (role and database created)"
fi

exec "$PGBIN/postgres" -D "$PGDATA" \
    -c listen_addresses='*' \
    -c unix_socket_directories=/var/run/postgresql \
    -c password_encryption=scram-sha-256 \
    "$@"
