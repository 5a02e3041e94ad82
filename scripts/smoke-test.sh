#!/usr/bin/env bash
# Runs one pipeline (resize → ai_detection → sharpen) through a deployed
# backend-api and prints the execution, its per-step timings and its trace id;
# then looks the trace up in Jaeger. Exits non-zero when the pipeline does not
# complete (or, with --require-trace, when Jaeger does not have the trace).
#
#   scripts/smoke-test.sh [--url http://127.0.0.1:8000] [--token TOKEN] [--image FILE]
#                         [--no-detect] [--require-trace]
#
# Without --url it port-forwards svc/imageflow-backend-api itself; without
# --token it reads the chart's generated `smoke-test` token from the cluster.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

url=""
token="${IMAGEFLOW_API_TOKEN:-}"
image="$REPO_ROOT/crates/imageflow-imaging/tests/fixtures/astronaut.jpg"
detect=true
require_trace=false
release=imageflow
namespace="image-processing"
while [ $# -gt 0 ]; do
    case "$1" in
        --url) url="$2"; shift 2 ;;
        --token) token="$2"; shift 2 ;;
        --image) image="$2"; shift 2 ;;
        --no-detect) detect=false; shift ;;
        --require-trace) require_trace=true; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[ -f "$image" ] || die "no image at $image"
for tool in curl jq; do command -v "$tool" >/dev/null || die "$tool is needed"; done
KUBECTL="${KUBECTL:-$(command -v kubectl || echo "$TOOLS_DIR/bin/kubectl")}"

pids=()
# shellcheck disable=SC2317  # called by the trap
cleanup() { [ "${#pids[@]}" -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
forward() { # namespace service remote-port → prints the local URL
    local port
    port="$(free_port)"
    "$KUBECTL" -n "$1" port-forward "svc/$2" "$port:$3" >/dev/null 2>&1 &
    pids+=("$!")
    for _ in $(seq 1 50); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && { echo "http://127.0.0.1:$port"; return 0; }
        sleep 0.2
    done
    return 1
}

if [ -z "$url" ]; then
    url="$(forward "$namespace" "$release-backend-api" 80)" || die "cannot port-forward svc/$release-backend-api"
fi
if [ -z "$token" ]; then
    tokens="$("$KUBECTL" -n "$namespace" get secret "$release-api-tokens" \
        -o jsonpath='{.data.IMAGEFLOW_API_TOKENS}' 2>/dev/null | base64 -d || true)"
    token="$(tr ',' '\n' <<<"$tokens" | sed -n 's/^smoke-test://p' | head -n 1)"
    [ -n "$token" ] || token="$(tr ',' '\n' <<<"$tokens" | head -n 1 | cut -d: -f2-)"
fi
auth=()
[ -z "$token" ] || auth=(-H "Authorization: Bearer $token")

curl -sf "$url/readyz" >/dev/null || die "$url/readyz is not ready: $(curl -s "$url/readyz")"

# Our own sampled W3C trace context: the backend continues it, so the trace id
# is known before the call and the parent-based sampler keeps it.
trace_id="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
span_id="$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
traceparent="00-$trace_id-$span_id-01"

content_type=image/jpeg
case "$image" in *.png) content_type=image/png ;; *.webp) content_type=image/webp ;; esac
upload="$(curl -sf "${auth[@]}" -H "Content-Type: $content_type" --data-binary "@$image" "$url/v1/files")" \
    || die "upload to $url/v1/files failed"
file_id="$(jq -r .file_id <<<"$upload")"
log "uploaded $(basename "$image") as $file_id ($(jq -r '"\(.width)x\(.height)"' <<<"$upload"))"

steps='[{"stepId":"resize","componentName":"resize","parameters":{"width":800,"height":600}}'
last=resize
if $detect; then
    steps+=',{"stepId":"detect","componentName":"ai_detection","dependencies":["resize"],"parameters":{"draw_boxes":true}}'
    last=detect
fi
steps+=',{"stepId":"sharpen","componentName":"filter","dependencies":["'"$last"'"],"parameters":{"filter_type":"sharpen"}}]'
body="$(jq -n --arg f "$file_id" --argjson steps "$steps" \
    '{pipeline: {pipelineName: "smoke-test", steps: $steps}, inputs: [$f]}')"

started=$(date +%s%N)
execution="$(curl -s "${auth[@]}" -H 'Content-Type: application/json' -H "traceparent: $traceparent" \
    --data "$body" "$url/v1/executions?wait=true")"
elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
status="$(jq -r '.status // empty' <<<"$execution")"
[ -n "$status" ] || die "the execution request failed: $execution"

jq -r '.steps[] | "\(.stepId)\t\(.status)\t\(.processing_time_ms // "-") ms\t\(.output.object_key // "")"' <<<"$execution" \
    | column -t -s $'\t' >&2
jq -r '.steps[] | select(.detections) | .detections[] | "    \(.class_name) \(.confidence * 100 | floor)%"' <<<"$execution" >&2
execution_id="$(jq -r .execution_id <<<"$execution")"
got_trace="$(jq -r '.trace_id // empty' <<<"$execution")"
log "execution $execution_id $status in $(jq -r '.execution_time_ms // "?"' <<<"$execution") ms ($elapsed_ms ms round trip)"
echo "trace_id=${got_trace:-$trace_id}"
[ "$status" = completed ] || die "the pipeline ended $status: $(jq -c '.error' <<<"$execution")"
[ -z "$got_trace" ] || [ "$got_trace" = "$trace_id" ] \
    || log "note: the backend started trace $got_trace instead of continuing $trace_id"
trace_id="${got_trace:-$trace_id}"

# The trace in Jaeger: the gateway decides after its decision wait (10 s).
if "$KUBECTL" -n monitoring get "svc/$release-jaeger" >/dev/null 2>&1 \
    && jaeger="$(forward monitoring "$release-jaeger" 16686)"; then
    for _ in $(seq 1 30); do
        spans="$(curl -s "$jaeger/api/traces/$trace_id" | jq '[.data[]?.spans[]?] | length' 2>/dev/null || echo 0)"
        if [ "${spans:-0}" -gt 0 ]; then
            services="$(curl -s "$jaeger/api/traces/$trace_id" | jq -r '[.data[0].processes[].serviceName] | unique | join(", ")')"
            log "Jaeger has the trace: $spans spans from $services"
            exit 0
        fi
        sleep 2
    done
    msg="Jaeger has no trace $trace_id after 60 s (tail sampling keeps errors, slow traces and a share of the rest)"
    if $require_trace; then die "$msg"; else log "$msg"; fi
elif $require_trace; then
    die "--require-trace: no bundled Jaeger to ask"
fi
