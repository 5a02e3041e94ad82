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
stack_init release
start_kafka
start_service resize
start_service filter
direct_port="$(free_port)"
queue_port="$(free_port)"
# info: the readiness line waited for below is logged at info.
start_backend "$direct_port" direct KAFKA_BROKERS="127.0.0.1:$kafka_port" EXECUTION_MODE=direct RUST_LOG=info
start_backend "$queue_port" queue KAFKA_BROKERS="127.0.0.1:$kafka_port" EXECUTION_MODE=queue RUST_LOG=info
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
