#!/usr/bin/env bash
# Benchmarks a single local broker through the client, next to reference
# figures measured in the same run on the same machine:
#
#   1. the disk under the repository: 1 MiB sequential writes, buffered
#      with one fdatasync at the end, and with an fdatasync after each;
#   2. loopback TCP: one connection, 1 MiB sends;
#   3. the storage engine alone: `cargo bench -p fjord-storage` at a small
#      scale, its append lines;
#   4. `fjord bench produce` of 1 KiB records with acks=all (the broker's
#      default flush policy fsyncs each batch before acknowledging),
#      `fjord bench consume` of all of them, and `fjord bench e2e` paced
#      at half the produce rate, its latency over the records due after a
#      2 s warm-up (topic creation, leader elections, the producer id);
#      each run's client CPU (its own output) and broker CPU (from
#      /proc/PID/stat), in seconds and CPU-s per GB of value bytes;
#   5. `fjord bench e2e --find-max-rate`: the highest rate a producer and
#      a consumer at once sustain with the p99 produce-to-consume latency
#      within 10 ms, and within 50 ms (linger 0: a latency-bound producer
#      does not wait to batch).
#
# Usage: scripts/bench.sh   (honours CARGO_TARGET_DIR). Scale with:
#   FJORD_BENCH_RECORDS     records of the produce run        (1000000)
#   FJORD_BENCH_PRODUCERS   producer tasks of produce and e2e (1)
#   FJORD_BENCH_E2E_SECONDS length of the paced e2e run       (20)
#   FJORD_BENCH_DISK_MIB    MiB written by each disk reference (1024)
#   FJORD_BENCH_TCP_MIB     MiB sent by the loopback reference (4096)
#   FJORD_BENCH_STEP        length of each rate-search step      (5s)
# A full run takes about 5 minutes on 2 cores. Everything it starts is
# stopped, and its data directory (under target/, so on the same disk as
# the repository) removed, when it exits, however it exits.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RECORDS=${FJORD_BENCH_RECORDS:-1000000}
PRODUCERS=${FJORD_BENCH_PRODUCERS:-1}
E2E_SECONDS=${FJORD_BENCH_E2E_SECONDS:-20}
DISK_MIB=${FJORD_BENCH_DISK_MIB:-1024}
TCP_MIB=${FJORD_BENCH_TCP_MIB:-4096}
STEP=${FJORD_BENCH_STEP:-5s}
RECORD_SIZE=1024

# shellcheck source=scripts/bench-common.sh
. "$ROOT/scripts/bench-common.sh"

section "build"
cargo build --release --bin fjord 2>&1 | tail -n 1
cargo bench -p fjord-storage --bench storage --no-run 2>&1 | tail -n 1
FJORD="$TARGET/release/fjord"

mkdir -p "$ROOT/target"
WORK=$(mktemp -d "$ROOT/target/bench.XXXXXX")

section "machine"
echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit:   $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
echo "kernel:   $(uname -sr)"
echo "cpus:     $(nproc) ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1))"
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min; other work on the machine skews every figure)"
echo "memory:   $(free -h | awk '/^Mem:/ {print $2 " total, " $7 " available"}')"
echo "data dir: $WORK"
df -T "$WORK" | sed 's/^/          /'

section "reference: disk, 1 MiB sequential writes of random bytes ($DISK_MIB MiB each)"
python3 "$ROOT/scripts/reference.py" disk "$WORK/disk-ref" "$DISK_MIB"

section "reference: loopback TCP, one connection, 1 MiB sends ($TCP_MIB MiB)"
python3 "$ROOT/scripts/reference.py" tcp "$TCP_MIB"

section "reference: storage engine alone (cargo bench -p fjord-storage --bench storage, small scale)"
FJORD_BENCH_DIR="$WORK" FJORD_BENCH_GIB=1 FJORD_BENCH_APPEND_MIB=256 FJORD_BENCH_FSYNC_MIB=128 \
    FJORD_BENCH_TAIL_MIB=128 FJORD_BENCH_LOOKUPS=1000 FJORD_BENCH_RUNS=1 \
    cargo bench -q -p fjord-storage --bench storage 2>"$WORK/storage-bench.err" >"$WORK/storage-bench.out" ||
    { cat "$WORK/storage-bench.err" >&2; exit 1; }
grep -E '^\| (measurement|append)' "$WORK/storage-bench.out" | sed -E 's/ +\|/ |/g'

section "broker"
start_broker "$FJORD" "$WORK"
echo "broker pid $BROKER_PID listening on $ADDR, flush policy: always (fsync before ack)"
export FJORD_BROKER=$ADDR

section "produce: $RECORDS x $RECORD_SIZE B, acks=all, as fast as possible"
broker_cpu $((RECORDS * RECORD_SIZE)) "$BROKER_PID" "$FJORD" bench produce --topic bench \
    --records "$RECORDS" --record-size "$RECORD_SIZE" --acks all --producers "$PRODUCERS" --partitions 8 |
    tee "$WORK/produce.out"
RATE=$(awk '{for (i = 2; i <= NF; i++) if ($i == "records/s,") { print $(i - 1); exit }}' "$WORK/produce.out")
[ -n "$RATE" ] || { echo "no records/s figure in the produce output" >&2; exit 1; }

section "consume: everything, from the beginning"
broker_cpu $((RECORDS * RECORD_SIZE)) "$BROKER_PID" "$FJORD" bench consume --topic bench

HALF=$((RATE / 2))
E2E_RECORDS=$((HALF * E2E_SECONDS))
section "e2e: $E2E_RECORDS x $RECORD_SIZE B at $HALF records/s (half the produce rate), acks=all"
broker_cpu $((E2E_RECORDS * RECORD_SIZE)) "$BROKER_PID" "$FJORD" bench e2e --topic bench-e2e \
    --records "$E2E_RECORDS" --record-size "$RECORD_SIZE" --rate "$HALF" --acks all --producers "$PRODUCERS" \
    --partitions 8 --warmup 2s

# Doubling from a sixteenth of the produce rate reaches it in four steps.
START=$((RATE / 16 > 1000 ? RATE / 16 : 1000))
for BOUND in 10 50; do
    section "e2e rate search: highest rate with p99 <= $BOUND ms ($STEP steps from $START records/s, linger 0)"
    run "$FJORD" bench e2e --topic "bench-max-$BOUND" --record-size "$RECORD_SIZE" --acks all \
        --producers "$PRODUCERS" --partitions 8 --linger-ms 0 --find-max-rate --p99-ms "$BOUND" \
        --step-duration "$STEP" --start-rate "$START" --max-rate "$RATE" --search-steps 3
    echo "(produce-only rate of this run: $RATE records/s)"
done

section "after"
echo "data on disk: $(du -sh "$WORK/data" | cut -f1)"
echo "load:         $(cut -d' ' -f1-3 /proc/loadavg)"
