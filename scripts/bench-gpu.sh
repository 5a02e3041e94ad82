#!/usr/bin/env bash
# The GPU benchmark of ai-detect-svc (benches/gpu.rs): YOLO11n on ONNX
# Runtime's CUDA provider against Python onnxruntime-gpu on the same tensors
# (batches of 1, 8 and 32), the service over gRPC at concurrency 1, 8 and 32,
# the detections against the CPU's, and the fallback to the CPU when no GPU
# answers. Two halves, because the GPU machine has no compiler and no network:
#
#   scripts/bench-gpu.sh pack [DIR]   here: builds the benchmark with
#       --features cuda and packs it, the model and the onnxruntime-gpu wheel's
#       libraries (about 210 MB compressed) into DIR (default .gpu, gitignored) as
#       payload.tar.NN pieces of GPU_PIECE_SIZE (default 55M), for machines
#       that take a limited size per transfer.
#   scripts/bench-gpu.sh run DIR [OUT]   on the GPU machine, from the checkout:
#       unpacks DIR (the pieces and SHA256SUMS gathered there), runs both parts and writes
#       gpu.md (the figures) and gpu.log into OUT (default bench/tmp/gpu).
#
# The GPU machine needs the NVIDIA driver, Python 3.12 with numpy and the CUDA
# 13 libraries that onnxruntime-gpu 1.31 loads (cuBLAS, cuDNN 9, cuFFT,
# cuRAND, the runtime), as pip's nvidia-* packages or on the library path.
set -euo pipefail

ORT_GPU_VERSION=1.31.1
ORT_GPU_WHEEL="onnxruntime_gpu-$ORT_GPU_VERSION-cp312-cp312-manylinux_2_28_x86_64.whl"
ORT_GPU_SHA256=05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7

pack() {
    # shellcheck source=scripts/lib.sh
    source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
    local dir="${1:-$REPO_ROOT/.gpu}"
    "$REPO_ROOT/scripts/setup.sh" --run-only
    log "building the GPU benchmark (release profile, --features cuda)"
    local bench
    bench="$(cd "$REPO_ROOT" && cargo bench --locked -p ai-detect-svc --features cuda --bench gpu --no-run --message-format json-render-diagnostics \
        | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gpu" and m.get("executable"):
        print(m["executable"])')"
    [ -x "$bench" ] || die "cargo did not report the gpu benchmark's executable"

    local wheels="$IMAGEFLOW_CACHE/wheels"
    mkdir -p "$wheels"
    if [ "$(sha256sum "$wheels/$ORT_GPU_WHEEL" 2>/dev/null | cut -d' ' -f1)" != "$ORT_GPU_SHA256" ]; then
        log "downloading $ORT_GPU_WHEEL (255 MB, the Python 3.12 build)"
        python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
            --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
            -d "$wheels" "onnxruntime-gpu==$ORT_GPU_VERSION"
        [ "$(sha256sum "$wheels/$ORT_GPU_WHEEL" | cut -d' ' -f1)" = "$ORT_GPU_SHA256" ] \
            || die "$ORT_GPU_WHEEL: checksum mismatch"
    fi

    local stage
    stage="$(mktemp -d)"
    trap 'rm -rf "$stage"' RETURN
    mkdir -p "$stage/base/site" "$stage/base/models"
    (cd "$stage/base/site" && python3 -m zipfile -e "$wheels/$ORT_GPU_WHEEL" .)
    # The Rust benchmark loads the same providers as Python, from Python's
    # package folder: one copy of the 284 MB CUDA provider serves both.
    ln -s "libonnxruntime.so.$ORT_GPU_VERSION" "$stage/base/site/onnxruntime/capi/libonnxruntime.so"
    # Compressing it takes minutes; the result is kept beside the wheel.
    local cuda_xz="$wheels/libonnxruntime_providers_cuda-$ORT_GPU_VERSION.so.xz"
    if [ ! -s "$cuda_xz" ]; then
        log "compressing the CUDA provider library (284 MB, once)"
        xz -T0 -9 -c "$stage/base/site/onnxruntime/capi/libonnxruntime_providers_cuda.so" >"$cuda_xz.partial"
        mv "$cuda_xz.partial" "$cuda_xz"
    fi
    rm "$stage/base/site/onnxruntime/capi/libonnxruntime_providers_cuda.so"
    ln -s "$cuda_xz" "$stage/cuda.so.xz"
    install -m 0755 "$bench" "$stage/base/gpu-bench"
    strip "$stage/base/gpu-bench"
    install -m 0644 "$REPO_ROOT/models/yolo11n.onnx" "$stage/base/models/"
    local commit
    commit="$(git -C "$REPO_ROOT" rev-parse --short HEAD)"
    git -C "$REPO_ROOT" diff --quiet HEAD -- crates Cargo.lock || commit="$commit with uncommitted changes"
    echo "$commit" >"$stage/base/COMMIT"

    rm -rf "$dir"
    mkdir -p "$dir"
    log "compressing into $dir"
    # xz, not zstd: Python's lzma unpacks it where no xz is installed.
    tar -C "$stage/base" -cf "$stage/base.tar" .
    xz -T0 -9 "$stage/base.tar"
    tar -C "$stage" -chf - base.tar.xz cuda.so.xz | split -b "${GPU_PIECE_SIZE:-55M}" -d - "$dir/payload.tar."
    (cd "$dir" && sha256sum payload.tar.* >SHA256SUMS)
    ls -l "$dir" >&2
}

