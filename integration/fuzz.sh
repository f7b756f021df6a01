#!/usr/bin/env bash
# Runs every cargo-fuzz (libFuzzer) target in fuzz/ for SECONDS each (default 600), one after another.
#
#   integration/fuzz.sh [SECONDS] [TARGET...]
#
# Not part of CI (the property tests in `cargo test` are); run it before a release or after touching a parser.
# Installs cargo-fuzz if missing. cargo-fuzz passes -Zsanitizer=address and other nightly-only flags; on a
# stable toolchain RUSTC_BOOTSTRAP=1 unlocks them (FUZZ_SANITIZER=none builds without a sanitizer instead).
# New corpus entries go to fuzz/target/corpus/<target> (not committed); the seeds in fuzz/corpus/<target>
# are only read. A crash leaves its input in fuzz/artifacts/<target>/ and makes this script exit non-zero.
set -euo pipefail
secs="${1:-600}"
shift || true
cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"
sanitizer="${FUZZ_SANITIZER:-address}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build -s "$sanitizer"
failed=()
for t in "${targets[@]}"; do
  work="target/corpus/$t"
  mkdir -p "$work" "corpus/$t"
  echo "== $t: ${secs}s" >&2
  # -rss_limit_mb: a parser that allocates what a header claims shows up as an out-of-memory crash.
  if ! cargo fuzz run -s "$sanitizer" "$t" "$work" "corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>"target/fuzz-$t.log"; then
    failed+=("$t")
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|SUMMARY|Test unit written" "target/fuzz-$t.log" >&2 || true
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashes in: ${failed[*]} (inputs under fuzz/artifacts/, logs under fuzz/target/fuzz-*.log)" >&2
  exit 1
fi
echo "no crashes" >&2
