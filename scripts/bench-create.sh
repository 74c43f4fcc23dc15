#!/usr/bin/env bash
# Times creating one many-partition topic on a fresh single broker, the
# cost an operator pays for `fjord topic create --partitions 4096`, with
# the page cache dropped before each run (when run as root) so a run does
# not inherit the previous one's pages. Reports each run, the median, and
# the page cache the run left behind.
#
# Usage: scripts/bench-create.sh [FJORD [FJORD_B]]
#   FJORD    the binary to time (default: a release build of this tree)
#   FJORD_B  a second binary: the runs alternate A, B, A, B, ... and the
#            median ratio is printed (an A/B of two builds)
#   FJORD_BENCH_PARTITIONS  partitions of the topic (4096)
#   FJORD_BENCH_RUNS        runs per binary (3)
# Everything it starts is stopped, and its scratch directory (under
# target/) removed, when it exits, however it exits.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PARTITIONS=${FJORD_BENCH_PARTITIONS:-4096}
RUNS=${FJORD_BENCH_RUNS:-3}

# shellcheck source=scripts/bench-common.sh
. "$ROOT/scripts/bench-common.sh"

A=${1:-}
B=${2:-}
if [ -z "$A" ]; then
    section "build"
    run cargo build --release --quiet --bin fjord
    A=$TARGET/release/fjord
fi
mkdir -p "$TARGET"
WORK=$(mktemp -d "$TARGET/bench-create.XXXXXX")

# one FJORD: prints the seconds one create took.
one() {
    local fjord=$1 dir
    dir=$(mktemp -d "$WORK/run.XXXXXX")
    sync
    if [ "$(id -u)" = 0 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
    start_broker "$fjord" "$dir"
    local start end
    start=$(date +%s.%N)
    "$fjord" --broker "$ADDR" --timeout 300s topic create big --partitions "$PARTITIONS" >/dev/null
    end=$(date +%s.%N)
    local cached
    cached=$(awk '/^Cached:/ {print int($2 / 1024)}' /proc/meminfo)
    stop_pid "$BROKER_PID"
    rm -rf "$dir"
    python3 -c "print(f'{$end - $start:.2f} {$cached}')"
}

median() { python3 -c 'import statistics, sys; print(f"{statistics.median(map(float, sys.argv[1:])):.2f}")' "$@"; }

section "create a topic of $PARTITIONS partitions, $RUNS runs"
a_runs=() b_runs=()
for i in $(seq "$RUNS"); do
    read -r t c < <(one "$A"); a_runs+=("$t"); echo "A run $i: $t s, page cache after ${c} MiB  ($A)"
    if [ -n "$B" ]; then
        read -r t c < <(one "$B"); b_runs+=("$t"); echo "B run $i: $t s, page cache after ${c} MiB  ($B)"
    fi
done
ma=$(median "${a_runs[@]}")
echo "A median: $ma s"
if [ -n "$B" ]; then
    mb=$(median "${b_runs[@]}")
    echo "B median: $mb s"
    python3 -c "print(f'A/B: {$ma / $mb:.2f}x')"
fi
