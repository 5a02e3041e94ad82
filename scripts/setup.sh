#!/usr/bin/env bash
# Installs what local runs and the tests need. Idempotent: a second run only
# checks. Everything comes from Debian's packages or crates.io.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

S3S_FS_VERSION=0.14.1

# cmake + nasm build libjpeg-turbo (SIMD) for the turbojpeg crate; shellcheck
# lints the scripts. protoc comes from the protoc-bin-vendored crate.
apt_packages=(cmake nasm pkg-config shellcheck)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "${missing[@]}" >/dev/null
fi

mkdir -p "$TOOLS_DIR"
if ! "$TOOLS_DIR/bin/s3s-fs" --version 2>/dev/null | grep -q "$S3S_FS_VERSION"; then
    log "building s3s-fs $S3S_FS_VERSION (the S3 server the tests use) into $TOOLS_DIR"
    CARGO_TARGET_DIR="$IMAGEFLOW_CACHE/tools-target" cargo install s3s-fs \
        --version "$S3S_FS_VERSION" --locked --features binary --root "$TOOLS_DIR" --quiet
fi
log "setup complete (tools in $TOOLS_DIR, build cache in $CARGO_TARGET_DIR)"
