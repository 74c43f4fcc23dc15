# Shared by the benchmark scripts (sourced, not run): output helpers, free
# ports, and stopping every process a script started when it exits.
#
# A script records each server it starts with `track PID` and sets WORK to
# its scratch directory; on exit, however it exits, every tracked process
# is stopped (SIGTERM, then SIGKILL after 10 s) and WORK is removed.

PIDS=()
WORK=

section() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
track() { PIDS+=("$1"); }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# stop_pid PID: SIGTERM, wait up to 10 s, then SIGKILL.
stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    [ -n "$WORK" ] && rm -rf "$WORK"
    exit $status
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
