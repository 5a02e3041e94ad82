#!/usr/bin/env bash
# Added latency of EXECUTION_MODE=queue over direct mode for one pipeline
# (resize → filter on the 1920x1080 JPEG, release builds, loopback), in two parts:
#   1. the same bench (concurrency 1 and 8) through two backends, both
#      publishing events to a real broker (tansu, in-memory storage), one
#      running what it accepts, one going through pipeline-executions;
#   2. the 8-client load of scripts/bench.sh (synchronous path, then the audit
#      of every execution): direct mode without Kafka, then queue mode on a
#      fresh broker, ROUNDS times in alternating order, with the CPU time of
#      backend-api and tansu per execution.
# Usage: scripts/bench-queue.sh [EXECUTIONS]; LOAD_SECONDS (30, 0 skips part 2),
# ROUNDS (1), LOAD_CLIENTS (8).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

requests="${1:-200}"
load_seconds="${LOAD_SECONDS:-30}"
rounds="${ROUNDS:-1}"
load_clients="${LOAD_CLIENTS:-8}"
"$REPO_ROOT/scripts/build-tansu.sh"
cargo build --release --locked --quiet -p resize-svc -p filter-svc -p backend-api -p imageflowctl
stack_init release
start_kafka
kafka_pid="$spawned_pid"
start_service resize
start_service filter
direct_port="$(free_port)"
queue_port="$(free_port)"
# info: the readiness line waited for below is logged at info.
start_backend "$direct_port" direct KAFKA_BROKERS="127.0.0.1:$kafka_port" EXECUTION_MODE=direct RUST_LOG=info
direct_pid="$backend_pid"
start_backend "$queue_port" queue KAFKA_BROKERS="127.0.0.1:$kafka_port" EXECUTION_MODE=queue RUST_LOG=info
queue_pid="$backend_pid"
wait_grpc "$resize_port" resize
wait_grpc "$filter_port" filter
for mode in direct queue; do
    if ! wait_log "backend-$mode" "Kafka topics ready"; then
        tail -n 20 "$work/backend-$mode.log" >&2
        die "backend ($mode) did not reach the broker"
    fi
done

photo=crates/imageflow-imaging/tests/fixtures/photo-1920x1080.jpg
log "machine: $(machine_summary)"
for mode in direct queue; do
    port="$direct_port"
    [ "$mode" = queue ] && port="$queue_port"
    log "EXECUTION_MODE=$mode: resize → filter on a 1920x1080 JPEG"
    "$bin/imageflowctl" bench-pipeline --api "http://127.0.0.1:$port" --input "$photo" \
        --steps resize,filter --requests "$requests"
done
[ "$load_seconds" -gt 0 ] || exit 0
stack_stop "$direct_pid"
stack_stop "$queue_pid"
stack_stop "$kafka_pid"

# utime + stime of PID in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk_tck="$(getconf CLK_TCK)"

# load_run MODE ROUND: one load in MODE against a backend of its own (queue
# mode: on a fresh broker, as scripts/bench.sh runs it).
load_run() {
    local mode="$1" round="$2" port kafka="" pid b0 k0=0 json
    port="$(free_port)"
    if [ "$mode" = queue ]; then
        start_kafka
        kafka="$spawned_pid"
        start_backend "$port" "load-queue-$round" EXECUTION_MODE=queue \
            KAFKA_BROKERS="127.0.0.1:$kafka_port" RUST_LOG=info
        pid="$backend_pid"
        if ! wait_log "backend-load-queue-$round" "Kafka topics ready"; then
            tail -n 20 "$work/backend-load-queue-$round.log" >&2
            die "backend (queue) did not reach the broker"
        fi
    else
        start_backend "$port" "load-direct-$round" EXECUTION_MODE=direct
        pid="$backend_pid"
        wait_http "$port" "backend-load-direct-$round"
    fi
    # Warm-up (connections, the consumer group's join), not counted.
    "$bin/imageflowctl" load --api "http://127.0.0.1:$port" --input "$photo" --steps resize,filter \
        --clients "$load_clients" --seconds 3 --label warm-up >/dev/null
    b0="$(cpu_ticks "$pid")"
    [ -n "$kafka" ] && k0="$(cpu_ticks "$kafka")"
    json="$work/load-$mode-$round.json"
    log "load round $round: $load_clients clients x ${load_seconds}s, resize → filter, $mode mode"
    "$bin/imageflowctl" load --api "http://127.0.0.1:$port" --input "$photo" --steps resize,filter \
        --clients "$load_clients" --seconds "$load_seconds" --label "$mode" --json "$json"
    python3 - "$json" "$(($(cpu_ticks "$pid") - b0))" \
        "$([ -n "$kafka" ] && echo $(($(cpu_ticks "$kafka") - k0)) || echo 0)" "$clk_tck" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
backend, broker, tck = (int(v) for v in sys.argv[2:5])
n = max(run["sent"], 1)
print(f"CPU per execution: backend-api {backend * 1000 / tck / n:.2f} ms, tansu {broker * 1000 / tck / n:.2f} ms")
PY
    stack_stop "$pid"
    [ -n "$kafka" ] && stack_stop "$kafka"
    return 0
}

for round in $(seq 1 "$rounds"); do
    if [ $((round % 2)) -eq 1 ]; then order=(direct queue); else order=(queue direct); fi
    for mode in "${order[@]}"; do load_run "$mode" "$round"; done
done
