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

# Installs the Debian packages that are not installed yet. Leading arguments
# that start with "-" go to apt-get install (e.g. --no-install-recommends).
deb_ensure() {
    local opts=() missing=() pkg
    while [ "$#" -gt 0 ] && [ "${1#-}" != "$1" ]; do
        opts+=("$1")
        shift
    done
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "${opts[@]}" "${missing[@]}" >/dev/null
}

# CPU count and model, for the first line of a benchmark's output.
machine_summary() {
    printf '%s CPUs, %s' "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
}

# Peak resident memory of a running process, e.g. "41236 kB".
peak_rss() {
    grep VmHWM "/proc/$1/status" | awk '{print $2 " " $3}'
}

# --- A local stack on loopback: the services, backend-api and a Kafka broker
# on free ports, for the bench and validation scripts. `stack_init PROFILE`
# first; every process started here is stopped, and $work removed, on exit.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# stack_init release|debug: sets $bin (that profile's binaries), $work (a temp
# folder; STORAGE_URL points into it) and $pids, and registers the cleanup.
stack_init() {
    bin="$CARGO_TARGET_DIR/$1"
    work="$(mktemp -d)"
    pids=()
    trap stack_cleanup EXIT
    export STORAGE_URL="file://$work/data" RUST_LOG=warn
}

stack_cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}

# stack_spawn NAME COMMAND...: COMMAND in the background, its output in
# $work/NAME.log; its pid in $spawned_pid (and $pids, for the cleanup).
stack_spawn() {
    local name="$1"
    shift
    "$@" >"$work/$name.log" 2>&1 &
    spawned_pid="$!"
    pids+=("$spawned_pid")
}

# stack_stop PID: stops one process started with stack_spawn before the script ends.
stack_stop() {
    local pid kept=()
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    for pid in "${pids[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
    pids=("${kept[@]}")
}

# start_service resize|filter|detect [VAR=value...]: that service on a free
# port with the extra environment, output in $work/NAME.log; sets NAME_port
# and NAME_pid.
start_service() {
    local name="$1" binary port
    shift
    case "$name" in
        resize) binary=resize-svc ;;
        filter) binary=filter-svc ;;
        detect) binary=ai-detect-svc ;;
        *) die "start_service: no service $name" ;;
    esac
    port="$(free_port)"
    stack_spawn "$name" env GRPC_LISTEN_ADDR="127.0.0.1:$port" "$@" "$bin/$binary"
    case "$name" in
        resize) resize_port="$port" resize_pid="$spawned_pid" ;;
        filter) filter_port="$port" filter_pid="$spawned_pid" ;;
        detect) detect_port="$port" detect_pid="$spawned_pid" ;;
    esac
}

# start_kafka: a tansu broker (scripts/build-tansu.sh) with in-memory storage
# on a free port; sets kafka_port. Its environment is emptied: tansu reads
# OTEL_EXPORTER_OTLP_ENDPOINT, CLUSTER_ID and more, and ours must not reach it.
start_kafka() {
    kafka_port="$(free_port)"
    stack_spawn tansu env -i PATH="$PATH" HOME="$HOME" "$TOOLS_DIR/bin/tansu" broker \
        --listener-url "tcp://127.0.0.1:$kafka_port" --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
        --storage-engine memory://tansu/
}

# start_backend PORT NAME [VAR=value...]: backend-api on PORT with SQLite in
# $work/NAME.db, output in $work/backend-NAME.log, calling the services
# started so far (and $detect_port when set, started or not); sets backend_pid.
start_backend() {
    local port="$1" name="$2" endpoints=()
    shift 2
    [ -n "${resize_port:-}" ] && endpoints+=(RESIZE_GRPC_ENDPOINT="http://127.0.0.1:$resize_port")
    [ -n "${filter_port:-}" ] && endpoints+=(FILTER_GRPC_ENDPOINT="http://127.0.0.1:$filter_port")
    [ -n "${detect_port:-}" ] && endpoints+=(AI_DETECTION_GRPC_ENDPOINT="http://127.0.0.1:$detect_port")
    stack_spawn "backend-$name" env HTTP_LISTEN_ADDR="127.0.0.1:$port" \
        DATABASE_URL="sqlite://$work/$name.db?mode=rwc" "${endpoints[@]}" "$@" "$bin/backend-api"
    backend_pid="$spawned_pid"
}

# wait_for NAME WHAT COMMAND...: until COMMAND succeeds (30 s at most), else
# the end of $work/NAME.log and exit saying what never came.
wait_for() {
    local name="$1" what="$2"
    shift 2
    for _ in $(seq 1 300); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tail -n 40 "$work/$name.log" >&2
    die "no $what ($name)"
}

# wait_grpc PORT NAME: until the gRPC health check on PORT answers (needs
# $bin/imageflowctl).
wait_grpc() { wait_for "$2" "gRPC health on port $1" "$bin/imageflowctl" health "http://127.0.0.1:$1"; }

# wait_http PORT NAME: until /healthz on PORT answers.
wait_http() { wait_for "$2" "/healthz on port $1" curl -sf "http://127.0.0.1:$1/healthz"; }

# wait_log NAME TEXT: until $work/NAME.log has a line with TEXT (30 s at
# most); fails, without exiting, when it never comes.
wait_log() {
    for _ in $(seq 1 300); do
        grep -q "$2" "$work/$1.log" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
