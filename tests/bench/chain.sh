#!/usr/bin/env bash
# The chained scenario next to S1, without the shared harness: the bench's
# nginx backend (../shared/bench/backend/nginx.conf.in) on 127.0.0.1:9111,
# the Release gateway with tests/bench/target.sh's config, and wrk against
#   S1     /dashboard/1   3 independent calls
#   chain  /chain/1       user, then orders on {user.id}, then a foreach
#                         over the 8 orders (/b/{item.items.0}): 10 calls
# Prints requests/s and the gateway's CPU µs per request and per backend
# call (utime+stime from /proc/PID/stat over the measured run).
# usage: tests/bench/chain.sh [seconds] [connections]
# env:   GATEWAY_BIN (another build, e.g. main's: set ONLY_S1=1 when its
#        config has no chain), BENCH_DIR (default <repo>/../shared/bench)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
bench=${BENCH_DIR:-$here/../shared/bench}
secs=${1:-5}
conns=${2:-32}
port_be=9111
port_gw=${PORT:-8099}
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
cmake -S "$here" -B "$here/build-release" -DCMAKE_BUILD_TYPE=Release -DGATEWAY_BUILD_TESTS=OFF >/dev/null
cmake --build "$here/build-release" -j 2 --target gateway >/dev/null
mkdir -p "$work/backend"
sed -e "s#@PREFIX@#$work/backend#g" -e "s#@LISTEN@#127.0.0.1:$port_be#g" \
    "$bench/backend/nginx.conf.in" >"$work/backend/nginx.conf"
nginx -p "$work/backend" -e "$work/backend/error.log" -c "$work/backend/nginx.conf" \
    -g 'daemon off;' &
pids+=($!)
PORT=$port_gw BACKEND=http://127.0.0.1:$port_be BENCH_TMP=$work GATEWAY_WORKERS=${GATEWAY_WORKERS:-1} \
    "$here/tests/bench/target.sh" >"$work/gw.log" 2>&1 &
gw=$!
pids+=($gw)
for _ in $(seq 100); do curl -sf "127.0.0.1:$port_gw/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "127.0.0.1:$port_gw/dashboard/1" >/dev/null || { cat "$work/gw.log"; exit 1; }
ticks() { awk '{ print $14 + $15 }' "/proc/$gw/stat"; }
hz=$(getconf CLK_TCK)
run() { # name path calls
    wrk -t1 -c"$conns" -d1s "http://127.0.0.1:$port_gw$2" >/dev/null
    local t0 out reqs t1
    t0=$(ticks)
    out=$(wrk -t1 -c"$conns" -d"${secs}s" "http://127.0.0.1:$port_gw$2")
    t1=$(ticks)
    reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
    awk -v n="$1" -v r="$reqs" -v s="$secs" -v dt=$((t1 - t0)) -v hz="$hz" -v c="$3" 'BEGIN {
        us = dt / hz * 1e6 / r
        printf "%-6s %8.0f req/s  %7.1f CPU us/req  %6.1f CPU us per backend call\n", n, r / s, us, us / c }'
}
run S1 /dashboard/1 3
[ -n "${ONLY_S1:-}" ] || run chain /chain/1 10
