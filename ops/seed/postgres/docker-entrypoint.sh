#!/bin/bash
# Entrypoint of the sandpit postgres seed image, modelled on the official one:
#   - "postgres ..." (or "-c ..." flags) starts the server; anything else is exec'd as is;
#   - on first start, PGDATA is initialised (initdb) as user postgres, the
#     superuser POSTGRES_USER (default postgres) gets POSTGRES_PASSWORD,
#     the database POSTGRES_DB (default: POSTGRES_USER) is created, the server
#     listens on all addresses and accepts scram-sha-256 password logins from
#     anywhere (or anyone, with POSTGRES_HOST_AUTH_METHOD=trust);
#   - scripts in /docker-entrypoint-initdb.d/ (*.sh, *.sql) run once after initdb.
set -Eeuo pipefail

if [[ ${1:-} == -* ]]; then
    set -- postgres "$@"
fi
if [[ ${1:-} != postgres ]]; then
    exec "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

# As root: create the directories, then come back as user postgres.
if [[ $(id -u) == 0 ]]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chmod 00700 "$PGDATA"
    chmod 03775 /var/run/postgresql
    chown postgres:postgres /var/run/postgresql
    # Only the top level: a mounted volume with foreign files is left alone.
    if [[ ! -s $PGDATA/PG_VERSION ]]; then
        chown -R postgres:postgres "$PGDATA"
    else
        chown postgres:postgres "$PGDATA"
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [[ ! -s $PGDATA/PG_VERSION ]]; then
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    if [[ -z ${POSTGRES_PASSWORD:-} && $auth != trust ]]; then
        cat >&2 <<'MSG'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
       connections without a password. This is *not* recommended.
MSG
        exit 1
    fi
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}

    pwfile=$(mktemp)
    trap 'rm -f "$pwfile"' EXIT
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of flags
    initdb --username="$user" --pwfile="$pwfile" --auth-local=trust \
        --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-}
    rm -f "$pwfile"
    trap - EXIT

    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "host all all all $auth" >>"$PGDATA/pg_hba.conf"

    # A private server on the socket only, for the set-up steps.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
    psql=(psql -v ON_ERROR_STOP=1 --username "$user" --no-password --no-psqlrc)
    if [[ $db != postgres ]]; then
        "${psql[@]}" --dbname postgres --set db="$db" <<<'CREATE DATABASE :"db";'
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case $f in
            *.sh) echo "running $f"; # shellcheck disable=SC1090
                . "$f" ;;
            *.sql) echo "running $f"; "${psql[@]}" --dbname "$db" -f "$f" ;;
            *) [[ -e $f ]] && echo "ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    echo
    echo "PostgreSQL init process complete; ready for start up."
    echo
fi

exec "$@"
