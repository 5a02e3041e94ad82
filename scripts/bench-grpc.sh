#!/usr/bin/env bash
# Measures resize-svc and filter-svc over gRPC on loopback (release build,
# bytes input, the 1920x1080 JPEG fixture): p50/p95/p99 and requests/s at
# concurrency 1 and 8. Prints Markdown tables. Usage: scripts/bench-grpc.sh [REQUESTS]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

requests="${1:-200}"
cargo build --release --locked --quiet -p resize-svc -p filter-svc -p imageflowctl
stack_init release
start_service resize
start_service filter
wait_grpc "$resize_port" resize
wait_grpc "$filter_port" filter

photo=crates/imageflow-imaging/tests/fixtures/photo-1920x1080.jpg
log "machine: $(machine_summary)"
log "resize 1920x1080 JPEG -> 800x600 keep-aspect, quality GOOD"
"$bin/imageflowctl" bench resize --endpoint "http://127.0.0.1:$resize_port" --input "$photo" --requests "$requests"
for filter in gaussian:2 blur:3 sharpen:1 brightness:1.2; do
    log "filter $filter on 1920x1080 JPEG"
    "$bin/imageflowctl" bench filter --endpoint "http://127.0.0.1:$filter_port" --input "$photo" \
        --requests "$requests" --filter "${filter%%:*}" --intensity "${filter##*:}"
done
log "resize-svc peak RSS: $(peak_rss "$resize_pid")"
log "filter-svc peak RSS: $(peak_rss "$filter_pid")"
