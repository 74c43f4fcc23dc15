#!/usr/bin/env bash
# Starts a local 3-broker Fjord cluster on 127.0.0.1 and stops it.
#
#   scripts/cluster.sh start [DIR]   build, start brokers 1-3 (data and logs under DIR,
#                                    default ./fjord-cluster), print the bootstrap list
#   scripts/cluster.sh stop [DIR]    SIGTERM the brokers it started (by their pids) and wait
#   scripts/cluster.sh status [DIR]  which brokers are running
#
# Ports: FJORD_CLUSTER_PORTS (default "19092 19093 19094").
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-}
dir=${2:-fjord-cluster}
read -r -a ports <<< "${FJORD_CLUSTER_PORTS:-19092 19093 19094}"
peers="1=127.0.0.1:${ports[0]},2=127.0.0.1:${ports[1]},3=127.0.0.1:${ports[2]}"
bootstrap="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

case "$cmd" in
  start)
    cargo build --release --quiet --bin fjord
    mkdir -p "$dir"
    for id in 1 2 3; do
      pidfile="$dir/broker-$id.pid"
      if running "$pidfile"; then echo "broker $id already running (pid $(cat "$pidfile"))"; continue; fi
      port=${ports[$((id - 1))]}
      target/release/fjord broker --id "$id" --listen "127.0.0.1:$port" --peers "$peers" \
        --data-dir "$dir/broker-$id" >"$dir/broker-$id.out" 2>"$dir/broker-$id.log" &
      echo $! >"$pidfile"
    done
    for id in 1 2 3; do
      for _ in $(seq 1 100); do
        grep -q "listening on" "$dir/broker-$id.out" 2>/dev/null && break
        running "$dir/broker-$id.pid" || { echo "broker $id failed to start; see $dir/broker-$id.log" >&2; exit 1; }
        sleep 0.1
      done
    done
    echo "cluster running; bootstrap: $bootstrap"
    echo "  export FJORD_BROKER=$bootstrap"
    ;;
  stop)
    for id in 1 2 3; do
      pidfile="$dir/broker-$id.pid"
      if running "$pidfile"; then
        pid=$(cat "$pidfile")
        kill -TERM "$pid"
        for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; echo "broker $id killed (did not stop in 15 s)"; else echo "broker $id stopped"; fi
      fi
      rm -f "$pidfile"
    done
    ;;
  status)
    for id in 1 2 3; do
      if running "$dir/broker-$id.pid"; then echo "broker $id: running (pid $(cat "$dir/broker-$id.pid"))"; else echo "broker $id: stopped"; fi
    done
    ;;
  *)
    echo "usage: $0 start|stop|status [DIR]" >&2
    exit 2
    ;;
esac
