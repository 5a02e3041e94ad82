#!/usr/bin/env bash
# Runs the cargo-fuzz targets under fuzz/ (libFuzzer + AddressSanitizer):
#   decode_image    any bytes through probe/decode/decode_at_least
#   pipeline_json   any bytes as a pipeline definition, then validation and planning
#   dag_validation  arbitrary step graphs checked against a reference judgement
# Usage: scripts/fuzz.sh [seconds per target] [target...]
# The test suite runs 20 s per target; a longer hunt is e.g. `scripts/fuzz.sh 3600`.
# The corpus grows in the cache (a later run starts where the last stopped);
# a crash leaves its input under fuzz/artifacts/<target>/ and fails the run with
# the command that replays it. Turn each crash into a regression test next to the
# code it broke, then fix it.
#
# cargo-fuzz needs nightly-only compiler flags (sanitizers, coverage passes); only
# the stable toolchain is installed here, so RUSTC_BOOTSTRAP=1 lets stable rustc
# accept them for this build alone.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

CARGO_FUZZ_VERSION=0.13.1
seconds="${1:-20}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(decode_image pipeline_json dag_validation)

if ! "$TOOLS_DIR/bin/cargo-fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    log "building cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS_DIR"
    CARGO_TARGET_DIR="$IMAGEFLOW_CACHE/tools-target" cargo install cargo-fuzz \
        --version "$CARGO_FUZZ_VERSION" --locked --root "$TOOLS_DIR" --quiet
fi

export RUSTC_BOOTSTRAP=1
fuzz_target_dir="$IMAGEFLOW_CACHE/fuzz-target"
log "building the fuzz targets (instrumented, release)"
cargo fuzz build --fuzz-dir fuzz --target-dir "$fuzz_target_dir"

failed=()
for target in "${targets[@]}"; do
    corpus="$IMAGEFLOW_CACHE/fuzz-corpus/$target"
    artifacts="$REPO_ROOT/fuzz/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    seeds=()
    [ -d "fuzz/seeds/$target" ] && seeds=("fuzz/seeds/$target")
    log "fuzzing $target for ${seconds}s (corpus: $(find "$corpus" -type f | wc -l) inputs)"
    if ! cargo fuzz run --fuzz-dir fuzz --target-dir "$fuzz_target_dir" "$target" \
        "$corpus" "${seeds[@]}" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 2>"$artifacts/last-run.log"; then
        tail -n 40 "$artifacts/last-run.log" >&2
        crash="$(sed -n 's/.*Test unit written to //p' "$artifacts/last-run.log" | tail -n 1)"
        log "$target found a failure; replay: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz $target ${crash:-<artifact>}"
        failed+=("$target")
        continue
    fi
    grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$artifacts/last-run.log" \
        | sed "s/^/  $target /" >&2 || true
    rm -f "$artifacts/last-run.log"
done
[ "${#failed[@]}" -eq 0 ] || die "fuzzing found failures in: ${failed[*]}"
log "no failures in ${targets[*]} (${seconds}s each)"
