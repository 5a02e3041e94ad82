#!/usr/bin/env bash
# Added latency of EXECUTION_MODE=queue over direct mode for one pipeline
# (resize → filter on the 1920x1080 JPEG, release builds, loopback): the same
# bench through two backends, both publishing events to a real broker
# (tansu, in-memory storage), one running what it accepts, one going through
# pipeline-executions. Usage: scripts/bench-queue.sh [EXECUTIONS]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

requests="${1:-200}"
"$REPO_ROOT/scripts/build-tansu.sh"
cargo build --release --locked --quiet -p resize-svc -p filter-svc -p backend-api -p imageflowctl
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
kafka_port="$(free_port)"
resize_port="$(free_port)"
filter_port="$(free_port)"
direct_port="$(free_port)"
queue_port="$(free_port)"

env -i PATH="$PATH" HOME="$HOME" "$TOOLS_DIR/bin/tansu" broker \
    --listener-url "tcp://127.0.0.1:$kafka_port" --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
    --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
pids+=("$!")
export STORAGE_URL="file://$work/data" RUST_LOG=warn
GRPC_LISTEN_ADDR="127.0.0.1:$resize_port" "$bin/resize-svc" >"$work/resize.log" 2>&1 &
pids+=("$!")
GRPC_LISTEN_ADDR="127.0.0.1:$filter_port" "$bin/filter-svc" >"$work/filter.log" 2>&1 &
pids+=("$!")
start_backend() {
    local port="$1" mode="$2"
    HTTP_LISTEN_ADDR="127.0.0.1:$port" DATABASE_URL="sqlite://$work/$mode.db?mode=rwc" \
        RESIZE_GRPC_ENDPOINT="http://127.0.0.1:$resize_port" \
        FILTER_GRPC_ENDPOINT="http://127.0.0.1:$filter_port" \
        KAFKA_BROKERS="127.0.0.1:$kafka_port" EXECUTION_MODE="$mode" RUST_LOG=info \
        "$bin/backend-api" >"$work/backend-$mode.log" 2>&1 &
    pids+=("$!")
}
start_backend "$direct_port" direct
start_backend "$queue_port" queue
for port in "$resize_port" "$filter_port"; do
    for _ in $(seq 1 300); do
        "$bin/imageflowctl" health "http://127.0.0.1:$port" 2>/dev/null && break
        sleep 0.1
    done
done
for mode in direct queue; do
    for _ in $(seq 1 300); do
        grep -q "Kafka topics ready" "$work/backend-$mode.log" 2>/dev/null && break
        sleep 0.1
    done
    grep -q "Kafka topics ready" "$work/backend-$mode.log" || die "backend ($mode) did not reach the broker: $work/backend-$mode.log"
done

photo=crates/imageflow-imaging/tests/fixtures/photo-1920x1080.jpg
log "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
for mode in direct queue; do
    port="$direct_port"
    [ "$mode" = queue ] && port="$queue_port"
    log "EXECUTION_MODE=$mode: resize → filter on a 1920x1080 JPEG"
    "$bin/imageflowctl" bench-pipeline --api "http://127.0.0.1:$port" --input "$photo" \
        --steps resize,filter --requests "$requests"
done