unxz_to() {
    if command -v xz >/dev/null; then
        xz -d -c "$1" >"$2"
    else
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"), 1 << 20)' "$1" "$2"
    fi
}

run() {
    local dir="${1:?usage: scripts/bench-gpu.sh run DIR [OUT]}"
    local repo out
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    out="${2:-$repo/bench/tmp/gpu}"
    mkdir -p "$out"
    (cd "$dir" && sha256sum -c --quiet SHA256SUMS)
    local root="$dir/unpacked"
    rm -rf "$root"
    mkdir -p "$root"
    cat "$dir"/payload.tar.* | tar -C "$root" -xf -
    unxz_to "$root/base.tar.xz" "$root/base.tar"
    tar -C "$root" -xf "$root/base.tar"
    unxz_to "$root/cuda.so.xz" "$root/site/onnxruntime/capi/libonnxruntime_providers_cuda.so"
    rm "$root/base.tar" "$root/base.tar.xz" "$root/cuda.so.xz"

    # The CUDA 13 libraries the provider links, wherever pip put them.
    local python="${GPU_BENCH_PYTHON:-python3}" libs
    libs="$("$python" - <<'EOF'
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
wanted = ("libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcufft.so.12", "libcurand.so.10", "libcudnn.so.9")
dirs = []
for root in roots:
    for name in wanted:
        for path in glob.glob(os.path.join(root, "nvidia", "**", name), recursive=True):
            if os.path.dirname(path) not in dirs:
                dirs.append(os.path.dirname(path))
print(":".join(dirs))
EOF
)"
    export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export PYTHONPATH="$root/site${PYTHONPATH:+:$PYTHONPATH}"
    export IMAGEFLOW_REPO_ROOT="$repo" MODEL_DIR="$root/models"
    export ORT_DYLIB_PATH="$root/site/onnxruntime/capi/libonnxruntime.so"
    export GPU_BENCH_PYTHON="$python" RUST_LOG="${RUST_LOG:-warn,ai_detect_svc=info}"

    # Both parts run even when one fails: device time is scarce, and the
    # log says what went wrong.
    local rc=0
    {
        echo "# ai-detect-svc on the GPU: YOLO11n, ONNX Runtime $ORT_GPU_VERSION CUDA provider"
        echo
        echo "Run $(date -u +%Y-%m-%dT%H:%MZ) by scripts/bench-gpu.sh, benchmark built at $(cat "$root/COMMIT")."
        echo
        echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
        echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
        echo "- Python $("$python" -c 'import platform; print(platform.python_version())'), numpy $("$python" -c 'import numpy; print(numpy.__version__)'), onnxruntime-gpu $ORT_GPU_VERSION from the PyPI wheel (the Rust service loads the same wheel's libonnxruntime.so)"
        echo "- CUDA libraries from: ${libs:-the system library path}"
        echo
    } >"$out/gpu.md"
    "$root/gpu-bench" >>"$out/gpu.md" 2>"$out/gpu.log" || { rc=$?; echo "**gpu-bench failed (exit $rc); see gpu.log.**" >>"$out/gpu.md"; }
    {
        echo "## The fallback: EXECUTION_PROVIDER=cuda with no GPU visible (CUDA_VISIBLE_DEVICES empty)"
        echo
    } >>"$out/gpu.md"
    CUDA_VISIBLE_DEVICES='' "$root/gpu-bench" fallback >>"$out/gpu.md" 2>>"$out/gpu.log" \
        || { rc=$?; echo "**gpu-bench fallback failed (exit $rc); see gpu.log.**" >>"$out/gpu.md"; }
    cat "$out/gpu.md"
    return "$rc"
}

case "${1:-}" in
    pack) shift; pack "$@" ;;
    run) shift; run "$@" ;;
    *) echo "usage: scripts/bench-gpu.sh pack [DIR] | run DIR [OUT]" >&2; exit 2 ;;
esac
