#!/usr/bin/env bash
# Runs ImageFlowCanvas on the embedded defaults: local files under ./data,
# SQLite, no Kafka, ONNX Runtime on CPU, everything on loopback. Starts
# resize-svc, filter-svc, ai-detect-svc and backend-api (which serves the web
# UI at http://127.0.0.1:8000/, built first when missing or stale), sends a real photo
# through the pipeline resize → ai_detection → sharpen via the REST API,
# writes data/pipeline-output.jpg, then keeps serving until Ctrl-C (or exits
# at once with --demo-only).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

demo_only=false
[ "${1:-}" = "--demo-only" ] && demo_only=true

"$REPO_ROOT/scripts/setup.sh" --run-only
if command -v npm >/dev/null; then
    "$REPO_ROOT/scripts/build-ui.sh" --if-stale
else
    log "warning: npm is missing, so the web UI is not built (http://127.0.0.1:8000/ says how); install Node.js 20 and npm"
fi
log "building release binaries (the first build takes about 19 min on 2 cores; cargo shows each crate)"
cargo build --release --locked \
    -p resize-svc -p filter-svc -p ai-detect-svc -p backend-api -p imageflowctl
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
GRPC_LISTEN_ADDR=127.0.0.1:9093 "$bin/ai-detect-svc" >data/logs/ai-detect-svc.log 2>&1 &
pids+=("$!")
HTTP_LISTEN_ADDR=127.0.0.1:8000 DATABASE_URL="sqlite://$REPO_ROOT/data/imageflow.db" \
    RESIZE_GRPC_ENDPOINT=http://127.0.0.1:9091 FILTER_GRPC_ENDPOINT=http://127.0.0.1:9092 \
    AI_DETECTION_GRPC_ENDPOINT=http://127.0.0.1:9093 UI_DIR="$REPO_ROOT/web/dist" \
    "$bin/backend-api" >data/logs/backend-api.log 2>&1 &
pids+=("$!")

for endpoint in http://127.0.0.1:9091 http://127.0.0.1:9092 http://127.0.0.1:9093; do
    for _ in $(seq 1 300); do
        "$bin/imageflowctl" health "$endpoint" 2>/dev/null && break
        sleep 0.1
    done
    "$bin/imageflowctl" health "$endpoint" || die "$endpoint did not become SERVING (see data/logs/)"
done
for _ in $(seq 1 100); do
    curl -sf http://127.0.0.1:8000/readyz >/dev/null && break
    sleep 0.1
done
curl -sf http://127.0.0.1:8000/readyz >/dev/null || die "backend-api is not ready (see data/logs/backend-api.log)"

log "backend-api on http://127.0.0.1:8000 (resize 9091, filter 9092, ai-detect 9093), storage $STORAGE_URL"
"$bin/imageflowctl" run crates/imageflow-imaging/tests/fixtures/photo-1920x1080.jpg \
    -o data/pipeline-output.jpg --api http://127.0.0.1:8000

if "$demo_only"; then
    exit 0
fi
log "serving on http://127.0.0.1:8000 (web UI at /, API: /openapi.json); JSON logs in data/logs/. Ctrl-C to stop."
wait
