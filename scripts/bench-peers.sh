#!/usr/bin/env bash
# Runs one workload against Fjord and against peers installable here, one
# system after another in one run, and prints one table with each system's
# durability setting next to its figures:
#
#   - N records of 1 KiB to one topic/stream, acknowledged writes in
#     batches of about 256 KiB (Fjord's producer batches; 256 XADDs per
#     Redis pipeline; 256 JetStream publishes awaiting acks), then a read
#     of all of them from the start;
#   - Fjord: one broker, 8 partitions, acks=all, fsync before every ack;
#   - Redis Streams: AOF with appendfsync always;
#   - NATS JetStream: file storage, the server's default sync (2.9 cannot
#     fsync per write);
#   - RabbitMQ streams over the stream protocol (Python `rstream` client,
#     scripts/peers/rabbitmq_stream_bench.py), up to 256 records awaiting
#     publisher confirms; streams never fsync (osiris writes to the page
#     cache and leaves flushing to the OS);
#   - same-run references: the data disk's 1 MiB sequential writes with
#     and without fdatasync, and loopback TCP.
#
# Usage: scripts/bench-peers.sh   (honours CARGO_TARGET_DIR). Scale with:
#   FJORD_PEERS_RECORDS   records per system            (200000)
#   FJORD_PEERS_DISK_MIB  MiB per disk reference        (512)
#   FJORD_PEERS_TCP_MIB   MiB for the loopback reference (2048)
# Installs redis-server, nats-server and rabbitmq-server with apt-get and
# the rstream Python client with pip if they are missing. Every server it
# starts (and the epmd it starts for RabbitMQ) listens on 127.0.0.1 only,
# keeps its data, logs and configuration in the run's scratch directory, and
# is stopped by its recorded pid, and that directory removed, when the
# script exits, however it exits.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RECORDS=${FJORD_PEERS_RECORDS:-200000}
DISK_MIB=${FJORD_PEERS_DISK_MIB:-512}
TCP_MIB=${FJORD_PEERS_TCP_MIB:-2048}
RECORD_SIZE=1024
# Records per Redis pipeline, JetStream publishes in flight and RabbitMQ
# records awaiting confirms: 256 x 1 KiB = 256 KiB, the size of one Fjord
# producer batch.
PIPELINE=256
# Debian's rabbitmq-server: this script runs the server as the caller (the
# /usr/sbin wrapper would switch to the rabbitmq user and its global dirs).
RABBITMQ_SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server

# shellcheck source=scripts/bench-common.sh
. "$ROOT/scripts/bench-common.sh"
# wait_port PID PORT LOG: until PORT accepts a connection or PID exits.
wait_port() {
    for _ in $(seq 200); do
        kill -0 "$1" 2>/dev/null || { echo "server pid $1 exited:" >&2; tail -n 20 "$3" >&2; exit 1; }
        python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$2" \
            2>/dev/null && return 0
        sleep 0.1
    done
    echo "server pid $1 did not open port $2" >&2
    exit 1
}
# last_json FILE: the last line of FILE that is a JSON object.
last_json() { grep '^{' "$1" | tail -n 1; }

section "install"
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v nats-server >/dev/null || missing+=(nats-server)
[ -x "$RABBITMQ_SERVER" ] || missing+=(rabbitmq-server)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! python3 -c 'import rstream' 2>/dev/null; then
    echo "installing rstream (pip)"
    python3 -m pip install -q rstream
fi
echo "redis:    $(redis-server --version | cut -d' ' -f1-3)"
echo "nats:     $(nats-server --version)"
echo "rabbitmq: $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo unknown)" \
    "($(basename "$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins/osiris-* 2>/dev/null | head -n 1)" 2>/dev/null)," \
    "erlang $(erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().')," \
    "rstream $(python3 -c 'import rstream; print(rstream.__version__)'))"

section "build"
cargo build --release --bin fjord 2>&1 | tail -n 1
(cd benches/peers && cargo build --release 2>&1 | tail -n 1)
FJORD="$TARGET/release/fjord"
# benches/peers is its own workspace: its target dir is ours if set, else its own.
PEERS="${CARGO_TARGET_DIR:-$ROOT/benches/peers/target}/release/fjord-bench-peers"

mkdir -p "$TARGET"
WORK=$(mktemp -d "$TARGET/bench-peers.XXXXXX")

section "machine"
echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit:   $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
echo "kernel:   $(uname -sr)"
echo "cpus:     $(nproc) ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1))"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min; other work on the machine skews every figure)"
echo "data dir: $WORK"
df -T "$WORK" | sed 's/^/          /'

section "reference: disk, 1 MiB sequential writes ($DISK_MIB MiB each)"
python3 "$ROOT/scripts/reference.py" disk "$WORK/disk-ref" "$DISK_MIB" | tee "$WORK/ref.txt"

section "reference: loopback TCP, one connection, 1 MiB sends ($TCP_MIB MiB)"
python3 "$ROOT/scripts/reference.py" tcp "$TCP_MIB" | tee -a "$WORK/ref.txt"

# Each system gets a line in $WORK/systems.tsv: name, durability, and the
# files holding its produce and consume JSON.
: >"$WORK/systems.tsv"

