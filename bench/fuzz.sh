#!/bin/bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for a bounded time and
# prints, per target: executions, executions per second, corpus size and
# crashes. Not a test; CI runs it briefly (.ci/run), longer runs are by hand.
#
# Usage: bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 60, all targets)
# Environment:
#   FUZZ_PROFILE=release|dev   release (default): opt-level 3, debug assertions on;
#                              dev: opt-level 1, no debug info, debug assertions
#                              on; half the build CPU (CI smoke runs)
#   FUZZ_SANITIZER=address|none   default address (AddressSanitizer)
#   FUZZ_RSS_MB=2048           libFuzzer's memory limit per target
#   FUZZ_JOBS=1                parallel fuzzing processes per target
#
# Only stable Rust is assumed: cargo-fuzz passes nightly flags (-Z) to rustc,
# so RUSTC_BOOTSTRAP=1 lets the stable compiler accept them (docs/decisions.md).
# New inputs go to fuzz/work/<target>/ (not committed); the committed seeds in
# fuzz/corpus/<target>/ are read, never written. A crash leaves its input in
# fuzz/artifacts/<target>/ and makes the script exit 1: minimise it
# (`cargo fuzz tmin <target> <file>`), fix the bug, and commit the input to
# fuzz/regressions/<target>/ (the unit tests replay that directory).
set -euo pipefail

SECONDS_PER_TARGET=${1:-60}
shift || true
REPO=$(cd "$(dirname "$0")/.." && pwd)
PROFILE=${FUZZ_PROFILE:-release}
SANITIZER=${FUZZ_SANITIZER:-address}
RSS_MB=${FUZZ_RSS_MB:-2048}
JOBS=${FUZZ_JOBS:-1}
export RUSTC_BOOTSTRAP=1

command -v cargo-fuzz >/dev/null || {
    echo "bench/fuzz.sh: cargo-fuzz is not installed (cargo install cargo-fuzz --version 0.13.2 --locked)" >&2
    exit 1
}
cd "$REPO/fuzz"
if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cargo fuzz list)
fi
profile_flag=()
if [ "$PROFILE" = dev ]; then
    profile_flag=(--dev)
    # Measured cold on this 2-core VM: opt-level 0 builds with 310 s of CPU
    # but runs the config and http targets at 1-12 executions a second;
    # opt-level 1 builds with 500 s and runs within 30% of release (which
    # takes ~940 s). No debug info: a quarter less build time; panics still
    # name file:line.
    export CARGO_PROFILE_DEV_OPT_LEVEL=1 CARGO_PROFILE_DEV_DEBUG=0
fi
# -jobs makes libFuzzer fork workers that log to fuzz-<n>.log; one process
# logs to stderr.
jobs_flag=()
[ "$JOBS" -gt 1 ] && jobs_flag=(-jobs="$JOBS" -workers="$JOBS")

started=$SECONDS
build_log=$(mktemp)
build() {
    cargo fuzz build "${profile_flag[@]}" --sanitizer "$SANITIZER" "$@" >"$build_log" 2>&1 || {
        cat "$build_log" >&2
        exit 2
    }
}
# `cargo fuzz build` builds one target, or all of them when none is named.
if [ $# -gt 0 ]; then
    for t in "${TARGETS[@]}"; do build "$t"; done
else
    build
fi
rm -f "$build_log"
BIN_DIR=${CARGO_TARGET_DIR:-target}/$(rustc -vV | awk '/^host:/ { print $2 }')/$([ "$PROFILE" = dev ] && echo debug || echo release)
echo "build ($PROFILE, sanitizer $SANITIZER): $((SECONDS - started)) s"

printf '%-8s %12s %10s %8s %8s %8s %s\n' target executions exec/s corpus cov peak_MB crashes
failed=0
for t in "${TARGETS[@]}"; do
    mkdir -p "work/$t" "corpus/$t" "artifacts/$t"
    before=$(ls "artifacts/$t" | wc -l)
    log=$(mktemp)
    # -timeout: one input taking over 10 s is a hang, reported as a crash.
    set +e
    # The binary built above, run directly: `cargo fuzz run` would rebuild
    # whenever a source file changed meanwhile. libFuzzer first runs every
    # input already in the corpus, which -max_total_time does not bound (a
    # large work/ corpus on an unoptimised build takes minutes): `timeout`
    # is the hard bound, and its 124 is not a crash.
    timeout --signal=INT --kill-after=10 "$((SECONDS_PER_TARGET * 2 + 30))" \
        "$BIN_DIR/$t" -artifact_prefix="artifacts/$t/" "work/$t" "corpus/$t" \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb="$RSS_MB" -timeout=10 \
        -print_final_stats=1 "${jobs_flag[@]}" >"$log" 2>&1
    status=$?
    if [ "$status" -eq 124 ]; then
        echo "$t: stopped by the hard time limit while replaying its corpus" >&2
        status=0
    fi
    if [ "$JOBS" -gt 1 ]; then cat fuzz-*.log >>"$log" 2>/dev/null; rm -f fuzz-*.log; fi
    set -e
    execs=$(awk -F: '/stat::number_of_executed_units/ { s += $NF } END { print s + 0 }' "$log")
    rate=$(awk -F: '/stat::average_exec_per_sec/ { s += $NF } END { print s + 0 }' "$log")
    peak=$(awk -F: '/stat::peak_rss_mb/ { if ($NF + 0 > m) m = $NF + 0 } END { print m + 0 }' "$log")
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{ print $2 }')
    corpus=$(ls "work/$t" | wc -l)
    crashes=$(( $(ls "artifacts/$t" | wc -l) - before ))
    printf '%-8s %12s %10s %8s %8s %8s %s\n' "$t" "$execs" "$rate" "$corpus" "${cov:-?}" "$peak" "$crashes"
    if [ "$crashes" -gt 0 ] || [ "$status" -ne 0 ]; then
        failed=1
        echo "--- $t: exit $status; new artifacts:" >&2
        ls -t "artifacts/$t" | head -"$((crashes > 0 ? crashes : 1))" | sed "s|^|    fuzz/artifacts/$t/|" >&2 || true
        grep -E "panicked|ERROR: |SUMMARY" "$log" | head -5 >&2 || true
    fi
    rm -f "$log"
done
echo "total: $((SECONDS - started)) s"
exit "$failed"
