#!/usr/bin/env bash
# What the compactor costs producers: `fjord bench produce` of the same
# keyed records (1 KiB values, FJORD_BENCH_KEYS keys repeating) into a
# topic with `cleanup.policy=compact`, whose closed segments the broker
# compacts while the run goes on, and into the same topic with compaction
# off (`delete`, no retention), alternating, FJORD_BENCH_RUNS times each on
# one local broker. Reports each run's MB/s, the broker's CPU seconds per
# GB produced (utime + stime from /proc/PID/stat over the run and the 3 s
# after it, in which the compactor cleans what the run closed), and the
# compacted topic's size after the run against the plain one's.
#
# Usage: scripts/bench-compaction.sh   (honours CARGO_TARGET_DIR). Scale with:
#   FJORD_BENCH_RECORDS    records per run (500000)
#   FJORD_BENCH_KEYS       distinct keys (10000)
#   FJORD_BENCH_RUNS       runs of each case (3)
# Everything it starts is stopped, and its data removed, when it exits.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RECORDS=${FJORD_BENCH_RECORDS:-500000}
KEYS=${FJORD_BENCH_KEYS:-10000}
RUNS=${FJORD_BENCH_RUNS:-3}
# Small enough that a run rolls many segments for the compactor to clean.
SEGMENT_BYTES=$((16 * 1024 * 1024))

# shellcheck source=scripts/bench-common.sh
. "$ROOT/scripts/bench-common.sh"

section "build"
cargo build --release --bin fjord 2>&1 | tail -n 1
FJORD="$TARGET/release/fjord"
mkdir -p "$ROOT/target"
WORK=$(mktemp -d "$ROOT/target/bench.XXXXXX")
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown), cpus: $(nproc), load: $(cut -d' ' -f1-3 /proc/loadavg)"

section "broker"
"$FJORD" broker --listen 127.0.0.1:0 --data-dir "$WORK/data" --log-level warn --maintenance-interval 1s \
    >"$WORK/broker.out" 2>"$WORK/broker.log" &
BROKER_PID=$!
track "$BROKER_PID"
ADDR=
for _ in $(seq 100); do
    ADDR=$(sed -n 's/^fjord broker [0-9]* listening on //p' "$WORK/broker.out")
    [ -n "$ADDR" ] && break
    sleep 0.1
done
[ -n "$ADDR" ] || { cat "$WORK/broker.log" >&2; exit 1; }
export FJORD_BROKER=$ADDR
echo "broker pid $BROKER_PID on $ADDR; $RECORDS records of 1 KiB, $KEYS keys, $SEGMENT_BYTES-byte segments"

# The broker's CPU seconds so far (utime + stime, in clock ticks).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$BROKER_PID/stat"; }
TICKS=$(getconf CLK_TCK)
size_of() {
    "$FJORD" topic describe "$1" --format json |
        python3 -c 'import json,sys; print(sum(p["size_bytes"] for p in json.load(sys.stdin)["partitions"]))'
}

declare -A RESULTS
for run in $(seq "$RUNS"); do
    for policy in compact delete; do
        topic="$policy-$run"
        "$FJORD" topic create "$topic" -p 1 --cleanup-policy "$policy" --segment-bytes "$SEGMENT_BYTES" \
            --retention-ms -1 >/dev/null
        before=$(cpu_ticks)
        out=$("$FJORD" bench produce --topic "$topic" --records "$RECORDS" --keys "$KEYS" --json \
            --log-level warn)
        # The compactor catches up on what the run closed: its CPU counts.
        sleep 3
        after=$(cpu_ticks)
        line=$(python3 - "$out" "$before" "$after" "$TICKS" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
print(f"{r['mb_per_sec']:.1f} {cpu / (r['bytes'] / 1e9):.2f}")
PY
)
        size=$(size_of "$topic")
        echo "run $run, $policy: $(echo "$line" | cut -d' ' -f1) MB/s, broker $(echo "$line" | cut -d' ' -f2) CPU-s/GB, topic size $((size / 1000000)) MB"
        RESULTS[$policy]+="$line $size;"
        "$FJORD" topic delete "$topic" >/dev/null
    done
done

section "summary (medians of $RUNS runs each)"
python3 - "${RESULTS[compact]}" "${RESULTS[delete]}" <<'PY'
import statistics, sys
def parse(s):
    rows = [list(map(float, r.split())) for r in s.strip(';').split(';')]
    return [statistics.median(c) for c in zip(*rows)]
c, d = parse(sys.argv[1]), parse(sys.argv[2])
print(f"produce into a compacted topic, compactor running: {c[0]:.1f} MB/s, broker {c[1]:.2f} CPU-s/GB, size {c[2]/1e6:.1f} MB")
print(f"produce into the same topic, compaction off:      {d[0]:.1f} MB/s, broker {d[1]:.2f} CPU-s/GB, size {d[2]/1e6:.1f} MB")
print(f"ratio compacted / off: throughput {c[0]/d[0]:.2f}x, CPU per GB {c[1]/d[1]:.2f}x, size {c[2]/d[2]:.3f}x")
PY
