#!/usr/bin/env bash
# The whole test suite, from a fresh clone with only cargo (and the
# machine's python3) installed. This is the README's test command and
# what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# The cross-language test drives the API from Python's grpcio; install it
# if it is missing (quietly, into the user's site-packages when not root).
if ! python3 -c 'import grpc, grpc_tools, grpc_status' 2>/dev/null; then
  echo "== installing grpcio, grpcio-tools and grpcio-status for the Python API test"
  python3 -m pip install --quiet --disable-pip-version-check grpcio grpcio-tools grpcio-status
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo test"
cargo test --workspace
