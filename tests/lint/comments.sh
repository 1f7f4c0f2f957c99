#!/bin/sh
# Comments true and local: every gateway/*.c and core/*.c opens with a
# comment saying what it owns, and no source cites notes outside the
# repository (../shared, PERF-NOTES: the facts live in docs/perf.md).
# Usage: tests/lint/comments.sh [repo root]
root=${1:-$(dirname "$0")/../..}
cd "$root" || exit 2
fail=0
for f in gateway/*.c core/*.c; do
    case $(head -c 2 "$f") in
    '/*') ;;
    *) echo "$f: no top comment saying what it owns"; fail=1 ;;
    esac
done
if grep -n -e 'PERF-NOTES' -e '\.\./shared/' gateway/*.[ch] core/*.[ch] tests/core/*.c \
    tests/gateway/*.c tests/integration/*.[ch]; then
    echo "^ cites notes outside the repository: point at docs/ or README.md instead"
    fail=1
fi
[ -f docs/perf.md ] || { echo "docs/perf.md is missing"; fail=1; }
exit $fail