section "fjord: $RECORDS x $RECORD_SIZE B, acks=all"
mkdir -p "$WORK/fjord"
"$FJORD" broker --listen 127.0.0.1:0 --data-dir "$WORK/fjord/data" --log-level warn \
    >"$WORK/fjord/broker.out" 2>"$WORK/fjord/broker.log" &
FJORD_PID=$!
PIDS+=("$FJORD_PID")
ADDR=
for _ in $(seq 100); do
    ADDR=$(sed -n 's/^fjord broker [0-9]* listening on //p' "$WORK/fjord/broker.out")
    [ -n "$ADDR" ] && break
    kill -0 "$FJORD_PID" 2>/dev/null || { cat "$WORK/fjord/broker.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$ADDR" ] || { echo "the broker did not report its address" >&2; exit 1; }
echo "broker pid $FJORD_PID on $ADDR"
run "$FJORD" --broker "$ADDR" bench produce --topic peers --records "$RECORDS" --record-size "$RECORD_SIZE" \
    --partitions 8 --replication-factor 1 --acks all --json | tee "$WORK/fjord/produce.json"
run "$FJORD" --broker "$ADDR" bench consume --topic peers --json | tee "$WORK/fjord/consume.json"
echo "data on disk: $(du -sh "$WORK/fjord/data" | cut -f1)"
stop_pid "$FJORD_PID"
printf 'Fjord\tfsync per batch (group commit)\t%s\t%s\n' "$WORK/fjord/produce.json" "$WORK/fjord/consume.json" \
    >>"$WORK/systems.tsv"

section "redis streams: $RECORDS x $RECORD_SIZE B, pipelines of $PIPELINE XADD"
mkdir -p "$WORK/redis"
PORT=$(free_port)
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$WORK/redis" --appendonly yes --appendfsync always \
    --save "" --daemonize no --logfile "$WORK/redis/redis.log" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_port "$REDIS_PID" "$PORT" "$WORK/redis/redis.log"
echo "redis-server pid $REDIS_PID on 127.0.0.1:$PORT, appendfsync $(redis-cli -p "$PORT" config get appendfsync | tail -n 1)"
run "$PEERS" redis "redis://127.0.0.1:$PORT/" "$RECORDS" "$RECORD_SIZE" "$PIPELINE" | tee "$WORK/redis/out.json"
echo "data on disk: $(du -sh "$WORK/redis" | cut -f1)"
stop_pid "$REDIS_PID"
grep '^{' "$WORK/redis/out.json" | sed -n 1p >"$WORK/redis/produce.json"
grep '^{' "$WORK/redis/out.json" | sed -n 2p >"$WORK/redis/consume.json"
printf 'Redis Streams\tAOF fsync every write (always)\t%s\t%s\n' "$WORK/redis/produce.json" "$WORK/redis/consume.json" \
    >>"$WORK/systems.tsv"

section "nats jetstream: $RECORDS x $RECORD_SIZE B, $PIPELINE publishes in flight"
mkdir -p "$WORK/nats"
PORT=$(free_port)
nats-server -js -a 127.0.0.1 -p "$PORT" -sd "$WORK/nats" >"$WORK/nats/nats.log" 2>&1 &
NATS_PID=$!
PIDS+=("$NATS_PID")
wait_port "$NATS_PID" "$PORT" "$WORK/nats/nats.log"
echo "nats-server pid $NATS_PID on 127.0.0.1:$PORT"
run "$PEERS" nats "nats://127.0.0.1:$PORT" "$RECORDS" "$RECORD_SIZE" "$PIPELINE" | tee "$WORK/nats/out.json"
echo "data on disk: $(du -sh "$WORK/nats" | cut -f1)"
stop_pid "$NATS_PID"
grep '^{' "$WORK/nats/out.json" | sed -n 1p >"$WORK/nats/produce.json"
grep '^{' "$WORK/nats/out.json" | sed -n 2p >"$WORK/nats/consume.json"
printf 'NATS JetStream\tJetStream, fsync every 2 min (default sync_interval; cannot fsync per write in 2.9)\t%s\t%s\n' \
    "$WORK/nats/produce.json" "$WORK/nats/consume.json" >>"$WORK/systems.tsv"

section "rabbitmq streams: $RECORDS x $RECORD_SIZE B, up to $PIPELINE records awaiting confirms"
RABBIT_DIR="$WORK/rabbitmq"
mkdir -p "$RABBIT_DIR"
# Four distinct free loopback ports: AMQP, stream protocol, Erlang
# distribution, epmd.
while :; do
    ports=("$(free_port)" "$(free_port)" "$(free_port)" "$(free_port)")
    [ "$(printf '%s\n' "${ports[@]}" | sort -u | wc -l)" -eq 4 ] && break
