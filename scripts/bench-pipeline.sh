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
bin="$CARGO_TARGET_DIR/release"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
resize_port="$(free_port)"
filter_port="$(free_port)"
detect_port="$(free_port)"
http_port="$(free_port)"
export STORAGE_URL="file://$work/data" RUST_LOG=warn
GRPC_LISTEN_ADDR="127.0.0.1:$resize_port" "$bin/resize-svc" >"$work/resize.log" 2>&1 &
pids+=("$!")
GRPC_LISTEN_ADDR="127.0.0.1:$filter_port" "$bin/filter-svc" >"$work/filter.log" 2>&1 &
pids+=("$!")
if "$with_detect"; then
    GRPC_LISTEN_ADDR="127.0.0.1:$detect_port" "$bin/ai-detect-svc" >"$work/detect.log" 2>&1 &
    pids+=("$!")
fi
HTTP_LISTEN_ADDR="127.0.0.1:$http_port" DATABASE_URL="sqlite://$work/imageflow.db" \
    RESIZE_GRPC_ENDPOINT="http://127.0.0.1:$resize_port" \
    FILTER_GRPC_ENDPOINT="http://127.0.0.1:$filter_port" \
    AI_DETECTION_GRPC_ENDPOINT="http://127.0.0.1:$detect_port" \
    "$bin/backend-api" >"$work/backend.log" 2>&1 &
pids+=("$!")
ports=("$resize_port" "$filter_port")
"$with_detect" && ports+=("$detect_port")
for port in "${ports[@]}"; do
    for _ in $(seq 1 300); do
        "$bin/imageflowctl" health "http://127.0.0.1:$port" 2>/dev/null && break
        sleep 0.1
    done
done
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$http_port/healthz" >/dev/null && break
    sleep 0.1
done

photo=crates/imageflow-imaging/tests/fixtures/photo-1920x1080.jpg
log "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
chains=("resize,filter")
"$with_detect" && chains+=("resize,detect,filter")
"$with_detect" || log "ai-detect-svc or models/yolo11n.onnx missing: resize → detect → filter skipped (run scripts/setup.sh)"
for chain in "${chains[@]}"; do
    log "pipeline $chain on a 1920x1080 JPEG"
    "$bin/imageflowctl" bench-pipeline --api "http://127.0.0.1:$http_port" --input "$photo" \
        --steps "$chain" --requests "$requests"
done
pid="$(pgrep -f "$bin/backend-api" | head -1)"
log "backend-api peak RSS: $(grep VmHWM "/proc/$pid/status" | awk '{print $2 " " $3}')"
