#!/usr/bin/env bash
# Start or stop a throwaway S3 server (s3s-fs) on loopback for the test suite.
#
#   scripts/s3-test-server.sh start DIR PORT   # data in DIR/data, pid in DIR/s3s-fs.pid, log in DIR/s3s-fs.log
#   scripts/s3-test-server.sh stop  DIR [PORT]
#
# `start` prints, on stdout, the lines that point the tests at it:
#   eval "$(scripts/s3-test-server.sh start /tmp/s3 9500)"
# exports IMAGEFLOW_TEST_S3_ENDPOINT, IMAGEFLOW_TEST_S3_ACCESS_KEY and
# IMAGEFLOW_TEST_S3_SECRET_KEY. The credentials are test-only and the server listens on
# 127.0.0.1 only. The binary is $S3S_FS_BIN, else $HOME/.cache/imageflow/tools/bin/s3s-fs,
# else s3s-fs on PATH (scripts/setup.sh installs it).
set -euo pipefail

readonly ACCESS_KEY="test-access-key-loopback-only"
readonly SECRET_KEY="test-secret-key-loopback-only"
readonly START_TIMEOUT_TENTHS=100 # 10 s
readonly STOP_TIMEOUT_TENTHS=50   # 5 s

usage() {
    echo "usage: $0 start DIR PORT | stop DIR [PORT]" >&2
    exit 2
}

die() {
    echo "s3-test-server: $*" >&2
    exit 1
}

find_binary() {
    if [[ -n "${S3S_FS_BIN:-}" ]]; then
        [[ -x "$S3S_FS_BIN" ]] || die "S3S_FS_BIN=$S3S_FS_BIN is not executable; run scripts/setup.sh"
        echo "$S3S_FS_BIN"
        return
    fi
    local cached="${HOME:-}/.cache/imageflow/tools/bin/s3s-fs"
    if [[ -x "$cached" ]]; then
        echo "$cached"
        return
    fi
    if command -v s3s-fs >/dev/null 2>&1; then
        command -v s3s-fs
        return
    fi
    die "s3s-fs not found (looked at \$S3S_FS_BIN, $cached and PATH); run scripts/setup.sh"
}

port_accepts() {
    # bash's /dev/tcp: succeeds once something accepts connections on the port.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True when PID is alive and is an s3s-fs process (so a recycled pid is never killed).
is_our_server() {
    local pid="$1"
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/cmdline" ]]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 's3s-fs'
    fi
}

start() {
    local dir="$1" port="$2"
    if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
        die "PORT must be 1-65535, got '$port'"
    fi
    local bin
    bin="$(find_binary)"
    mkdir -p "$dir/data"
    dir="$(cd "$dir" && pwd)"
    local pid_file="$dir/s3s-fs.pid" log_file="$dir/s3s-fs.log"

    if [[ -f "$pid_file" ]] && is_our_server "$(cat "$pid_file")"; then
        die "already running (pid $(cat "$pid_file"), $pid_file); stop it first"
    fi
    if port_accepts "$port"; then
        die "port $port on 127.0.0.1 is already in use"
    fi

    nohup "$bin" --host 127.0.0.1 --port "$port" \
        --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" \
        "$dir/data" >"$log_file" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$pid_file"

    local tries=0
    until port_accepts "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pid_file"
            tail -n 20 "$log_file" >&2 || true
            die "s3s-fs exited during start-up (log: $log_file)"
        fi
        if ((++tries > START_TIMEOUT_TENTHS)); then
            kill "$pid" 2>/dev/null || true
            rm -f "$pid_file"
            tail -n 20 "$log_file" >&2 || true
            die "s3s-fs did not accept connections on 127.0.0.1:$port within 10 s (log: $log_file)"
        fi
        sleep 0.1
    done
    # A server that bound the port first would also accept; make sure ours is the one alive.
    sleep 0.1
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$pid_file"
        tail -n 20 "$log_file" >&2 || true
        die "s3s-fs exited right after start-up; is port $port taken? (log: $log_file)"
    fi

    echo "s3-test-server: s3s-fs pid $pid on 127.0.0.1:$port, data in $dir/data" >&2
    echo "export IMAGEFLOW_TEST_S3_ENDPOINT=http://127.0.0.1:$port"
    echo "export IMAGEFLOW_TEST_S3_ACCESS_KEY=$ACCESS_KEY"
    echo "export IMAGEFLOW_TEST_S3_SECRET_KEY=$SECRET_KEY"
}

stop() {
    local dir="$1"
    local pid_file="$dir/s3s-fs.pid"
    if [[ ! -f "$pid_file" ]]; then
        echo "s3-test-server: no pid file at $pid_file; nothing to stop" >&2
        return 0
    fi
    local pid
    pid="$(cat "$pid_file")"
    [[ "$pid" =~ ^[0-9]+$ ]] || die "pid file $pid_file holds '$pid', not a pid"
    if is_our_server "$pid"; then
        kill "$pid" 2>/dev/null || true
        local tries=0
        while kill -0 "$pid" 2>/dev/null; do
            if ((++tries > STOP_TIMEOUT_TENTHS)); then
                kill -9 "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
        echo "s3-test-server: stopped s3s-fs pid $pid" >&2
    else
        echo "s3-test-server: pid $pid is not a running s3s-fs; removing stale pid file" >&2
    fi
    rm -f "$pid_file"
}

main() {
    [[ $# -ge 2 ]] || usage
    local command="$1" dir="$2"
    case "$command" in
    start)
        [[ $# -eq 3 ]] || usage
        start "$dir" "$3"
        ;;
    stop)
        [[ $# -le 3 ]] || usage
        stop "$dir"
        ;;
    *) usage ;;
    esac
}

main "$@"
