#!/usr/bin/env bash
# Shared settings for the project's scripts: where caches live, so a fresh
# clone on the same machine reuses what an earlier run built.
# shellcheck disable=SC2034  # variables are used by the scripts that source this

IMAGEFLOW_CACHE="${IMAGEFLOW_CACHE:-$HOME/.cache/imageflow}"
TOOLS_DIR="$IMAGEFLOW_CACHE/tools"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$IMAGEFLOW_CACHE/target}"
# Incremental state is kept per checkout path and never pruned, so every CI
# clone added a few GB to the shared cache; a clean clone gains nothing from it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export PATH="$TOOLS_DIR/bin:$HOME/.cargo/bin:$PATH"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# The image names the chart renders by default: <imageRegistry>/<binary>:<appVersion>.
# Sets `registry` and `tag` (scripts/build-images.sh and validate-images.sh
# must agree with the chart and each other).
chart_image_defaults() {
    registry="$(awk '/^  imageRegistry:/ {print $2}' "$REPO_ROOT/charts/imageflow/values.yaml")"
    tag="$(awk -F'"' '/^appVersion:/ {print $2}' "$REPO_ROOT/charts/imageflow/Chart.yaml")"
}

# Installs the Debian packages whose commands are missing (command=package pairs).
apt_ensure() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing Debian ${missing[*]}"
    as_root apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "${missing[@]}" >/dev/null
}
