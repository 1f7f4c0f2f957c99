#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan, GATEWAY_FUZZ=ON) and runs
# each for a bounded time. Fails when any target crashes, leaks, times out,
# runs out of memory, or executed no input at all (0 or an unknown number of
# runs: then nothing was fuzzed); each such input is copied to
# tests/fuzz/corpus/<target>/regress-<sha1> so that the regression tests
# (ctest -R fuzz/) replay it from then on.
#
# usage: tests/fuzz/run.sh [target...]     (default: every tests/fuzz/fuzz_*.c)
# env:   FUZZ_SECONDS    time per target (default 30)
#        FUZZ_BUILD_DIR  build directory (default <repo>/build-fuzz)
#        FUZZ_JOBS       build parallelism (default 2)
#        FUZZ_ARGS       extra libFuzzer flags
#
# Each target fuzzes a temporary copy of its corpus (new inputs land there
# and are thrown away) with the checked-in corpus as a read-only second
# directory; <target>.dict next to the source is used when present.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${FUZZ_SECONDS:-30}
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
jobs=${FUZZ_JOBS:-2}

flags="-O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all"
mkdir -p "$build"
if ! grep -q '^GATEWAY_FUZZ:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
    cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
        -DGATEWAY_FUZZ=ON -DCMAKE_C_FLAGS="$flags" >"$build/fuzz-configure.log" 2>&1 || {
        cat "$build/fuzz-configure.log" >&2
        exit 1
    }
fi
if [ ! -f "$build/tests/fuzz/Makefile" ] && [ ! -f "$build/tests/fuzz/build.ninja" ] &&
    [ ! -f "$build/tests/fuzz/cmake_install.cmake" ]; then
    echo "run.sh: $build has no tests/fuzz: does tests/CMakeLists.txt add_subdirectory(fuzz) when GATEWAY_FUZZ?" >&2
    exit 1
fi
cmake --build "$build" -j "$jobs" --target fuzz_targets >"$build/fuzz-build.log" 2>&1 || {
    tail -40 "$build/fuzz-build.log" >&2
    echo "run.sh: build failed (cmake --build $build --target fuzz_targets)" >&2
    exit 1
}

if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for src in "$here"/fuzz_*.c; do
        targets+=("$(basename "$src" .c)")
    done
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/gateway-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

failed=0
printf '%-16s %12s %8s %8s  %s\n' target runs cov ft result
for t in "${targets[@]}"; do
    bin="$build/tests/fuzz/$t"
    seeds="$here/corpus/$t"
    if [ ! -x "$bin" ]; then
        echo "run.sh: no binary $bin" >&2
        failed=1
        continue
    fi
    mkdir -p "$work/$t/corpus" "$work/$t/artifacts" "$seeds"
    cp -r "$seeds/." "$work/$t/corpus/"
    dict=()
    [ -f "$here/$t.dict" ] && dict=("-dict=$here/$t.dict")
    log="$work/$t/log"
    rc=0
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/$t/artifacts/" "${dict[@]}" ${FUZZ_ARGS:-} \
        "$work/$t/corpus" "$seeds" >"$log" 2>&1 || rc=$?
    # (|| true: a log without these lines must reach the check below, not
    # end the script through pipefail)
    runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
    [ -n "$runs" ] || runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
    result=ok
    found=0
    for a in "$work/$t/artifacts"/{crash,leak,timeout,oom}-*; do
        [ -f "$a" ] || continue
        found=1
        h=$(sha1sum "$a" | cut -c1-40)
        cp "$a" "$seeds/regress-$h"
        echo "run.sh: $t: $(basename "$a") kept as tests/fuzz/corpus/$t/regress-$h" >&2
    done
    if [ "$rc" -eq 0 ] && [ "$found" -eq 0 ] && ! [ "${runs:-0}" -gt 0 ] 2>/dev/null; then
        # exit 0 without a single input executed (a flag that ends the run
        # early, an empty corpus and no time, a log format we do not know):
        # nothing was checked, which must not pass
        result="FAILED (executed ${runs:-an unknown number of} inputs)"
        failed=1
        tail -20 "$log" >&2
        cp "$log" "$build/$t.log"
        echo "run.sh: $t: full log in $build/$t.log" >&2
    elif [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
        result="FAILED (exit $rc)"
        failed=1
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|    #[0-9] )' "$log" | head -20 >&2 || true
        cp "$log" "$build/$t.log"
        echo "run.sh: $t: full log in $build/$t.log" >&2
    fi
    printf '%-16s %12s %8s %8s  %s\n' "$t" "${runs:-?}" "${cov:-?}" "${ft:-?}" "$result"
done
exit $failed
