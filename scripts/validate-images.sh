#!/usr/bin/env bash
# Runs the system from the images scripts/build-images.sh built, the way the
# chart runs it: `helm template` with the default values plus
# scripts/validate-images.values.yaml (what a user sets for S3 and PostgreSQL
# outside the cluster), then each Deployment's container as a pod in its own
# network namespace, with the manifest's command, args, environment, user,
# read-only root and volumes (scripts/validate_images.py says what it checks).
# Around them, on the host side of a bridge (10.89.77.1): a real S3 server
# (s3s-fs) and this machine's PostgreSQL, each behind a socat relay.
#
#   scripts/validate-images.sh [--tag TAG] [--registry REGISTRY]   (as given to build-images.sh)
#
# Needs root (network namespaces, mounts), like buildah here.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
started=$SECONDS

chart_image_defaults
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag="${2:?}"; shift 2 ;;
        --registry) registry="${2:?}"; shift 2 ;;
        *) die "usage: scripts/validate-images.sh [--tag TAG] [--registry REGISTRY]" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "run as root: pods get network namespaces and read-only mounts"

for name in backend-api resize-svc filter-svc ai-detect-svc imageflowctl; do
    buildah inspect --type image "$registry/$name:$tag" >/dev/null 2>&1 \
        || die "$registry/$name:$tag is not built: run scripts/build-images.sh first"
done
apt_ensure socat=socat
tool_env="$("$REPO_ROOT/scripts/deploy-tools.sh")"
eval "$tool_env"
# The model the ai-detect pod mounts (the chart's models claim), the S3 server.
"$REPO_ROOT/scripts/setup.sh" --s3-server >/dev/null

bridge=ifcbr0
host_ip=10.89.77.1
work="$(mktemp -d)"
relays=()
cleanup() {
    # Each relay is a process group: socat forks a child per connection.
    for pid in "${relays[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
    "$REPO_ROOT/scripts/s3-test-server.sh" stop "$work/s3" >/dev/null 2>&1 || true
    for ctr in $(buildah containers --format '{{.ContainerName}}' 2>/dev/null | grep '^validate-' || true); do
        buildah rm "$ctr" >/dev/null 2>&1 || true
    done
    for ns in $(ip netns list 2>/dev/null | awk '/^ifc-pod/ {print $1}'); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    ip link del "$bridge" 2>/dev/null || true
    if [ -n "${IMAGEFLOW_KEEP_VALIDATION:-}" ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

log "bridge $bridge ($host_ip/24): one network namespace per pod on it"
ip link del "$bridge" 2>/dev/null || true
ip link add "$bridge" type bridge
ip addr add "$host_ip/24" dev "$bridge"
ip link set "$bridge" up

log "S3 (s3s-fs) and PostgreSQL for the pods, at $host_ip"
s3_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
eval "$("$REPO_ROOT/scripts/s3-test-server.sh" start "$work/s3" "$s3_port")"
bucket="$(awk '/^  bucket:/ {print $2}' charts/imageflow/values.yaml)"
mkdir -p "$work/s3/data/$bucket"
eval "$("$REPO_ROOT/scripts/postgres-test-server.sh")"
database="imageflow_validate_images"
psql "$IMAGEFLOW_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $database WITH (FORCE)" \
    -c "CREATE DATABASE $database" >/dev/null
setsid socat "TCP-LISTEN:9000,bind=$host_ip,fork,reuseaddr" "TCP:127.0.0.1:$s3_port" &
relays+=("$!")
setsid socat "TCP-LISTEN:5432,bind=$host_ip,fork,reuseaddr" "TCP:127.0.0.1:5432" &
relays+=("$!")

log "helm template: default values + scripts/validate-images.values.yaml"
"$HELM" template imageflow charts/imageflow --namespace image-processing \
    -f scripts/validate-images.values.yaml \
    --set "global.imageRegistry=$registry" --set "global.imageTag=$tag" >"$work/rendered.yaml"
# The Secrets a user creates for existingSecret (test-only credentials of the
# loopback S3 server and PostgreSQL, never used elsewhere).
pg_url="${IMAGEFLOW_TEST_POSTGRES_URL/127.0.0.1:5432\/test/$host_ip:5432/$database}"
cat >"$work/user-secrets.yaml" <<EOF
apiVersion: v1
kind: Secret
metadata: {name: validate-s3}
stringData:
  AWS_ACCESS_KEY_ID: "$IMAGEFLOW_TEST_S3_ACCESS_KEY"
  AWS_SECRET_ACCESS_KEY: "$IMAGEFLOW_TEST_S3_SECRET_KEY"
---
apiVersion: v1
kind: Secret
metadata: {name: validate-database}
stringData:
  DATABASE_URL: "$pg_url"
EOF

"$DEPLOY_PYTHON" scripts/validate_images.py --work "$work/pods" --models "$REPO_ROOT/models" \
    --fixtures crates/imageflow-imaging/tests/fixtures --s3-data "$work/s3/data" \
    --ctl-image "$registry/imageflowctl:$tag" "$work/rendered.yaml" "$work/user-secrets.yaml"
log "image validation passed in $((SECONDS - started)) s"
