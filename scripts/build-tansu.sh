#!/usr/bin/env bash
# Builds the Kafka-compatible broker `tansu` (the tests' Kafka) into the tools
# cache. It takes about 35 minutes on 2 cores from scratch, so its build folder
# is kept under the cache too: an interrupted build resumes where it stopped.
# A lock makes a second caller wait for the first instead of building twice.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TANSU_VERSION=0.6.0

tansu_ready() {
    "$TOOLS_DIR/bin/tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"
}

mkdir -p "$TOOLS_DIR"
exec 9>"$TOOLS_DIR/.tansu-build.lock"
if ! flock -n 9; then
    log "another tansu build holds $TOOLS_DIR/.tansu-build.lock; waiting for it"
    flock 9
fi
if tansu_ready; then
    exit 0
fi
log "building tansu $TANSU_VERSION (the tests' Kafka broker) into $TOOLS_DIR; about 35 min on 2 cores from scratch"
CARGO_TARGET_DIR="$IMAGEFLOW_CACHE/tansu-target" cargo install tansu \
    --version "$TANSU_VERSION" --locked --features dynostore,libsql --root "$TOOLS_DIR"
tansu_ready || die "tansu was installed but '$TOOLS_DIR/bin/tansu --version' does not report $TANSU_VERSION"
# The build folder only served to resume an interrupted build; it is several GB.
rm -rf "$IMAGEFLOW_CACHE/tansu-target"
log "tansu $TANSU_VERSION ready at $TOOLS_DIR/bin/tansu"
