#!/usr/bin/env bash
# Runs prewarm's fuzz targets one after another, niced, each for $SECONDS_PER_TARGET
# (default 600) seconds, logging libFuzzer's output to fuzz/logs/<target>.log.
#   fuzz/run.sh                      # every target
#   fuzz/run.sh pack_chunk events    # some
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). On a stable toolchain cargo-fuzz's
# -Z flags need RUSTC_BOOTSTRAP=1 (set here); AddressSanitizer works that way.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1 CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
secs="${SECONDS_PER_TARGET:-600}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(envelope_manifest pack_chunk data_plane pack_channel history importers events)
fi
mkdir -p logs
for t in "${targets[@]}"; do
  features=()
  [ "$t" = events ] && features=(--features events)
  mkdir -p "corpus/$t"
  nice -n 10 cargo fuzz run -a "${features[@]}" "$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 \
    2>&1 | tee "logs/$t.log" | grep -E '^#[0-9]+.*(pulse|DONE|NEW)|ERROR|panicked|SUMMARY' | tail -n 5 \
    || echo "$t: stopped early (a finding?): see logs/$t.log and artifacts/$t/"
done
