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

# cpu_ticks PID...: user + system clock ticks the processes have used, summed.
cpu_ticks() {
    local t=0 p
    for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$t"
}

# broker_cpu BYTES "PID..." CMD...: runs CMD, then prints the CPU the
# brokers PID... spent meanwhile, in seconds and per GB of BYTES (the
# run's value bytes). The client's own figure is in its output.
broker_cpu() {
    local bytes=$1 pids=$2 before after
    shift 2
    # shellcheck disable=SC2086
    before=$(cpu_ticks $pids)
    run "$@"
    # shellcheck disable=SC2086
    after=$(cpu_ticks $pids)
    python3 -c "import sys; s = ($after - $before) / $(getconf CLK_TCK); print(f'broker CPU {s:.2f} s: {s / ($bytes / 1e9):.2f} CPU-s/GB')"
}

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

# start_broker FJORD DIR: starts one broker on a free loopback port with
# data in DIR/data and logs in DIR/broker.{out,log}, tracks it, waits for
# its address, and sets ADDR and BROKER_PID.
start_broker() {
    local fjord=$1 dir=$2
    "$fjord" broker --listen 127.0.0.1:0 --metrics-listen none --data-dir "$dir/data" --log-level warn \
        >"$dir/broker.out" 2>"$dir/broker.log" &
    BROKER_PID=$!
    track "$BROKER_PID"
    ADDR=
    for _ in $(seq 100); do
        ADDR=$(sed -n 's/^fjord broker [0-9]* listening on //p' "$dir/broker.out")
        [ -n "$ADDR" ] && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || { cat "$dir/broker.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "the broker did not report its address" >&2
    exit 1
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
