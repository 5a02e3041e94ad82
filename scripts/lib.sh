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
