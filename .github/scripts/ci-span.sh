#!/usr/bin/env bash
# Times CI steps and exports them as one OpenTelemetry trace (OTLP/HTTP JSON):
# a root span for the job, a child span per step, with the step's exit status.
#
#   ci-span.sh init                  # once per job: trace id and job start → $GITHUB_ENV
#   ci-span.sh step NAME -- CMD...   # runs CMD, records a span, exits with CMD's status
#   ci-span.sh export                # posts the spans when OTEL_EXPORTER_OTLP_ENDPOINT is set
#
# Endpoint: OTEL_EXPORTER_OTLP_ENDPOINT (the collector's OTLP/HTTP base URL,
# e.g. https://otel.example.com:4318; /v1/traces is appended) and optional
# OTEL_EXPORTER_OTLP_HEADERS (k=v,k=v). Outside GitHub Actions, CI_SPAN_ENV
# and CI_SPANS_FILE name the files that carry state between calls.
set -euo pipefail

env_file="${GITHUB_ENV:-${CI_SPAN_ENV:-/tmp/ci-span.env}}"
spans_file="${CI_SPANS_FILE:-${RUNNER_TEMP:-/tmp}/ci-spans.jsonl}"
now_ns() { date +%s%N; }
hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
# In Actions the variables init wrote are already in the environment; locally
# they are read back from the env file (only our own keys).
load() {
    local key value
    for key in CI_TRACE_ID CI_ROOT_SPAN_ID CI_JOB_START_NS CI_SPANS_FILE; do
        [ -z "${!key:-}" ] || continue
        value="$(grep "^$key=" "$env_file" 2>/dev/null | tail -n 1 | cut -d= -f2-)" || true
        [ -z "$value" ] || export "$key=$value"
    done
}

case "${1:-}" in
    init)
        : >"$spans_file"
        {
            echo "CI_TRACE_ID=$(hex 16)"
            echo "CI_ROOT_SPAN_ID=$(hex 8)"
            echo "CI_JOB_START_NS=$(now_ns)"
            echo "CI_SPANS_FILE=$spans_file"
        } >>"$env_file"
        ;;
    step)
        name="${2:?step NAME -- CMD}"
        [ "${3:-}" = "--" ] || { echo "usage: ci-span.sh step NAME -- CMD..." >&2; exit 2; }
        shift 3
        load
        start="$(now_ns)"
        rc=0
        "$@" || rc=$?
        end="$(now_ns)"
        jq -cn --arg name "$name" --arg trace "${CI_TRACE_ID:?run ci-span.sh init first}" \
            --arg parent "$CI_ROOT_SPAN_ID" --arg span "$(hex 8)" --arg t0 "$start" --arg t1 "$end" \
            --argjson rc "$rc" --arg cmd "$*" '{
              traceId: $trace, spanId: $span, parentSpanId: $parent, name: $name, kind: 1,
              startTimeUnixNano: $t0, endTimeUnixNano: $t1,
              status: (if $rc == 0 then {code: 1} else {code: 2, message: "exit status \($rc)"} end),
              attributes: [{key: "ci.step.command", value: {stringValue: $cmd}},
                           {key: "ci.step.exit_code", value: {intValue: ($rc | tostring)}}]}' \
            >>"${CI_SPANS_FILE:-$spans_file}"
        echo "ci-span: $name took $(( (end - start) / 1000000 )) ms (exit $rc)" >&2
        exit "$rc"
        ;;
    export)
        load
        endpoint="${OTEL_EXPORTER_OTLP_ENDPOINT:-}"
        if [ -z "$endpoint" ]; then
            echo "ci-span: OTEL_EXPORTER_OTLP_ENDPOINT is not set; spans not exported" >&2
            exit 0
        fi
        file="${CI_SPANS_FILE:-$spans_file}"
        [ -s "$file" ] || { echo "ci-span: no spans recorded" >&2; exit 0; }
        failed="$(jq -s 'map(select(.status.code == 2)) | length' "$file")"
        payload="$(jq -s --arg trace "$CI_TRACE_ID" --arg span "$CI_ROOT_SPAN_ID" \
            --arg t0 "$CI_JOB_START_NS" --arg t1 "$(now_ns)" --argjson failed "$failed" \
            --arg job "${GITHUB_JOB:-local}" --arg repo "${GITHUB_REPOSITORY:-}" \
            --arg run "${GITHUB_RUN_ID:-}" --arg sha "${GITHUB_SHA:-}" --arg ref "${GITHUB_REF_NAME:-}" '{
              resourceSpans: [{
                resource: {attributes: [
                  {key: "service.name", value: {stringValue: "imageflow-ci"}},
                  {key: "service.namespace", value: {stringValue: "imageflow"}},
                  {key: "deployment.environment", value: {stringValue: "ci"}},
                  {key: "vcs.repository.name", value: {stringValue: $repo}},
                  {key: "vcs.ref.head.name", value: {stringValue: $ref}},
                  {key: "vcs.ref.head.revision", value: {stringValue: $sha}},
                  {key: "cicd.pipeline.run.id", value: {stringValue: $run}}]},
                scopeSpans: [{
                  scope: {name: "imageflow-ci-span"},
                  spans: ([{traceId: $trace, spanId: $span, name: "job \($job)", kind: 1,
                            startTimeUnixNano: $t0, endTimeUnixNano: $t1,
                            status: (if $failed == 0 then {code: 1} else {code: 2, message: "\($failed) steps failed"} end),
                            attributes: [{key: "cicd.pipeline.task.name", value: {stringValue: $job}}]}] + .)}]}]}' "$file")"
        headers=(-H "Content-Type: application/json")
        IFS=',' read -r -a extra <<<"${OTEL_EXPORTER_OTLP_HEADERS:-}"
        for h in "${extra[@]}"; do
            [ -n "$h" ] && headers+=(-H "${h%%=*}: ${h#*=}")
        done
        curl -sf --retry 3 --max-time 20 "${headers[@]}" --data "$payload" "${endpoint%/}/v1/traces" >/dev/null \
            || { echo "ci-span: export to $endpoint failed" >&2; exit 0; }
        echo "ci-span: exported trace $CI_TRACE_ID ($(jq -s length "$file") steps) to $endpoint" >&2
        ;;
    *)
        sed -n '2,13p' "$0" >&2
        exit 2
        ;;
esac
