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
bin="$CARGO_TARGET_DIR/release"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

export STORAGE_URL="file://$work" RUST_LOG=warn
resize_port=19091
filter_port=19092
GRPC_LISTEN_ADDR="127.0.0.1:$resize_port" "$bin/resize-svc" >"$work/resize.log" 2>&1 &
pids+=("$!")
GRPC_LISTEN_ADDR="127.0.0.1:$filter_port" "$bin/filter-svc" >"$work/filter.log" 2>&1 &
pids+=("$!")
for port in "$resize_port" "$filter_port"; do
    for _ in $(seq 1 100); do
        "$bin/imageflowctl" health "http://127.0.0.1:$port" 2>/dev/null && break
        sleep 0.1
    done
done

photo=crates/imageflow-imaging/tests/fixtures/photo-1920x1080.jpg
log "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
log "resize 1920x1080 JPEG -> 800x600 keep-aspect, quality GOOD"
"$bin/imageflowctl" bench resize --endpoint "http://127.0.0.1:$resize_port" --input "$photo" --requests "$requests"
for filter in gaussian:2 blur:3 sharpen:1 brightness:1.2; do
    log "filter $filter on 1920x1080 JPEG"
    "$bin/imageflowctl" bench filter --endpoint "http://127.0.0.1:$filter_port" --input "$photo" \
        --requests "$requests" --filter "${filter%%:*}" --intensity "${filter##*:}"
done
for svc in resize-svc filter-svc; do
    pid="$(pgrep -f "$bin/$svc" | head -1)"
    log "$svc peak RSS: $(grep VmHWM "/proc/$pid/status" | awk '{print $2 " " $3}')"
done
