#!/usr/bin/env bash
# Benchmark: modelpack against the physical limits (cp, SHA-256, curl against the
# same registry) and the peers (skopeo, oras-py), side by side, medians of N runs.
#   integration/bench.sh [--size 4G] [--runs 3] [--out docs/benchmarks.md]
set -euo pipefail
cd "$(dirname "$0")/.."
integration/setup.sh
# BENCH_PROFILE=debug reuses the test build (CI's tiny run only checks the script works).
PROFILE=${BENCH_PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build -q --release -p modelpack-cli -p modelpack-snapshotter -p modelpack-e2e --bins
else
  cargo build -q -p modelpack-cli -p modelpack-snapshotter -p modelpack-e2e --bins
fi
BENCH_BIN_DIR=$PWD/target/$PROFILE exec target/venv/bin/python integration/bench.py "$@"
