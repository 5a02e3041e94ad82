#!/usr/bin/env bash
# Measures whole pipelines through backend-api's synchronous path on loopback
# (release builds, SQLite, local files, the 1920x1080 JPEG fixture):
# resize → filter, and resize → detect → filter when ai-detect-svc and its
# model are installed (scripts/setup.sh). Prints Markdown tables with
# p50/p95/p99, executions/s at concurrency 1 and 8, the services' own time and
# the orchestration overhead per step (end to end minus the services' time).
#   scripts/bench-pipeline.sh [EXECUTIONS]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

requests="${1:-200}"
packages=(-p resize-svc -p filter-svc -p backend-api -p imageflowctl)
with_detect=false
if [ -f crates/ai-detect-svc/Cargo.toml ] && [ -f models/yolo11n.onnx ]; then
    with_detect=true
    packages+=(-p ai-detect-svc)
fi
cargo build --release --locked --quiet "${packages[@]}"
stack_init release
start_service resize
start_service filter
if "$with_detect"; then
    start_service detect
else
    # Nothing listens there: the backend calls no detection in these chains.
    detect_port="$(free_port)"
fi
http_port="$(free_port)"
start_backend "$http_port" imageflow
wait_grpc "$resize_port" resize
wait_grpc "$filter_port" filter
"$with_detect" && wait_grpc "$detect_port" detect
wait_http "$http_port" backend-imageflow

photo=crates/imageflow-imaging/tests/fixtures/photo-1920x1080.jpg
log "machine: $(machine_summary)"
chains=("resize,filter")
"$with_detect" && chains+=("resize,detect,filter")
"$with_detect" || log "ai-detect-svc or models/yolo11n.onnx missing: resize → detect → filter skipped (run scripts/setup.sh)"
for chain in "${chains[@]}"; do
    log "pipeline $chain on a 1920x1080 JPEG"
    "$bin/imageflowctl" bench-pipeline --api "http://127.0.0.1:$http_port" --input "$photo" \
        --steps "$chain" --requests "$requests"
done
log "backend-api peak RSS: $(peak_rss "$backend_pid")"
