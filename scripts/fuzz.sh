#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 60), with
# libFuzzer's memory limits (below), starting from the committed seeds in
# fuzz/corpus/<target>/ (new inputs go to fuzz/target/corpus/<target>/, so
# the committed seeds stay as they are). Exits non-zero if any target
# crashes, and says where the crash input is.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#   scripts/fuzz.sh build [TARGET...]   (only builds them: .ci/run builds
#                                         while the tests run)
#
# cargo-fuzz needs nightly features: RUSTC_BOOTSTRAP=1 lets the stable
# toolchain provide them.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
build_only=false
if [ "$seconds" = build ]; then
    build_only=true
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(decode recovery model ingest)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
# A freed block waits in AddressSanitizer's quarantine (256 MiB by default)
# before reuse; a smaller one keeps the RSS well under -rss_limit_mb.
export ASAN_OPTIONS="${ASAN_OPTIONS:-quarantine_size_mb=64}"

# -rss_limit_mb / -malloc_limit_mb: a damaged length field must never make a
# reader allocate by it; any single allocation over 128 MiB is a crash.
# -timeout: one input running over a minute is a hang, and a crash too.
limits=(-rss_limit_mb=512 -malloc_limit_mb=128 -timeout=60 -max_len=8192)

cd fuzz
# decode runs under AddressSanitizer, whose allocator hooks let libFuzzer
# enforce -malloc_limit_mb: that is the target where a length field read from
# damaged bytes could size an allocation. recovery, model and ingest exercise
# the engine's logic (and the crate forbids unsafe code); without a sanitizer
# they run about four times as many inputs in the same time. The two kinds
# of build go to target directories of their own (never CARGO_TARGET_DIR's),
# so neither undoes the other or waits on another build's lock.
flags_for() {
    case "$1" in
        decode) echo "--sanitizer address --target-dir $PWD/target/asan" ;;
        *) echo "--sanitizer none --target-dir $PWD/target/no-sanitizer" ;;
    esac
}

for t in "${targets[@]}"; do
    echo "fuzz: building $t ($(flags_for "$t"))"
    # shellcheck disable=SC2046 # the flags are meant to split
    cargo fuzz build $(flags_for "$t") "$t"
done
if $build_only; then
    exit 0
fi

# run_target T: fuzzes T for SECONDS, then reports; its exit status is the
# fuzzer's.
run_target() {
    local t=$1 work="target/corpus/$1" log="target/fuzz-$1.log" status=0 runs secs crash
    mkdir -p "$work" "artifacts/$t"
    # shellcheck disable=SC2046
    cargo fuzz run $(flags_for "$t") "$t" "$work" "corpus/$t" -- \
        -max_total_time="$seconds" "${limits[@]}" -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    secs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' || true)
    if [ "$status" -ne 0 ]; then
        echo "fuzz: $t FAILED (exit $status); the end of its log:"
        tail -n 40 "$log"
        crash=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -n 1 | sed 's/Test unit written to //' || true)
        if [ -n "$crash" ]; then
            echo "fuzz: $t crash input: fuzz/${crash#"$PWD"/}"
            echo "fuzz: replay it with: CHAINLOG_FUZZ_REPLAY=fuzz/${crash#"$PWD"/} cargo test --test fuzz_regressions replay"
        fi
    else
        echo "fuzz: $t ok: ${runs:-?} runs in ${secs:-?}s"
    fi
    return "$status"
}

# Each fuzzer is one process on one core: as many run at once as there are
# cores, so each gets a whole core and the run takes SECONDS per round.
cores=$(nproc 2>/dev/null || echo 1)
declare -A running=()
failed=()
# reap: waits for one fuzzer to end, and counts it failed if it did.
reap() {
    local pid="" status=0 t
    wait -n -p pid || status=$?
    for t in "${!running[@]}"; do
        if [ "${running[$t]}" = "$pid" ]; then
            [ "$status" -eq 0 ] || failed+=("$t")
            unset "running[$t]"
        fi
    done
}
for t in "${targets[@]}"; do
    while [ ${#running[@]} -ge "$cores" ]; do reap; done
    echo "fuzz: $t for ${seconds}s (seeds: fuzz/corpus/$t, log: fuzz/target/fuzz-$t.log)"
    run_target "$t" &
    running[$t]=$!
done
while [ ${#running[@]} -gt 0 ]; do reap; done

if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz: failed: ${failed[*]}"
    exit 1
fi
echo "fuzz: all targets ran ${seconds}s without a crash"
