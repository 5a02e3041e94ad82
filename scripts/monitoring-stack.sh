#!/usr/bin/env bash
# The monitoring stack beside ImageFlowCanvas, from pinned upstream charts with
# the values in k8s/monitoring/, into the `monitoring` namespace:
#   kube-prometheus-stack  Prometheus Operator, Prometheus (15 d), Alertmanager
#                          (the imageflow chart's P1-P4 config), Grafana (Loki and
#                          Tempo data sources), node_exporter, kube-state-metrics
#   loki                   logs, one binary, filesystem on a PVC, 7 days
#   tempo                  traces, one binary, local blocks on a PVC, 7 days
#   postgres-exporter      postgres_exporter for the release's PostgreSQL (pg_up,
#                          connections: the database alerts), DSN from a Secret
#   kafka-exporter         kafka_exporter for the release's Kafka (consumer lag)
#
#   scripts/monitoring-stack.sh install [--dry-run]   helm upgrade --install every release above
#   scripts/monitoring-stack.sh pull                  cache the pinned chart archives
#   scripts/monitoring-stack.sh template OUT_DIR      render them offline from the cache
#
# `scripts/deploy.sh ENV --with-monitoring` runs `install` between the overlay
# and the imageflow release (which then adds k8s/monitoring/imageflow.values.yaml).
# Charts come from $IMAGEFLOW_CACHE/charts/NAME-VERSION.tgz when there (`pull`
# puts them there; a machine without the chart repositories can be given the
# archives by hand), else from the upstream repositories. The exporters start
# once the imageflow release has made their Secret and its database and broker
# (deploy.sh installs it after this), so `install` does not wait for them.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

namespace=monitoring
chart_cache="$IMAGEFLOW_CACHE/charts"
# release  chart  version  wait|nowait  repository
charts=(
    "kube-prometheus-stack kube-prometheus-stack 88.5.3 wait https://prometheus-community.github.io/helm-charts"
    "loki loki 18.11.0 wait https://grafana-community.github.io/helm-charts"
    "tempo tempo 2.2.4 wait https://grafana-community.github.io/helm-charts"
    "postgres-exporter prometheus-postgres-exporter 8.2.0 nowait https://prometheus-community.github.io/helm-charts"
    "kafka-exporter prometheus-kafka-exporter 3.1.1 nowait https://prometheus-community.github.io/helm-charts"
)
HELM="${HELM:-$(command -v helm || echo "$TOOLS_DIR/bin/helm")}"
KUBECTL="${KUBECTL:-$(command -v kubectl || echo "$TOOLS_DIR/bin/kubectl")}"
[ -x "$HELM" ] || die "helm not found (scripts/deploy-tools.sh installs it)"

# Sets chart_ref (and chart_args) for chart NAME VERSION REPO: the cached archive
# when there, else the upstream repository.
chart_source() {
    local name="$1" version="$2" repo="$3"
    if [ -f "$chart_cache/$name-$version.tgz" ]; then
        chart_ref="$chart_cache/$name-$version.tgz"
        chart_args=()
    else
        chart_ref="$name"
        chart_args=(--repo "$repo" --version "$version")
    fi
}

cmd="${1:-}"
case "$cmd" in
    pull)
        mkdir -p "$chart_cache"
        for entry in "${charts[@]}"; do
            read -r _ name version _ repo <<<"$entry"
            [ -f "$chart_cache/$name-$version.tgz" ] && continue
            log "helm pull $name $version"
            "$HELM" pull "$name" --repo "$repo" --version "$version" -d "$chart_cache"
        done
        ;;
    template)
        out_dir="${2:-}"
        [ -n "$out_dir" ] || die "usage: scripts/monitoring-stack.sh template OUT_DIR"
        mkdir -p "$out_dir"
        missing=()
        for entry in "${charts[@]}"; do
            read -r release name version _ <<<"$entry"
            if [ ! -f "$chart_cache/$name-$version.tgz" ]; then
                missing+=("$name-$version.tgz")
                continue
            fi
            "$HELM" template "$release" "$chart_cache/$name-$version.tgz" --namespace "$namespace" \
                --kube-version 1.32.5 -f "k8s/monitoring/$release.values.yaml" >"$out_dir/$release.yaml"
        done
        if [ "${#missing[@]}" -gt 0 ]; then
            log "not in $chart_cache: ${missing[*]} (scripts/monitoring-stack.sh pull)"
            exit 3
        fi
        ;;
    install)
        dry_run=()
        case "${2:-}" in
            --dry-run) dry_run=(--dry-run=server) ;;
            "") ;;
            *) die "usage: scripts/monitoring-stack.sh install [--dry-run]" ;;
        esac
        [ -x "$KUBECTL" ] || die "kubectl not found (scripts/deploy-tools.sh installs it)"
        "$KUBECTL" get namespace "$namespace" >/dev/null \
            || die "no namespace $namespace: kubectl apply -k k8s/overlays/ENV first (scripts/deploy.sh does)"
        for entry in "${charts[@]}"; do
            read -r release name version wait repo <<<"$entry"
            chart_source "$name" "$version" "$repo"
            log "helm upgrade --install $release ($name $version)"
            wait_args=(--wait --timeout 10m)
            [ "$wait" = wait ] || wait_args=()
            # kube-prometheus-stack first: its CRDs are what the others' and the
            # imageflow chart's ServiceMonitors and rules need.
            "$HELM" upgrade --install "$release" "$chart_ref" "${chart_args[@]}" --namespace "$namespace" \
                -f "k8s/monitoring/$release.values.yaml" --history-max 5 "${wait_args[@]}" "${dry_run[@]}" >/dev/null
        done
        if [ "${#dry_run[@]}" -eq 0 ]; then
            log "monitoring stack installed in $namespace: Grafana at" \
                "kubectl -n $namespace port-forward svc/kube-prometheus-stack-grafana 3000:80 (user admin, password:" \
                "kubectl -n $namespace get secret kube-prometheus-stack-grafana -o jsonpath='{.data.admin-password}' | base64 -d)"
        fi
        ;;
    -h|--help|"") sed -n '2,23p' "$0"; [ -n "$cmd" ] ;;
    *) die "unknown command $cmd (see --help)" ;;
esac
