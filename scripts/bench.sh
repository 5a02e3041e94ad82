#!/usr/bin/env bash
# The whole benchmark in one run on loopback (issue 8): release builds of the
# services, backend-api and imageflowctl; each service over gRPC (bytes in,
# the 1920x1080 JPEG fixture) and the pipelines resize → filter and
# resize → detect → filter through backend-api's synchronous path, at
# concurrency 1 and 8, with CPU seconds per request and idle/peak RSS of each
# process; the in-process anchors (pyvips, OpenCV, bare onnxruntime) in the
# same run; a bounded load test against the backend in direct mode and, when
# the tansu broker is installed, queue mode. Writes bench/results/latest.{json,md,png}
# and prints the Markdown. Not part of the test suite: it takes minutes.
#
#   scripts/bench.sh
# Settings (environment): BENCH_REQUESTS (per level, resize/filter/pipeline,
# default 100), BENCH_DETECT_REQUESTS (per level for anything with detection,
# default 48), LOAD_CLIENTS (8), LOAD_SECONDS (30), BENCH_OUT (bench/results).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

requests="${BENCH_REQUESTS:-100}"
detect_requests="${BENCH_DETECT_REQUESTS:-48}"
load_clients="${LOAD_CLIENTS:-8}"
load_seconds="${LOAD_SECONDS:-30}"
out_dir="${BENCH_OUT:-$REPO_ROOT/bench/results}"
[ "$load_seconds" -le 600 ] || die "LOAD_SECONDS is bounded at 600"

# The anchors' Python side: pinned, in its own venv so the project's venv
# (scripts/setup.sh) stays as the tests expect; a second run only checks.
deb_ensure --no-install-recommends libvips42 libvips-dev
BENCH_VENV="$IMAGEFLOW_CACHE/bench-venv"
py_packages=(onnxruntime==1.31.1 numpy==2.4.6 opencv-python-headless==5.0.0.93 pyvips==3.2.0 matplotlib==3.11.2)
if [ "$(cat "$BENCH_VENV/.imageflow-packages" 2>/dev/null)" != "${py_packages[*]}" ]; then
    log "installing ${py_packages[*]} into $BENCH_VENV"
    [ -x "$BENCH_VENV/bin/python" ] || python3 -m venv "$BENCH_VENV"
    "$BENCH_VENV/bin/python" -m pip install -q --disable-pip-version-check "${py_packages[@]}"
    printf '%s' "${py_packages[*]}" >"$BENCH_VENV/.imageflow-packages"
fi
python="$BENCH_VENV/bin/python"

# The model and ONNX Runtime library come from scripts/setup.sh.
if [ ! -f models/yolo11n.onnx ] || [ ! -f models/lib/libonnxruntime.so ]; then
    "$REPO_ROOT/scripts/setup.sh"
fi

log "building release binaries"
cargo build --release --locked --quiet -p resize-svc -p filter-svc -p ai-detect-svc -p backend-api -p imageflowctl
stack_init release
ctl="$bin/imageflowctl"

# Taken after the build, so they describe the machine the measurements met.
loadavg_start="$(cut -d' ' -f1-3 /proc/loadavg)"
started_at="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
# What else was using the CPU, so a reader can judge the noise (ps's %CPU is
# over each process's lifetime: a rough picture, counted by name).
busy_at_start="$(ps -eo pcpu=,comm= | awk '$1 >= 20 {n[$2]++} END {for (c in n) printf "%s%s x%d", (s++ ? ", " : ""), c, n[c]}')"
mkdir -p "$work/results"

env_file="$work/results/run.env"
record() { printf '%s=%s\n' "$1" "$2" >>"$env_file"; }
record started_at "$started_at"
record loadavg_start "$loadavg_start"
record busy_at_start "$busy_at_start"
record git_commit "$(git rev-parse --short HEAD)"
record git_dirty "$([ -n "$(git status --porcelain --untracked-files=no)" ] && echo yes || echo no)"
record rustc "$(rustc --version)"
record resize_svc_version "$("$bin/resize-svc" --version)"
record requests_per_level "$requests"
record detect_requests_per_level "$detect_requests"

# Resident memory after start-up and a health check, before any load; the
# second's pause lets lazy start-up work (model load, pools) finish.
idle_rss() {
    sleep 1
    record "idle_rss_kb.$1" "$(awk '/^VmRSS:/ {print $2}' "/proc/$2/status")"
}

start_service resize
start_service filter
start_service detect
wait_grpc "$resize_port" resize
idle_rss resize-svc "$resize_pid"
wait_grpc "$filter_port" filter
idle_rss filter-svc "$filter_pid"
wait_grpc "$detect_port" detect
idle_rss ai-detect-svc "$detect_pid"

