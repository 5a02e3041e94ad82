#!/usr/bin/env bash
# Runs ImageFlowCanvas on the embedded defaults: local files under ./data, no
# Kafka, everything on loopback. Starts resize-svc and filter-svc, sends a real
# photo through resize -> gaussian -> sharpen, writes data/demo-output.jpg,
# then keeps serving until Ctrl-C (or exits at once with --demo-only).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

demo_only=false
[ "${1:-}" = "--demo-only" ] && demo_only=true

"$REPO_ROOT/scripts/setup.sh"
log "building release binaries (first build takes a few minutes)"
cargo build --release --locked --quiet -p resize-svc -p filter-svc -p imageflowctl
bin="$CARGO_TARGET_DIR/release"

mkdir -p data/logs
export STORAGE_URL="file://$REPO_ROOT/data"
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop_all EXIT

GRPC_LISTEN_ADDR=127.0.0.1:9091 "$bin/resize-svc" >data/logs/resize-svc.log 2>&1 &
pids+=("$!")
GRPC_LISTEN_ADDR=127.0.0.1:9092 "$bin/filter-svc" >data/logs/filter-svc.log 2>&1 &
pids+=("$!")

for endpoint in http://127.0.0.1:9091 http://127.0.0.1:9092; do
    for _ in $(seq 1 100); do
        "$bin/imageflowctl" health "$endpoint" 2>/dev/null && break
        sleep 0.1
    done
    "$bin/imageflowctl" health "$endpoint" || die "$endpoint did not become SERVING (see data/logs/)"
done

log "resize-svc on 127.0.0.1:9091, filter-svc on 127.0.0.1:9092, storage $STORAGE_URL"
"$bin/imageflowctl" process crates/imageflow-imaging/tests/fixtures/photo-1920x1080.jpg \
    -o data/demo-output.jpg --resize 800x600 --filter gaussian:1.5 --filter sharpen:1 \
    --resize-endpoint http://127.0.0.1:9091 --filter-endpoint http://127.0.0.1:9092

if "$demo_only"; then
    exit 0
fi
log "serving; JSON logs in data/logs/. Ctrl-C to stop."
wait
