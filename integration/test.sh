#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit + end-to-end tests against real
# components (docker-registry, skopeo, oras-py, containerd, runc, the docker CLI),
# and a tiny run of the benchmark so it never rots.
set -euo pipefail
cd "$(dirname "$0")/.."
integration/setup.sh
export MODELPACK_TEST_PYTHON="$PWD/target/venv/bin/python"
# Incremental caches for the workspace crates would double their size on disk; CI builds once.
export CARGO_INCREMENTAL=0
# Snapshot tests (insta) compare only; a deliberate change is accepted locally with `cargo insta review`.
export INSTA_UPDATE=no

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Tests start their own services on 127.0.0.1; two at a time keeps a 2-core machine responsive.
cargo test --workspace --no-fail-fast -- --test-threads 2
if [ -x integration/bench.sh ]; then
  BENCH_PROFILE=debug integration/bench.sh --size 64M --runs 1 --out target/bench-ci.md
fi
echo "test.sh: all checks passed"
