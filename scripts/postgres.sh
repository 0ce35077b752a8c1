#!/usr/bin/env bash
# Debian's PostgreSQL 15 for firstline: installs it if missing, starts the cluster, creates the login role
# `firstline` and one database, and prints its URL on stdout (nothing else goes to stdout):
#
#   FIRSTLINE_DATABASE_URL=$(sudo bash scripts/postgres.sh) make run        # the README's one-line setup
#   bash scripts/postgres.sh firstline_test                                 # the test suite's database
#
# Idempotent and fast when everything is there already (~0.2 s). Needs root or sudo the first time
# (apt-get, pg_ctlcluster; the server itself runs as the `postgres` user, it refuses to run as root).
# Settings: FIRSTLINE_PG_PASSWORD (default "firstline"; the role is local to 127.0.0.1 and ::1).
set -euo pipefail
DB="${1:-firstline}"
VERSION=15
CLUSTER=main
ROLE=firstline
PASSWORD="${FIRSTLINE_PG_PASSWORD:-firstline}"
[[ "$DB" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || { echo "postgres.sh: bad database name $DB" >&2; exit 2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "postgres.sh: needs root (or password-less sudo) to install and start PostgreSQL" >&2
    exit 1
  fi
fi
as_postgres() { $SUDO runuser -u postgres -- "$@"; }

# one setup at a time on this machine (several test runs may start together)
exec 9>/tmp/firstline-postgres.lock
flock 9

if [ ! -x "/usr/lib/postgresql/$VERSION/bin/postgres" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
  # the downloaded packages stay in ~/.cache/firstline/apt: a fresh CI machine with that cache installs
  # them without downloading (and without `apt-get update` when every dependency is cached)
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/firstline/apt"
  mkdir -p "$cache/partial"
  echo "postgres.sh: installing Debian's postgresql-$VERSION ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! compgen -G "$cache/*.deb" >/dev/null ||
     ! $SUDO apt-get install -y -qq -o Dir::Cache::archives="$cache" "$cache"/*.deb >/dev/null 2>&1; then
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq -o Dir::Cache::archives="$cache" "postgresql-$VERSION" >/dev/null
  fi
fi
if ! pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1==v && $2==c {f=1} END {exit !f}'; then
  $SUDO pg_createcluster "$VERSION" "$CLUSTER" >&2 9>&-
fi
conf="/etc/postgresql/$VERSION/$CLUSTER/conf.d/firstline.conf"
if [ ! -f "$conf" ]; then
  # room for several web processes, test runs and a benchmark at once; the rest stays Debian's default
  printf '%s\n' "# written by firstline's scripts/postgres.sh" "max_connections = 300" \
    "shared_buffers = 256MB" | $SUDO tee "$conf" >/dev/null
  if pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1==v && $2==c && $4=="online" {f=1} END {exit !f}'; then
    $SUDO pg_ctlcluster "$VERSION" "$CLUSTER" restart >&2 9>&-
  fi
fi
if ! pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1==v && $2==c && $4=="online" {f=1} END {exit !f}'; then
  $SUDO pg_ctlcluster "$VERSION" "$CLUSTER" start >&2 9>&-  # the server must not inherit the lock
fi
PORT=$(pg_lsclusters -h | awk -v v="$VERSION" -v c="$CLUSTER" '$1==v && $2==c {print $3}')
for _ in $(seq 50); do  # the socket appears a moment after start
  as_postgres psql -p "$PORT" -qAtc "select 1" >/dev/null 2>&1 && break
  sleep 0.2
done
psql_q() { as_postgres psql -p "$PORT" -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(psql_q -c "select 1 from pg_roles where rolname = '$ROLE'")" != "1" ]; then
  psql_q -c "create role $ROLE login password '$PASSWORD'" >&2
fi
if [ "$(psql_q -c "select 1 from pg_database where datname = '$DB'")" != "1" ]; then
  psql_q -c "create database $DB owner $ROLE" >&2
fi
echo "postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
