#!/usr/bin/env bash
# Property-based fuzzing of the REST API with schemathesis (PyPI), driven by
# the OpenAPI document the backend generates: every operation, generated and
# mutated inputs, and the check that no answer is a 5xx.
#
#   scripts/api-fuzz.sh [MAX_EXAMPLES]     # default 30 per operation (~20 s)
#
# Starts backend-api with resize-svc and filter-svc on free loopback ports,
# SQLite and local files in a temp dir, and stops them afterwards.
# /readyz is left out of the 5xx check: it answers 503 by design here, since
# no ai-detect-svc runs (that answer is what Kubernetes needs).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

SCHEMATHESIS_VERSION=4.32.5
max_examples="${1:-30}"
venv="$IMAGEFLOW_CACHE/api-fuzz-venv"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --locked --quiet -p backend-api -p resize-svc -p filter-svc
stack_init debug
start_service resize
start_service filter
http_port="$(free_port)"
start_backend "$http_port" api
wait_http "$http_port" backend-api

log "schemathesis: $max_examples examples per operation against /openapi.json"
status=0
(cd "$work" && "$venv/bin/schemathesis" run "http://127.0.0.1:$http_port/openapi.json" \
    --checks not_a_server_error --exclude-path /readyz \
    --max-examples "$max_examples" --no-color) || status=$?
if [ "$status" -ne 0 ]; then
    log "backend log (last 40 lines):"
    tail -n 40 "$work/backend-api.log" >&2
    die "schemathesis found server errors"
fi
log "schemathesis: no 5xx"
