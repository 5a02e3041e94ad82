#!/usr/bin/env bash
# The test command: installs what is missing, starts the real peers on
# loopback, checks format and lints, runs the whole suite, stops what it started.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/disk-guard.sh"
"$REPO_ROOT/scripts/setup.sh"

run_dir="$(mktemp -d)"
cleanup() {
    "$REPO_ROOT/scripts/s3-test-server.sh" stop "$run_dir/s3" >/dev/null 2>&1 || true
    rm -rf "$run_dir"
}
trap cleanup EXIT

log "starting s3s-fs on loopback"
s3_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
eval "$("$REPO_ROOT/scripts/s3-test-server.sh" start "$run_dir/s3" "$s3_port")"

log "PostgreSQL on loopback"
pg_env="$("$REPO_ROOT/scripts/postgres-test-server.sh")"
eval "$pg_env"

log "shellcheck"
shellcheck -x scripts/*.sh .ci/run

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo deny: licenses, bans, sources of the dependency tree"
cargo deny --locked --log-level error check bans licenses sources

log "cargo test"
# --no-fail-fast runs every test binary, so a failure's own output can be
# thousands of lines above the end; repeat each failing binary's failures last,
# where a CI log's tail shows them.
test_log="$run_dir/cargo-test.log"
if ! cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$test_log"; then
    log "cargo test failed; the failures again:"
    awk '/^     Running /{binary=$0} /^failures:$/{if(!shown[binary]++)print binary; on=1} on{print} /^test result: FAILED/{on=0}' "$test_log" >&2
    die "cargo test failed"
fi

log "deployment: chart, manifests, Dockerfile, alerts, workflows"
"$REPO_ROOT/scripts/validate-deploy.sh" --require-binaries

log "container images: built from docker/Dockerfile and run as the chart runs them (when the image cache is warm)"
images_rc=0
"$REPO_ROOT/scripts/build-images.sh" --only-if-warm || images_rc=$?
case "$images_rc" in
    0) "$REPO_ROOT/scripts/validate-images.sh" ;;
    3) log "images skipped: their build cache is cold (see above); run scripts/build-images.sh and scripts/validate-images.sh" ;;
    *) die "scripts/build-images.sh failed" ;;
esac

log "web UI: unit tests and the browser end-to-end test"
"$REPO_ROOT/scripts/ui-e2e.sh"

log "schemathesis against the backend's OpenAPI document"
"$REPO_ROOT/scripts/api-fuzz.sh"

log "cargo fuzz: image decoding, pipeline JSON, DAG validation (20 s each)"
"$REPO_ROOT/scripts/fuzz.sh" 20

log "all tests passed"