done
AMQP_PORT=${ports[0]} STREAM_PORT=${ports[1]} DIST_PORT=${ports[2]} EPMD_PORT=${ports[3]}
cat >"$RABBIT_DIR/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$AMQP_PORT
stream.listeners.tcp.1 = 127.0.0.1:$STREAM_PORT
stream.advertised_host = 127.0.0.1
stream.advertised_port = $STREAM_PORT
EOF
echo '[rabbitmq_stream].' >"$RABBIT_DIR/enabled_plugins"
# Our own epmd on a free port, so the node neither uses nor starts the
# machine's (the node is told -start_epmd false).
epmd -address 127.0.0.1 -port "$EPMD_PORT" >"$RABBIT_DIR/epmd.log" 2>&1 &
EPMD_PID=$!
track "$EPMD_PID"
wait_port "$EPMD_PID" "$EPMD_PORT" "$RABBIT_DIR/epmd.log"
# HOME holds the node's Erlang cookie; the config, env and plugin files
# named here replace the ones under /etc/rabbitmq.
env HOME="$RABBIT_DIR" ERL_EPMD_PORT="$EPMD_PORT" ERL_CRASH_DUMP="$RABBIT_DIR/erl_crash.dump" \
    RABBITMQ_NODENAME=rabbit@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$AMQP_PORT" \
    RABBITMQ_DIST_PORT="$DIST_PORT" RABBITMQ_MNESIA_BASE="$RABBIT_DIR/mnesia" RABBITMQ_LOG_BASE="$RABBIT_DIR/log" \
    RABBITMQ_CONFIG_FILE="$RABBIT_DIR/rabbitmq.conf" RABBITMQ_ADVANCED_CONFIG_FILE="$RABBIT_DIR/advanced.config" \
    RABBITMQ_CONF_ENV_FILE="$RABBIT_DIR/rabbitmq-env.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$RABBIT_DIR/enabled_plugins" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}" \
    "$RABBITMQ_SERVER" >"$RABBIT_DIR/server.out" 2>&1 &
# The server script stays as the parent of the Erlang VM and turns SIGTERM
# into a clean stop of it; track both, the script first.
RABBIT_PID=$!
track "$RABBIT_PID"
wait_port "$RABBIT_PID" "$STREAM_PORT" "$RABBIT_DIR/server.out"
RABBIT_VM_PID=$(ps -o pid= --ppid "$RABBIT_PID" | head -n 1 | tr -d ' ')
if [ -n "$RABBIT_VM_PID" ]; then track "$RABBIT_VM_PID"; fi
echo "rabbitmq-server pid $RABBIT_PID (VM pid ${RABBIT_VM_PID:-?}), stream 127.0.0.1:$STREAM_PORT," \
    "amqp :$AMQP_PORT, dist :$DIST_PORT; epmd pid $EPMD_PID on :$EPMD_PORT"
run python3 "$ROOT/scripts/peers/rabbitmq_stream_bench.py" 127.0.0.1 "$STREAM_PORT" "$RECORDS" "$RECORD_SIZE" "$PIPELINE" \
    | tee "$RABBIT_DIR/out.json"
echo "data on disk: $(du -sh "$RABBIT_DIR/mnesia/rabbit@localhost/stream" | cut -f1)"
stop_pid "$RABBIT_PID"
if [ -n "$RABBIT_VM_PID" ]; then stop_pid "$RABBIT_VM_PID"; fi
stop_pid "$EPMD_PID"
grep '^{' "$RABBIT_DIR/out.json" | sed -n 1p >"$RABBIT_DIR/produce.json"
grep '^{' "$RABBIT_DIR/out.json" | sed -n 2p >"$RABBIT_DIR/consume.json"
printf 'RabbitMQ streams\tno fsync: confirm once in the page cache, OS writeback (osiris never syncs)\t%s\t%s\n' \
    "$RABBIT_DIR/produce.json" "$RABBIT_DIR/consume.json" >>"$WORK/systems.tsv"

section "table: $RECORDS x $RECORD_SIZE B records, one topic/stream; MB = 10^6 value bytes; x = ratio to Fjord"
python3 - "$WORK/systems.tsv" "$WORK/ref.txt" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1]):
    name, durability, produce, consume = line.rstrip("\n").split("\t")
    p = json.loads([l for l in open(produce) if l.startswith("{")][-1])
    c = json.loads([l for l in open(consume) if l.startswith("{")][-1])
    rows.append((name, durability, p, c))
base_p, base_c = rows[0][2], rows[0][3]
def ratio(x, base):
    return f"{x / base:.2f}x" if base else "-"
print("| system | durability | write rec/s | write MB/s | read rec/s | read MB/s | write p50 ms | write p99 ms | write x Fjord | read x Fjord |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, durability, p, c in rows:
    lat = p.get("latency") or {}
    print(f"| {name} | {durability} | {p['records_per_sec']:.0f} | {p['mb_per_sec']:.1f} "
          f"| {c['records_per_sec']:.0f} | {c['mb_per_sec']:.1f} "
          f"| {lat.get('p50_us', 0) / 1000:.2f} | {lat.get('p99_us', 0) / 1000:.2f} "
          f"| {ratio(p['records_per_sec'], base_p['records_per_sec'])} "
          f"| {ratio(c['records_per_sec'], base_c['records_per_sec'])} |")
print()
print("machine reference, same run:")
for line in open(sys.argv[2]):
    print("  " + line.rstrip())
PY
