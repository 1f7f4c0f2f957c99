#!/bin/sh
# Sizes a reader can hold: no gateway/ or core/ .c file over 600 lines, no
# function over 70 lines (from the line of its name to its closing brace;
# the project's style puts a function's braces alone at the start of a
# line). Usage: tests/lint/sizes.sh [repo root]
root=${1:-$(dirname "$0")/../..}
cd "$root" || exit 2
awk '
FNR == 1 { if (lines > 600) { print prev ": " lines " lines (at most 600)"; bad = 1 }
           name = ""; start = 0 }
{ lines = FNR; prev = FILENAME }
/^[A-Za-z_].*\(/ && !/;$/ && !/^#/ { name = $0; at = FNR }
/^\{$/ && name != "" { start = at }
/^\}/ && start {
    if (FNR - start + 1 > 70) {
        printf "%s:%d: %d lines (at most 70): %s\n", FILENAME, start, FNR - start + 1, name
        bad = 1
    }
    start = 0; name = ""
}
END { if (lines > 600) { print prev ": " lines " lines (at most 600)"; bad = 1 }
      exit bad }
' gateway/*.c core/*.c
