#!/usr/bin/env bash
# How `__consumer_offsets` grows with commits, and what a coordinator's
# replay of it costs after a restart: `fjord bench commit` makes N commits
# of one group on one local broker, then the script reports the offsets
# topic's disk usage and segment files, restarts the broker, and times the
# first request that loads the group (the broker's "loaded consumer
# groups" line gives the replay's own ms and bytes).
#
# Runs the broker of this tree, once with the default offsets segment size
# (100 MiB: a segment is compacted only once it is closed, as in Kafka)
# and once with FJORD_BENCH_OFFSETS_SEGMENT_BYTES; and, if FJORD_BENCH_OLD
# names a previous `fjord` binary, that one too (with its defaults) as the
# before-and-after reference. Commits are made by this tree's CLI in every
# case (the gRPC contract is the same).
#
# Usage: scripts/bench-offsets.sh   (honours CARGO_TARGET_DIR). Scale with:
#   FJORD_BENCH_COMMITS                 commits of the group (200000)
#   FJORD_BENCH_COMMIT_CONCURRENCY      commits in flight (8)
#   FJORD_BENCH_OFFSETS_SEGMENT_BYTES   the small segment size (1048576)
#   FJORD_BENCH_OLD                     a previous fjord binary (unset: skipped)
# Everything it starts is stopped, and its data removed, when it exits.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
COMMITS=${FJORD_BENCH_COMMITS:-200000}
CONCURRENCY=${FJORD_BENCH_COMMIT_CONCURRENCY:-8}
SMALL=${FJORD_BENCH_OFFSETS_SEGMENT_BYTES:-1048576}
OLD=${FJORD_BENCH_OLD:-}

# shellcheck source=scripts/bench-common.sh
. "$ROOT/scripts/bench-common.sh"

section "build"
cargo build --release --bin fjord 2>&1 | tail -n 1
FJORD="$TARGET/release/fjord"
mkdir -p "$ROOT/target"
WORK=$(mktemp -d "$ROOT/target/bench.XXXXXX")
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown), cpus: $(nproc), load: $(cut -d' ' -f1-3 /proc/loadavg)"

# start BIN DIR [BROKER FLAGS..]: a broker with info logs (for the load line).
start() {
    local bin=$1 dir=$2
    shift 2
    "$bin" broker --listen 127.0.0.1:0 --data-dir "$dir/data" --log-level info \
        --maintenance-interval 1s "$@" >"$dir/broker.out" 2>>"$dir/broker.log" &
    BROKER_PID=$!
    track "$BROKER_PID"
    ADDR=
    for _ in $(seq 300); do
        ADDR=$(sed -n 's/^fjord broker [0-9]* listening on //p' "$dir/broker.out")
        [ -n "$ADDR" ] && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || { tail -n 20 "$dir/broker.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "the broker did not report its address" >&2
    exit 1
}

# offsets_usage DIR: disk blocks (KiB) and .log files of the offsets topic.
offsets_usage() {
    local d="$1/data/topics/__consumer_offsets"
    printf '%s KiB on disk in %s segment files' "$(du -sk "$d" | cut -f1)" \
        "$(find "$d" -name '*.log' | wc -l)"
}

summary=()
# case LABEL BIN [BROKER FLAGS..]
case_() {
    local label=$1 bin=$2
    shift 2
    local dir="$WORK/$label"
    mkdir -p "$dir"
    section "$label: $(basename "$bin") broker $*"
    start "$bin" "$dir" "$@"
    export FJORD_BROKER=$ADDR
    "$FJORD" topic create t -p 1 >/dev/null
    seq 100 | "$FJORD" publish t >/dev/null
    run "$FJORD" bench commit --group g --topic t --commits "$COMMITS" --concurrency "$CONCURRENCY" \
        | tee "$dir/commit.out"
    # Closed segments are compacted at the next maintenance passes.
    sleep 5
    local usage
    usage=$(offsets_usage "$dir")
    echo "__consumer_offsets: $usage"
    stop_pid "$BROKER_PID"
    start "$bin" "$dir" "$@"
    export FJORD_BROKER=$ADDR
    local t0 t1
    t0=$(date +%s%N)
    "$FJORD" group describe g >/dev/null
    t1=$(date +%s%N)
    local load
    load=$(grep 'loaded consumer groups' "$dir/broker.log" | tail -n 1 | grep -o 'ms=[0-9]*' || echo 'ms=?')
    echo "restart: first group describe took $(((t1 - t0) / 1000000)) ms; replay $load"
    stop_pid "$BROKER_PID"
    summary+=("$label: $(grep -o '[0-9]* commits/s' "$dir/commit.out"); $usage; replay $load")
}

case_ "this tree, default segments" "$FJORD"
case_ "this tree, $SMALL-byte offsets segments" "$FJORD" --offsets-segment-bytes "$SMALL"
if [ -n "$OLD" ]; then
    case_ "previous binary" "$OLD"
fi

section "summary ($COMMITS commits of one group, $CONCURRENCY in flight)"
printf '%s\n' "${summary[@]}"
