#!/usr/bin/env bash
# What batch compression and the idempotent producer cost and save on one
# local broker: `fjord bench produce` of the same records (1 KiB, text-like
# filler, see crates/cli/src/cmd/bench/payload.rs) without compression,
# with lz4 and with zstd, and without idempotence; the bytes each topic
# takes on disk; `fjord bench consume` of each (consumers decompress).
# The disk's 1 MiB + fdatasync rate is measured in the same run as the
# reference, since these machines are noisy.
#
# Usage: scripts/bench-compression.sh   (honours CARGO_TARGET_DIR). Scale with:
#   FJORD_BENCH_RECORDS    records of each produce run (1000000)
#   FJORD_BENCH_DISK_MIB   MiB written by the disk reference (512)
# Everything it starts is stopped, and its data removed, when it exits.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RECORDS=${FJORD_BENCH_RECORDS:-1000000}
DISK_MIB=${FJORD_BENCH_DISK_MIB:-512}

# shellcheck source=scripts/bench-common.sh
. "$ROOT/scripts/bench-common.sh"

section "build"
cargo build --release --bin fjord 2>&1 | tail -n 1
FJORD="$TARGET/release/fjord"
mkdir -p "$ROOT/target"
WORK=$(mktemp -d "$ROOT/target/bench.XXXXXX")
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown), cpus: $(nproc), load: $(cut -d' ' -f1-3 /proc/loadavg)"

section "reference: disk, 1 MiB sequential writes of random bytes ($DISK_MIB MiB each)"
python3 "$ROOT/scripts/reference.py" disk "$WORK/disk-ref" "$DISK_MIB"

section "broker"
start_broker "$FJORD" "$WORK"
echo "broker pid $BROKER_PID listening on $ADDR, flush policy: always (fsync before ack)"
export FJORD_BROKER=$ADDR

summary=()
for variant in none-at-least-once none lz4 zstd; do
    codec=${variant%%-*}
    extra=()
    [ "$variant" = none-at-least-once ] && extra=(--no-idempotence)
    topic="c-$variant"
    section "produce: $RECORDS x 1024 B, acks=all, compression $codec ${extra[*]}"
    produce=("$FJORD" bench produce --topic "$topic" --records "$RECORDS" --record-size 1024 --acks all
        --partitions 8 --compression "$codec" "${extra[@]}" --json)
    echo "\$ ${produce[*]}"
    "${produce[@]}" | tee "$WORK/produce.json"
    section "consume: $topic"
    echo "\$ $FJORD bench consume --topic $topic --json"
    "$FJORD" bench consume --topic "$topic" --json | tee "$WORK/consume.json"
    size=$("$FJORD" topic describe "$topic" --format json |
        python3 -c 'import json, sys; print(sum(p["size_bytes"] for p in json.load(sys.stdin)["partitions"]))')
    summary+=("$(python3 - "$variant" "$size" "$WORK/produce.json" "$WORK/consume.json" <<'PY'
import json, sys
variant, size = sys.argv[1], int(sys.argv[2])
p, c = (json.load(open(f)) for f in sys.argv[3:5])
print(f"{variant:<20} produce {p['mb_per_sec']:8.1f} MB/s   consume {c['mb_per_sec']:8.1f} MB/s   on disk {size / 2**20:8.1f} MiB")
PY
)")
done

section "summary (MB/s of uncompressed record bytes; disk reference above)"
printf '%s\n' "${summary[@]}"
