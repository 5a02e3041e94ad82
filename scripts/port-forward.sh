#!/usr/bin/env bash
# Forwards the deployed backend-api (API, web UI, /metrics) and, when bundled,
# the Jaeger UI to loopback until Ctrl-C.
#
#   scripts/port-forward.sh [--api-port 8000] [--jaeger-port 16686]
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

api_port=8000
jaeger_port=16686
release=imageflow
namespace="image-processing"
monitoring=monitoring
while [ $# -gt 0 ]; do
    case "$1" in
        --api-port) api_port="$2"; shift 2 ;;
        --jaeger-port) jaeger_port="$2"; shift 2 ;;
        -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
KUBECTL="${KUBECTL:-$(command -v kubectl || echo "$TOOLS_DIR/bin/kubectl")}"

pids=()
# shellcheck disable=SC2317  # called by the trap
stop() { [ "${#pids[@]}" -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true; }
trap stop EXIT INT TERM

"$KUBECTL" -n "$namespace" port-forward "svc/$release-backend-api" "$api_port:80" >/dev/null &
pids+=("$!")
log "backend-api: http://127.0.0.1:$api_port (API /v1, UI /, /openapi.json)"
if "$KUBECTL" -n "$monitoring" get "svc/$release-jaeger" >/dev/null 2>&1; then
    "$KUBECTL" -n "$monitoring" port-forward "svc/$release-jaeger" "$jaeger_port:16686" >/dev/null &
    pids+=("$!")
    log "Jaeger UI: http://127.0.0.1:$jaeger_port"
fi
log "Ctrl-C to stop"
wait -n "${pids[@]}"
die "a port-forward ended (is the pod running?)"
