#!/usr/bin/env bash
# The web UI's tests: Vitest unit tests, then an end-to-end run in headless
# Chromium (Debian's chromium driven by playwright-core) against the real
# stack on loopback: resize-svc, filter-svc, ai-detect-svc (ONNX Runtime,
# YOLO11n) and backend-api serving the built UI with a required API token.
# The browser builds resize → ai_detection → filter on the canvas with real
# pointer drags, runs it on scikit-image's astronaut and checks each node
# completes and the person box is drawn, gets a cycle refused with the API's
# message on the node, saves an API-made pipeline after moving a node and
# gets it back unchanged, uses the fallback/retry/timeout/globalParameters
# editors against the API (a refused fallback shown on its field), drops five
# images on the canvas and sees them run as one execution with five result
# tiles, and visits every page. Screenshots and logs go to
# web/test-results/ (gitignored). Stops everything it started.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

CHROMIUM=/usr/bin/chromium
if [ ! -x "$CHROMIUM" ]; then
    log "installing Debian chromium (the browser the e2e test drives)"
    as_root apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q chromium >/dev/null
fi
# ONNX Runtime and the YOLO11n model in ./models for ai-detect-svc.
"$REPO_ROOT/scripts/setup.sh"
"$REPO_ROOT/scripts/build-ui.sh"
log "building the binaries"
cargo build --locked --quiet -p backend-api -p resize-svc -p filter-svc -p ai-detect-svc
bin="$CARGO_TARGET_DIR/debug"

artifacts="$REPO_ROOT/web/test-results"
rm -rf "$artifacts"
mkdir -p "$artifacts"
work="$(mktemp -d)"
pids=()
stop_all() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap stop_all EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
resize_port="$(free_port)"
filter_port="$(free_port)"
detect_port="$(free_port)"
http_port="$(free_port)"
token="e2e-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"

export STORAGE_URL="file://$work/data"
export RUST_LOG=info
GRPC_LISTEN_ADDR="127.0.0.1:$resize_port" "$bin/resize-svc" >"$artifacts/resize-svc.log" 2>&1 &
pids+=("$!")
GRPC_LISTEN_ADDR="127.0.0.1:$filter_port" "$bin/filter-svc" >"$artifacts/filter-svc.log" 2>&1 &
pids+=("$!")
GRPC_LISTEN_ADDR="127.0.0.1:$detect_port" "$bin/ai-detect-svc" >"$artifacts/ai-detect-svc.log" 2>&1 &
pids+=("$!")
HTTP_LISTEN_ADDR="127.0.0.1:$http_port" DATABASE_URL="sqlite://$work/imageflow.db" \
    RESIZE_GRPC_ENDPOINT="http://127.0.0.1:$resize_port" FILTER_GRPC_ENDPOINT="http://127.0.0.1:$filter_port" \
    AI_DETECTION_GRPC_ENDPOINT="http://127.0.0.1:$detect_port" \
    IMAGEFLOW_API_TOKENS="e2e:$token" JAEGER_UI_URL=http://127.0.0.1:16686 UI_DIR="$REPO_ROOT/web/dist" \
    "$bin/backend-api" >"$artifacts/backend-api.log" 2>&1 &
pids+=("$!")

url="http://127.0.0.1:$http_port"
ready=false
for _ in $(seq 1 600); do
    if curl -sf "$url/readyz" >/dev/null; then ready=true; break; fi
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || die "a process exited at start; see $artifacts/*.log"
    done
    sleep 0.1
done
"$ready" || die "backend-api is not ready after 60 s: $(curl -s "$url/readyz") (logs in $artifacts)"
log "stack up: backend-api $url, resize $resize_port, filter $filter_port, ai-detect $detect_port"

cd "$REPO_ROOT/web"
log "unit tests (Vitest)"
npx --no-install vitest run
log "end-to-end test in headless Chromium"
IMAGEFLOW_URL="$url" IMAGEFLOW_TOKEN="$token" IMAGEFLOW_ARTIFACTS="$artifacts" CHROMIUM="$CHROMIUM" \
    IMAGEFLOW_PHOTO="$REPO_ROOT/crates/imageflow-imaging/tests/fixtures/astronaut.jpg" \
    node --test --test-concurrency=1 --test-reporter=spec e2e/canvas.e2e.mjs
log "web UI tests passed; screenshots and logs in web/test-results/"
