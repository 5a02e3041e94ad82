#!/usr/bin/env bash
# Measures one execution of N images against N single-image executions of the
# same pipeline at the same concurrency, through backend-api's synchronous
# path on loopback (release builds, SQLite, local files, the 1920x1080 JPEG
# fixture, resize → filter). The backend runs MAX_PARALLEL_INPUTS=C inputs of
# one execution at once; the single executions come from C clients.
#   scripts/bench-inputs.sh [IMAGES] [CONCURRENCY] [ROUNDS]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

images="${1:-20}"
concurrency="${2:-4}"
rounds="${3:-10}"
cargo build --release --locked --quiet -p resize-svc -p filter-svc -p backend-api -p imageflowctl
stack_init release
start_service resize
start_service filter
# Nothing listens there: resize → filter calls no detection.
detect_port="$(free_port)"
http_port="$(free_port)"
start_backend "$http_port" imageflow MAX_PARALLEL_INPUTS="$concurrency" \
    MAX_PARALLEL_EXECUTIONS="$concurrency"
wait_grpc "$resize_port" resize
wait_grpc "$filter_port" filter
wait_http "$http_port" backend-imageflow

log "machine: $(machine_summary)"
log "$images images of 1920x1080 through resize → filter, $concurrency at a time, $rounds rounds"
"$bin/imageflowctl" bench-inputs --api "http://127.0.0.1:$http_port" \
    --input crates/imageflow-imaging/tests/fixtures/photo-1920x1080.jpg \
    --steps resize,filter --inputs "$images" --concurrency "$concurrency" --rounds "$rounds"
log "backend-api peak RSS: $(peak_rss "$backend_pid")"
