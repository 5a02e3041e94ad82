#!/usr/bin/env bash
# Prepares a K3s node for ImageFlowCanvas: installs K3s (needs the internet:
# the K3s install script and its release downloads), optionally the NVIDIA
# device plugin and RuntimeClass for GPU nodes, and imports image tarballs
# (`docker save` output) into K3s's containerd so pods start without a registry.
#
#   scripts/setup-k3s.sh [--version v1.32.5+k3s1] [--images DIR] [--gpu] [--skip-install]
#
# On this project's development machine there is no Kubernetes and no route
# to the K3s downloads: run it on the node. Idempotent: an installed K3s of the
# same version is kept, images are re-imported (containerd skips known layers).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

k3s_version=v1.32.5+k3s1
images_dir=""
gpu=false
install=true
while [ $# -gt 0 ]; do
    case "$1" in
        --version) k3s_version="$2"; shift 2 ;;
        --images) images_dir="$2"; shift 2 ;;
        --gpu) gpu=true; shift ;;
        --skip-install) install=false; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

if $install; then
    if command -v k3s >/dev/null && k3s --version | grep -qF "$k3s_version"; then
        log "K3s $k3s_version is installed"
    else
        command -v curl >/dev/null || die "curl is needed to fetch the K3s installer"
        log "installing K3s $k3s_version"
        # The node's kubeconfig is readable by the deploying user; Traefik stays
        # (the chart's optional Ingress uses it).
        curl -sfL https://get.k3s.io \
            | INSTALL_K3S_VERSION="$k3s_version" as_root sh -s - server \
                --write-kubeconfig-mode 0644 \
                --kube-apiserver-arg=enable-admission-plugins=NodeRestriction
    fi
fi

command -v k3s >/dev/null || die "k3s is not installed (run without --skip-install)"
export KUBECONFIG="${KUBECONFIG:-/etc/rancher/k3s/k3s.yaml}"
kubectl=(as_root k3s kubectl)

log "waiting for the node to be Ready"
for _ in $(seq 1 60); do
    if "${kubectl[@]}" get nodes --no-headers 2>/dev/null | awk '{print $2}' | grep -qx Ready; then
        break
    fi
    sleep 2
done
"${kubectl[@]}" wait --for=condition=Ready node --all --timeout=120s >/dev/null

if $gpu; then
    # K3s puts the nvidia runtime into containerd's config when the NVIDIA
    # container toolkit is installed on the node; pods pick it by RuntimeClass.
    command -v nvidia-container-runtime >/dev/null \
        || die "--gpu: install the NVIDIA driver and nvidia-container-toolkit on the node first (docs/deploy.md#gpu-nodes)"
    log "applying the nvidia RuntimeClass and device plugin"
    "${kubectl[@]}" apply -k "$REPO_ROOT/k8s/gpu"
    "${kubectl[@]}" -n kube-system rollout status ds/nvidia-device-plugin --timeout=180s
    "${kubectl[@]}" label node --all nvidia.com/gpu.present=true --overwrite >/dev/null
fi

if [ -n "$images_dir" ]; then
    shopt -s nullglob
    tars=("$images_dir"/*.tar)
    [ "${#tars[@]}" -gt 0 ] || die "no *.tar in $images_dir (docker save -o DIR/NAME.tar IMAGE)"
    for tar in "${tars[@]}"; do
        log "importing $(basename "$tar")"
        as_root k3s ctr images import "$tar" >/dev/null
    done
fi

log "K3s is ready: KUBECONFIG=$KUBECONFIG; next: scripts/deploy.sh dev --with-monitoring (or without the monitoring stack: scripts/deploy.sh dev)"
