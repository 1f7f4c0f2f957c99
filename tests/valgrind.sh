#!/usr/bin/env bash
# Runs part of the integration suite with the gateway under valgrind memcheck
# (issue 6) and fails on any report: an invalid read or write, a use of an
# uninitialised value, a bad free, or a definite leak.
#
# Usage: tests/valgrind.sh [BUILD_DIR]   (default build/, a plain build: no
# sanitizer, valgrind cannot run an ASan/TSan binary)
#
# How: the integration programs take the gateway's path as argv[1] and start
# it with posix_spawn; we hand them a wrapper script that execs valgrind on
# the real binary (same PID, so the harness's SIGTERM reaches it). A report
# makes the gateway exit 99 (--error-exitcode), which the harness's
# h_env_stop turns into a failed teardown; independently of that, every
# valgrind log is checked here for a non-zero error summary, so a report in a
# process whose exit status a test does not look at still fails the run.
#
# The coroutine stacks are registered with valgrind (core/coro.c,
# VALGRIND_STACK_REGISTER), so stack switches are not reported.
# tests/valgrind.supp holds suppressions for reports that are not ours (each
# entry says why); keep it empty unless a library is at fault.
#
# Programs: every integration program (about a minute in all on 2 cores);
# VALGRIND_TESTS="gateway load" picks some. VALGRIND_KEEP=1 keeps the logs.
#
# The tests' upper time bounds (and the harness's waits) are multiplied by
# GATEWAY_TEST_TIME_SCALE (default here 10): a gateway under memcheck is many
# times slower, and a slow run must not fail a correct gateway.
set -euo pipefail
export GATEWAY_TEST_TIME_SCALE=${GATEWAY_TEST_TIME_SCALE:-10}
cd "$(dirname "$0")/.."
build=${1:-build}
if [ -n "${VALGRIND_TESTS:-}" ]; then
    read -r -a tests <<<"$VALGRIND_TESTS"
else
    tests=()
    for f in "$build"/tests/integration/itest_test_*; do
        [ -x "$f" ] && tests+=("${f##*/itest_test_}")
    done
fi
[ "${#tests[@]}" -gt 0 ] || { echo "valgrind.sh: no integration programs in $build" >&2; exit 1; }

command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind is not installed" >&2; exit 1; }
gateway=$(realpath "$build/gateway")
mock=$(realpath "$build/tests/mock_backend")
supp=$(realpath tests/valgrind.supp)
logs=$(mktemp -d /tmp/gw-valgrind-XXXXXX)
wrapper=$logs/gateway-under-valgrind
cat >"$wrapper" <<WRAP
#!/bin/sh
exec valgrind --quiet --tool=memcheck --error-exitcode=99 --leak-check=full \\
  --errors-for-leak-kinds=definite --show-leak-kinds=definite --track-origins=yes \\
  --suppressions=$supp --log-file=$logs/vg.%p.log "$gateway" "\$@"
WRAP
chmod +x "$wrapper"

status=0
for t in "${tests[@]}"; do
    bin=$build/tests/integration/itest_test_$t
    [ -x "$bin" ] || { echo "valgrind.sh: $bin missing (build first)" >&2; exit 1; }
    start=$SECONDS
    if "$bin" "$wrapper" "$mock" >"$logs/$t.out" 2>&1; then
        echo "valgrind.sh: $t passed ($((SECONDS - start)) s)"
    else
        echo "valgrind.sh: $t FAILED under valgrind ($((SECONDS - start)) s):"
        tail -n 60 "$logs/$t.out"
        status=1
    fi
done

# Any log with content is a report (--quiet leaves clean runs empty).
nlogs=0
for f in "$logs"/vg.*.log; do
    [ -e "$f" ] || continue
    nlogs=$((nlogs + 1))
    if [ -s "$f" ]; then
        echo "valgrind.sh: report in $f:"
        cat "$f"
        status=1
    fi
done
if [ "$nlogs" -eq 0 ]; then
    echo "valgrind.sh: no gateway ran under valgrind" >&2
    status=1
fi
echo "valgrind.sh: $nlogs gateway processes checked, $([ "$status" -eq 0 ] && echo "no report" || echo "FAILED")"
if [ "$status" -eq 0 ] && [ -z "${VALGRIND_KEEP:-}" ]; then
    rm -rf "$logs"
else
    echo "valgrind.sh: logs kept in $logs"
fi
exit "$status"
