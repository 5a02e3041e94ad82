#!/usr/bin/env bash
# The detection benchmark: ai-detect-svc over real gRPC (ONNX Runtime on the
# CPU, YOLO11n) at concurrency 1 and 8 on 640x640 and 1920x1080 photos, with
# its pre/post-processing and inference times, next to bare Python
# onnxruntime on the same model and tensor in the same run.
# DETECT_BENCH_REQUESTS sets the requests per case (default 48).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/setup.sh"
log "building and running the detection benchmark (release profile)"
cargo bench -p ai-detect-svc --bench detect --locked
