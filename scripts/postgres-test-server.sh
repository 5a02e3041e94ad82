#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the test suite:
# starts the machine's cluster when it is down, installs Debian's package when
# it is missing. Prints the line that points the tests at it:
#   eval "$(scripts/postgres-test-server.sh)"
# exports IMAGEFLOW_TEST_POSTGRES_URL. The tests create (and never reuse) a
# fresh database per test on it. The password is a loopback-only test value
# (ignored where the server trusts loopback connections).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly TEST_PASSWORD="imageflow-test-loopback-only"
readonly URL="postgres://postgres:${TEST_PASSWORD}@127.0.0.1:5432/test"

answers() {
    PGPASSWORD="$TEST_PASSWORD" psql -h 127.0.0.1 -U postgres -d test -Atqc 'select 1' >/dev/null 2>&1
}

start_cluster() {
    local version
    version="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf "%f\n" 2>/dev/null | sort -V | tail -n 1)"
    [[ -n "$version" ]] || return 1
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
    for _ in $(seq 1 50); do
        pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

if ! answers; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        log "installing Debian's postgresql"
        as_root apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q postgresql >/dev/null
    fi
    pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 || start_cluster || die "PostgreSQL did not start"
    if ! answers; then
        # A fresh Debian cluster: give the postgres role the test password and
        # create the database the tests start from.
        as_root su postgres -c "psql -qc \"ALTER USER postgres PASSWORD '$TEST_PASSWORD'\"" >&2
        as_root su postgres -c "createdb test" >&2 2>/dev/null || true
    fi
    answers || die "PostgreSQL on 127.0.0.1:5432 refuses the test login (user postgres, database test)"
fi
echo "export IMAGEFLOW_TEST_POSTGRES_URL=$URL"
