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
stack_init release
sink_port="$(free_port)"
# Its stdout is the summary printed at the end, kept apart from its log.
"$bin/imageflowctl" otlp-sink --listen "127.0.0.1:$sink_port" >"$work/sink.out" 2>"$work/sink.log" &
sink_pid=$!
pids+=("$sink_pid")

photo=crates/imageflow-imaging/tests/fixtures/photo-1920x1080.jpg
log "machine: $(machine_summary)"

run_config() {
    local name="$1"
    shift
    start_service resize OTEL_BSP_SCHEDULE_DELAY=1000 OTEL_METRIC_EXPORT_INTERVAL=5000 "$@"
    wait_grpc "$resize_port" resize
    log "telemetry $name"
    "$bin/imageflowctl" bench resize --endpoint "http://127.0.0.1:$resize_port" --input "$photo" --requests "$requests"
    stack_stop "$resize_pid"
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
