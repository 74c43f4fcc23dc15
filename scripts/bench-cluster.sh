#!/usr/bin/env bash
# Replication benchmarks, in one run on this machine:
#   1. produce throughput and latency of 1 KiB records, acks=all: one broker
#      (a Raft group of one) vs three brokers with replication factor 3;
#   2. failover: a paced producer runs while the partition leader is
#      SIGKILLed; the largest latency (measured from each record's intended
#      send time) is the time from the kill to the first acknowledgement on
#      the new leader, plus at most one pacing interval;
#   3. CPU of each broker of a 3-broker cluster holding 1,000 idle
#      partitions with replication factor 3.
#
# Usage: scripts/bench-cluster.sh   (honours CARGO_TARGET_DIR). Scale:
#   FJORD_BENCH_RECORDS (300000)  FJORD_BENCH_IDLE_PARTITIONS (1000)
# Everything it starts is stopped (by pid) and its data removed on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RECORDS=${FJORD_BENCH_RECORDS:-300000}
IDLE=${FJORD_BENCH_IDLE_PARTITIONS:-1000}
FJORD="$TARGET/release/fjord"
# shellcheck source=scripts/bench-common.sh
. "$ROOT/scripts/bench-common.sh"
WORK=$(mktemp -d "$ROOT/target/bench-cluster.XXXXXX")

# start_broker NAME ID PORT PEERS -> sets BROKER_PID
start_broker() {
    local name=$1 id=$2 port=$3 peers=$4 args=()
    [ -n "$peers" ] && args=(--id "$id" --peers "$peers")
    "$FJORD" --log-level warn broker --listen "127.0.0.1:$port" --metrics-listen none --data-dir "$WORK/$name" \
        "${args[@]}" \
        >"$WORK/$name.out" 2>"$WORK/$name.log" &
    BROKER_PID=$!
    track "$BROKER_PID"
    for _ in $(seq 200); do grep -q "listening on" "$WORK/$name.out" 2>/dev/null && return 0; sleep 0.05; done
    echo "broker $name did not start" >&2; cat "$WORK/$name.log" >&2; exit 1
}

# start_cluster PREFIX -> sets BOOT and CPIDS (pids of brokers 1-3)
start_cluster() {
    local a b c
    a=$(free_port); b=$(free_port); c=$(free_port)
    local peers="1=127.0.0.1:$a,2=127.0.0.1:$b,3=127.0.0.1:$c"
    BOOT="127.0.0.1:$a,127.0.0.1:$b,127.0.0.1:$c"
    CPIDS=()
    start_broker "${1}1" 1 "$a" "$peers"; CPIDS+=("$BROKER_PID")
    start_broker "${1}2" 2 "$b" "$peers"; CPIDS+=("$BROKER_PID")
    start_broker "${1}3" 3 "$c" "$peers"; CPIDS+=("$BROKER_PID")
}


section "build"
cargo build --release --bin fjord 2>&1 | tail -n 1
echo "machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, $(df -T "$ROOT/target" | awk 'NR==2{print $2}') on $(df "$ROOT/target" | awk 'NR==2{print $1}')"

section "1. produce, 1 KiB records, acks=all: 1 broker"
P1=$(free_port)
start_broker single 1 "$P1" ""
broker_cpu $((RECORDS * 1024)) "$BROKER_PID" "$FJORD" --broker "127.0.0.1:$P1" bench produce --topic b1 \
    --partitions 8 --replication-factor 1 --records "$RECORDS" --record-size 1024 --acks all |
    tee "$WORK/produce1.out"
RATE1=$(awk '{for (i = 2; i <= NF; i++) if ($i == "records/s,") { print $(i - 1); exit }}' "$WORK/produce1.out")
kill -TERM "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true

section "1. produce, 1 KiB records, acks=all: 3 brokers, replication factor 3"
start_cluster b
broker_cpu $((RECORDS * 1024)) "${CPIDS[*]}" "$FJORD" --broker "$BOOT" bench produce --topic b3 \
    --partitions 8 --replication-factor 3 --records "$RECORDS" --record-size 1024 --acks all
echo "(broker CPU above: the three brokers together)"

section "1. e2e rate search, 3 brokers RF 3: highest rate with p99 <= 20 ms (linger 0)"
START=$((RATE1 / 32 > 1000 ? RATE1 / 32 : 1000))
run "$FJORD" --broker "$BOOT" bench e2e --topic b3-max --partitions 8 --replication-factor 3 \
    --record-size 1024 --acks all --linger-ms 0 --find-max-rate --p99-ms 20 \
    --step-duration "${FJORD_BENCH_STEP:-5s}" --start-rate "$START" --max-rate "$RATE1" --search-steps 3
echo "(produce-only rate of one broker in this run: $RATE1 records/s)"

section "2. failover: SIGKILL the leader of a partition under a paced producer (2,000 records/s)"
"$FJORD" --broker "$BOOT" topic create failover --partitions 1 --replication-factor 3 >/dev/null
LEADER=$("$FJORD" --broker "$BOOT" topic describe failover --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitions"][0]["leader"])')
"$FJORD" --broker "$BOOT" --timeout 30s bench produce --topic failover --records 16000 --record-size 1024 \
    --rate 2000 --acks all --linger-ms 0 >"$WORK/failover.txt" 2>&1 &
BENCH=$!
sleep 3
VICTIM=${CPIDS[$((LEADER - 1))]}
echo "SIGKILL broker $LEADER (pid $VICTIM), the partition's leader"
kill -KILL "$VICTIM"
wait "$BENCH" || true
cat "$WORK/failover.txt"
echo "(max latency above = time from the kill to the first acknowledgement by the new leader, within 0.5 ms)"

section "3. CPU of idle replicated partitions: $IDLE partitions, replication factor 3, 3 brokers"
for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
PIDS=()
start_cluster i
time "$FJORD" --broker "$BOOT" --timeout 120s topic create idle --partitions "$IDLE" --replication-factor 3
sleep 15
HZ=$(getconf CLK_TCK)
T0=( "$(cpu_ticks "${CPIDS[0]}")" "$(cpu_ticks "${CPIDS[1]}")" "$(cpu_ticks "${CPIDS[2]}")" )
sleep 20
T1=( "$(cpu_ticks "${CPIDS[0]}")" "$(cpu_ticks "${CPIDS[1]}")" "$(cpu_ticks "${CPIDS[2]}")" )
for i in 0 1 2; do
    python3 -c "print(f'broker $((i + 1)): {100 * ($((T1[i] - T0[i]))) / $HZ / 20:.1f}% of one core over 20 s idle')"
done
