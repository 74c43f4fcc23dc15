#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a while and prints, per target,
# how long it ran, how many inputs it tried and whether it found a crash.
#
#   ./scripts/fuzz.sh [SECONDS_PER_TARGET]    (default 60)
#
# cargo-fuzz needs a nightly toolchain (`rustup toolchain install nightly`);
# the suite (scripts/test.sh) does not run this. cargo-fuzz itself is
# installed by this script into ${FJORD_CACHE:-~/.cache/fjord}/cargo-fuzz if
# it is not on PATH. A crash leaves its input under fuzz/artifacts/TARGET/;
# replay it with `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...`.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
cache=${FJORD_CACHE:-$HOME/.cache/fjord}/cargo-fuzz
if ! command -v cargo-fuzz >/dev/null; then
    if [ ! -x "$cache/bin/cargo-fuzz" ]; then
        echo "fuzz.sh: installing cargo-fuzz into $cache" >&2
        cargo install --quiet --locked cargo-fuzz --root "$cache"
    fi
    export PATH="$cache/bin:$PATH"
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: a nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 2
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/fuzz}
cargo +nightly fuzz build >/dev/null 2>&1 || cargo +nightly fuzz build
status=0
for target in $(cargo +nightly fuzz list); do
    log=$(mktemp)
    start=$(date +%s)
    if cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -max_len=65536 >"$log" 2>&1; then
        result=ok
    else
        result="CRASH (see fuzz/artifacts/$target/)"
        status=1
    fi
    runs=$(grep -oE '#[0-9]+' "$log" | tail -1 | tr -d '#')
    printf '%-12s %4ss %10s inputs  %s\n' "$target" "$(( $(date +%s) - start ))" "${runs:-?}" "$result"
    [ "$result" = ok ] || tail -30 "$log" >&2
    rm -f "$log"
done
exit $status