photo=crates/imageflow-imaging/tests/fixtures/photo-1920x1080.jpg
clk_tck="$(getconf CLK_TCK)"
log "machine: $(machine_summary), load average $loadavg_start"

log "resize-svc: 1920x1080 JPEG -> 800x600 keep-aspect, GOOD"
"$ctl" bench resize --endpoint "http://127.0.0.1:$resize_port" --input "$photo" --requests "$requests" \
    --watch "resize-svc=$resize_pid" --clk-tck "$clk_tck" --json "$work/results/grpc-resize.json"
log "filter-svc: gaussian sigma 2 on the 1920x1080 JPEG"
"$ctl" bench filter --endpoint "http://127.0.0.1:$filter_port" --input "$photo" --requests "$requests" \
    --filter gaussian --intensity 2 \
    --watch "filter-svc=$filter_pid" --clk-tck "$clk_tck" --json "$work/results/grpc-filter.json"
log "ai-detect-svc: YOLO11n on the 1920x1080 JPEG"
"$ctl" bench detect --endpoint "http://127.0.0.1:$detect_port" --input "$photo" --requests "$detect_requests" \
    --watch "ai-detect-svc=$detect_pid" --clk-tck "$clk_tck" --json "$work/results/grpc-detect.json"

# Backend-api, direct mode: runs what it accepts itself (no Kafka).
http_port="$(free_port)"
start_backend "$http_port" direct EXECUTION_MODE=direct
direct_pid="$backend_pid"
wait_http "$http_port" backend-direct
idle_rss backend-api "$direct_pid"
all=(--watch "backend-api=$direct_pid" --watch "resize-svc=$resize_pid" --watch "filter-svc=$filter_pid"
    --watch "ai-detect-svc=$detect_pid" --clk-tck "$clk_tck")
log "pipeline resize → filter through the backend"
"$ctl" bench-pipeline --api "http://127.0.0.1:$http_port" --input "$photo" --steps resize,filter \
    --requests "$requests" "${all[@]}" --json "$work/results/pipeline-resize-filter.json"
log "pipeline resize → detect → filter through the backend"
"$ctl" bench-pipeline --api "http://127.0.0.1:$http_port" --input "$photo" --steps resize,detect,filter \
    --requests "$detect_requests" "${all[@]}" --json "$work/results/pipeline-resize-detect-filter.json"

log "in-process anchors (pyvips, OpenCV, onnxruntime)"
"$ctl" tensor "$photo" --output "$work/tensor.f32"
"$python" scripts/bench_anchors.py "$photo" models/yolo11n.onnx "$work/tensor.f32" \
    "$work/results/anchors.json" "$requests" "$detect_requests"

log "load: $load_clients clients x ${load_seconds}s, resize → filter, direct mode"
"$ctl" load --api "http://127.0.0.1:$http_port" --input "$photo" --steps resize,filter \
    --clients "$load_clients" --seconds "$load_seconds" --label direct \
    --watch "backend-api=$direct_pid" --json "$work/results/load-direct.json"
kill "$direct_pid" 2>/dev/null || true

# Queue mode needs a Kafka broker: tansu, as scripts/bench-queue.sh starts it
# (scripts/build-tansu.sh builds it; ~30 min, so it is not built here).
if [ -x "$TOOLS_DIR/bin/tansu" ]; then
    start_kafka
    queue_port="$(free_port)"
    # info: the readiness line below is logged at info.
    start_backend "$queue_port" queue EXECUTION_MODE=queue KAFKA_BROKERS="127.0.0.1:$kafka_port" RUST_LOG=info
    queue_pid="$backend_pid"
    if wait_log backend-queue "Kafka topics ready"; then
        log "load: $load_clients clients x ${load_seconds}s, resize → filter, queue mode"
        "$ctl" load --api "http://127.0.0.1:$queue_port" --input "$photo" --steps resize,filter \
            --clients "$load_clients" --seconds "$load_seconds" --label queue \
            --watch "backend-api=$queue_pid" --json "$work/results/load-queue.json"
    else
        record queue_skipped "backend-api did not reach the tansu broker"
        tail -n 20 "$work/backend-queue.log" >&2
    fi
else
    record queue_skipped "no tansu broker at \$HOME/.cache/imageflow/tools/bin (scripts/build-tansu.sh)"
fi

record loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
"$python" scripts/bench_report.py "$work/results" "$out_dir"
log "results in $out_dir/latest.{json,md,png}"
