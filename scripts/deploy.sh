#!/usr/bin/env bash
# Deploys ImageFlowCanvas to the cluster of the current kubeconfig:
#   1. kubectl apply -k k8s/overlays/ENV   (namespaces, quotas, default deny)
#   2. with --with-monitoring: scripts/monitoring-stack.sh install (kube-prometheus-stack,
#      Loki, Tempo, PostgreSQL and Kafka exporters in `monitoring`, pinned charts,
#      values in k8s/monitoring/)
#   3. helm upgrade --install imageflow charts/imageflow -f k8s/overlays/ENV/values.yaml
#      (+ k8s/monitoring/imageflow.values.yaml with --with-monitoring: alerts,
#      ServiceMonitors, Alertmanager routing on, traces to Tempo)
#   4. with --models DIR: copies DIR's *.onnx (+ *.names) into the models volume
#   5. waits for every Deployment to roll out
#
#   scripts/deploy.sh dev|prod [--with-monitoring] [--models DIR] [--dry-run] [-- EXTRA HELM ARGS]
#
# e.g. scripts/deploy.sh dev --with-monitoring --models ./models -- --set global.imageTag=0.1.0
# Without the Prometheus Operator's CRDs in the cluster (and no --with-monitoring)
# the PrometheusRule and ServiceMonitors are left out, with a note.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

env_name="${1:-}"
case "$env_name" in
    dev|prod) shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "usage: scripts/deploy.sh dev|prod [--with-monitoring] [--models DIR] [--dry-run] [-- EXTRA HELM ARGS]" ;;
esac
models_dir=""
dry_run=false
with_monitoring=false
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --models) models_dir="$2"; shift 2 ;;
        --with-monitoring) with_monitoring=true; shift ;;
        --dry-run) dry_run=true; shift ;;
        --) shift; extra=("$@"); break ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

release=imageflow
namespace="image-processing"
overlay="k8s/overlays/$env_name"
HELM="${HELM:-$(command -v helm || echo "$TOOLS_DIR/bin/helm")}"
KUBECTL="${KUBECTL:-$(command -v kubectl || echo "$TOOLS_DIR/bin/kubectl")}"
[ -x "$HELM" ] || die "helm not found (scripts/deploy-tools.sh installs it)"
[ -x "$KUBECTL" ] || die "kubectl not found (scripts/deploy-tools.sh installs it)"
export HELM KUBECTL

values=(-f "$overlay/values.yaml")
label="$env_name values"
if $with_monitoring; then
    values+=(-f k8s/monitoring/imageflow.values.yaml)
    label+=", k8s/monitoring/imageflow.values.yaml"
fi
# The stack's CRDs are there already, or come with --with-monitoring (not in a dry run).
if { $dry_run || ! $with_monitoring; } \
    && ! "$KUBECTL" get crd prometheusrules.monitoring.coreos.com servicemonitors.monitoring.coreos.com >/dev/null 2>&1; then
    log "note: no Prometheus Operator CRDs in the cluster: the PrometheusRule and ServiceMonitors are left out" \
        "(scripts/deploy.sh $env_name --with-monitoring installs the monitoring stack)"
    values+=(--set monitoring.prometheusRule=false --set monitoring.serviceMonitor=false)
fi

if $dry_run; then
    log "dry run: rendering $overlay and the chart, checking them with the API server"
    "$KUBECTL" apply --dry-run=server -k "$overlay"
    if $with_monitoring; then
        log "note: the monitoring stack's charts are not dry-run here (their CRs need the CRDs they install);" \
            "scripts/validate-deploy.sh renders them offline"
    fi
    "$HELM" upgrade --install "$release" charts/imageflow --namespace "$namespace" \
        "${values[@]}" --dry-run=server "${extra[@]}" >/dev/null
    log "dry run passed"
    exit 0
fi

"$KUBECTL" version >/dev/null || die "no cluster answers (KUBECONFIG=${KUBECONFIG:-~/.kube/config}); scripts/setup-k3s.sh sets one up"

log "applying $overlay (namespaces, quotas, default deny)"
"$KUBECTL" apply -k "$overlay"

if $with_monitoring; then
    scripts/monitoring-stack.sh install
fi

log "helm upgrade --install $release ($label)"
"$HELM" upgrade --install "$release" charts/imageflow --namespace "$namespace" \
    "${values[@]}" --history-max 10 "${extra[@]}"

if [ -n "$models_dir" ]; then
    shopt -s nullglob
    models=("$models_dir"/*.onnx "$models_dir"/*.names)
    [ "${#models[@]}" -gt 0 ] || die "no *.onnx in $models_dir"
    claim="$("$KUBECTL" -n "$namespace" get deploy "$release-ai-detect" \
        -o jsonpath='{.spec.template.spec.volumes[?(@.name=="models")].persistentVolumeClaim.claimName}')"
    [ -n "$claim" ] || die "deploy/$release-ai-detect has no models volume"
    loader="$release-models-loader"
    log "copying ${#models[@]} model files into PVC $claim"
    "$KUBECTL" -n "$namespace" delete pod "$loader" --ignore-not-found --wait >/dev/null
    # A throw-away pod that mounts the claim read-write (restricted profile).
    "$KUBECTL" -n "$namespace" run "$loader" --restart=Never --image=docker.io/library/busybox:1.37.0 \
        --overrides="$(cat <<JSON
{"spec": {
  "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                      "seccompProfile": {"type": "RuntimeDefault"}},
  "containers": [{"name": "loader", "image": "docker.io/library/busybox:1.37.0",
    "command": ["sleep", "600"],
    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}},
    "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                        "capabilities": {"drop": ["ALL"]}},
    "volumeMounts": [{"name": "models", "mountPath": "/models"}]}],
  "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "$claim"}}]}}
JSON
)" >/dev/null
    "$KUBECTL" -n "$namespace" wait --for=condition=Ready "pod/$loader" --timeout=180s >/dev/null
    for f in "${models[@]}"; do
        "$KUBECTL" -n "$namespace" cp "$f" "$loader:/models/$(basename "$f")"
    done
    "$KUBECTL" -n "$namespace" delete pod "$loader" --wait=false >/dev/null
    # ai-detect loads the models at start.
    "$KUBECTL" -n "$namespace" rollout restart "deploy/$release-ai-detect" >/dev/null
fi

log "waiting for the rollouts"
for d in $("$KUBECTL" -n "$namespace" get deploy -l "app.kubernetes.io/instance=$release" -o name); do
    "$KUBECTL" -n "$namespace" rollout status "$d" --timeout=10m
done
log "deployed: scripts/port-forward.sh, then scripts/smoke-test.sh"
