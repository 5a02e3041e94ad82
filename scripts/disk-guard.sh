#!/usr/bin/env bash
# Keeps the build caches from filling the disk. The caches under
# $IMAGEFLOW_CACHE only grow: every checkout path (a CI clone, a session's
# working tree) gets its own set of workspace artefacts in the shared target
# folder, and a full run needs room for debug, release and fuzz builds. A CI
# run once died in 46 s with "No space left on device" on a warm cache.
#
# Usage: scripts/disk-guard.sh [GiB wanted free]   (default 25)
# Prints what the caches hold; when less than the wanted space is free, drops
# caches in order of what is cheapest to rebuild, stopping as soon as enough
# is free; fails with a clear message when even that is not enough.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

want_gib="${1:-${IMAGEFLOW_MIN_FREE_GIB:-25}}"
# Below this even a warm run is likely to die mid-build (a cold one needs
# about 15 GiB; the README's "Disk" note has the measured sizes).
need_gib="${IMAGEFLOW_HARD_MIN_FREE_GIB:-8}"

mkdir -p "$IMAGEFLOW_CACHE"
free_gib() { df -P -k "$IMAGEFLOW_CACHE" | awk 'NR == 2 { print int($4 / 1048576) }'; }
size_of() { du -sh "$1" 2>/dev/null | cut -f1; }

report() {
    local line dir
    line="disk: $(free_gib) GiB free where the caches live;"
    for dir in target tansu-target tools-target fuzz-target; do
        [ -d "$IMAGEFLOW_CACHE/$dir" ] && line+=" $dir $(size_of "$IMAGEFLOW_CACHE/$dir")"
    done
    # scripts/build-images.sh: buildah's images and layers, and its cache mounts.
    [ -d "$BUILDAH_STORAGE" ] && line+=" container-images $(size_of "$BUILDAH_STORAGE")"
    [ -d "$BUILDAH_CACHE" ] && line+=" image-build-cache $(size_of "$BUILDAH_CACHE")"
    log "$line"
}

BUILDAH_STORAGE=/var/lib/containers/storage
BUILDAH_CACHE="${TMPDIR:-/var/tmp}/buildah-cache"

# Image layers no tag refers to (older builds' steps); the cargo cache mount
# stays, so the next image build is still incremental.
prune_images() {
    [ "$(free_gib)" -ge "$want_gib" ] && return 0
    command -v buildah >/dev/null || return 1
    log "only $(free_gib) GiB free (want $want_gib): removing untagged image layers (buildah rmi --prune)"
    buildah rmi --prune >/dev/null 2>&1 || true
    [ "$(free_gib)" -ge "$want_gib" ]
}

# Drops one cache when space is still short; returns 0 once enough is free.
drop() {
    local what="$1" why="$2"
    [ "$(free_gib)" -ge "$want_gib" ] && return 0
    [ -e "$what" ] || return 1
    log "only $(free_gib) GiB free (want $want_gib): removing $what ($(size_of "$what"); $why)"
    rm -rf "$what"
    [ "$(free_gib)" -ge "$want_gib" ]
}

report
if [ "$(free_gib)" -lt "$want_gib" ]; then
    # Build leftovers of installed tools: the binaries are in $TOOLS_DIR.
    drop "$IMAGEFLOW_CACHE/tools-target" "build leftovers of installed tools" ||
        { "$TOOLS_DIR/bin/tansu" --version >/dev/null 2>&1 &&
            drop "$IMAGEFLOW_CACHE/tansu-target" "tansu is installed; this is its build folder"; } ||
        drop "$IMAGEFLOW_CACHE/fuzz-target" "instrumented fuzz builds; about 3 min to rebuild" ||
        prune_images ||
        drop "$CARGO_TARGET_DIR/debug/incremental" "incremental state; rebuilt as needed" ||
        drop "$CARGO_TARGET_DIR/release" "release builds for the benchmarks and the main command" ||
        drop "$BUILDAH_CACHE" "the image builds' cargo cache; the next image build is cold" ||
        drop "$CARGO_TARGET_DIR" "the whole build cache; the next build is cold" ||
        true
    report
fi
free_now="$(free_gib)"
if [ "$free_now" -lt "$need_gib" ]; then
    die "only $free_now GiB free on the disk holding $IMAGEFLOW_CACHE after dropping the project's caches; a full test run needs about $need_gib GiB. Free space elsewhere (df -h; du -sh /tmp/* ~/.cache/*) and run again."
fi
