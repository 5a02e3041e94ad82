#!/usr/bin/env bash
# Telemetry overhead on resize-svc (release build, gRPC on loopback, bytes
# input, the 1920x1080 JPEG fixture): the same bench with telemetry off, with
# OTLP export at 10% head sampling and at 100%, against a real OTLP receiver
# (`imageflowctl otlp-sink`). Configurations alternate over ROUNDS rounds so
# drift on a shared machine hits all of them alike.
# Usage: scripts/bench-telemetry.sh [REQUESTS] [ROUNDS]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

requests="${1:-300}"
rounds="${2:-2}"
cargo build --release --locked --quiet -p resize-svc -p imageflowctl
bin="$CARGO_TARGET_DIR/release"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

sink_port=14317
port=19191
"$bin/imageflowctl" otlp-sink --listen "127.0.0.1:$sink_port" >"$work/sink.out" 2>"$work/sink.log" &
sink_pid=$!
pids+=("$sink_pid")

photo=crates/imageflow-imaging/tests/fixtures/photo-1920x1080.jpg
log "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

run_config() {
    local name="$1"
    shift
    env STORAGE_URL="file://$work" RUST_LOG=warn GRPC_LISTEN_ADDR="127.0.0.1:$port" \
        OTEL_BSP_SCHEDULE_DELAY=1000 OTEL_METRIC_EXPORT_INTERVAL=5000 "$@" \
        "$bin/resize-svc" >"$work/resize-$name.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do
        "$bin/imageflowctl" health "http://127.0.0.1:$port" 2>/dev/null && break
        sleep 0.1
    done
    log "telemetry $name"
    "$bin/imageflowctl" bench resize --endpoint "http://127.0.0.1:$port" --input "$photo" --requests "$requests"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

for round in $(seq 1 "$rounds"); do
    log "round $round/$rounds"
    run_config off
    run_config otlp-10pct OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" \
        OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1
    run_config otlp-100pct OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$sink_port" \
        OTEL_TRACES_SAMPLER=always_on
done
kill -INT "$sink_pid"
wait "$sink_pid" 2>/dev/null || true
log "what the OTLP receiver got:"
cat "$work/sink.out" >&2
