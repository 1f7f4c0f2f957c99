#!/usr/bin/env bash
# The gateway as a target of ../shared/bench/run.sh: writes a config for the
# bench routes from $PORT and $BACKEND into $BENCH_TMP and execs the Release
# build (tests/bench/run.sh builds it first). GATEWAY_CLIENT=curl|native|auto
# (default auto) picks the upstream transport, GATEWAY_WORKERS the workers.
# The idle pool is 1024 per origin and worker, like the nginx-lua peer's
# `keepalive 1024` (S3 keeps ~768 backend calls in flight).
# GATEWAY_CACHE_TTL_MS=N gives the /dashboard backends "cache": {"ttl_ms": N}:
# S1 then measures the cache-hit path (every request served from the store),
#   tests/bench/run.sh --target "cgw-cache=GATEWAY_CACHE_TTL_MS=60000 exec $PWD/tests/bench/target.sh"
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${GATEWAY_BIN:-$here/build-release/gateway}
conf=${BENCH_TMP:-/tmp}/gateway-bench.json
b=${BACKEND:-http://127.0.0.1:9101}
cache=""
if [[ -n ${GATEWAY_CACHE_TTL_MS:-} ]]; then cache=", \"cache\": { \"ttl_ms\": $GATEWAY_CACHE_TTL_MS }"; fi
cat > "$conf" <<JSON
{
  "server": { "listen": "127.0.0.1:${PORT:-8080}", "workers": ${GATEWAY_WORKERS:-0},
              "connection_timeout_s": 30 },
  "defaults": { "timeout_ms": 1000, "backend_timeout_ms": 1000,
                "client": "${GATEWAY_CLIENT:-auto}" },
  "access_log": { "path": "off" },
  "upstream": { "max_idle_per_origin": 1024 },
  "endpoints": [
    { "name": "dashboard", "path": "/dashboard/{id}", "backends": [
      { "name": "user", "url": "$b/users/{id}", "key": "user"$cache },
      { "name": "orders", "url": "$b/orders/{id}", "key": "orders"$cache },
      { "name": "recs", "url": "$b/recs/{id}", "key": "recs"$cache } ] },
    { "name": "dashboard-slow", "path": "/dashboard-slow/{id}", "backends": [
      { "name": "user", "url": "$b/slow/20/{id}", "key": "user" },
      { "name": "orders", "url": "$b/orders/{id}", "key": "orders" },
      { "name": "recs", "url": "$b/recs/{id}", "key": "recs" } ] },
    { "name": "wide", "path": "/wide/{n}", "backends": [
      { "name": "b1", "url": "$b/b/1", "key": "b1" }, { "name": "b2", "url": "$b/b/2", "key": "b2" },
      { "name": "b3", "url": "$b/b/3", "key": "b3" }, { "name": "b4", "url": "$b/b/4", "key": "b4" },
      { "name": "b5", "url": "$b/b/5", "key": "b5" }, { "name": "b6", "url": "$b/b/6", "key": "b6" },
      { "name": "b7", "url": "$b/b/7", "key": "b7" }, { "name": "b8", "url": "$b/b/8", "key": "b8" } ] },
    { "name": "failfast", "path": "/failfast", "backends": [
      { "name": "fail", "url": "$b/fail/500", "key": "fail" },
      { "name": "slow", "url": "$b/slow/500/x", "key": "slow" } ] },
$( [ -n "${ONLY_S1:-}" ] || cat <<'CHAIN'
    { "name": "chain", "path": "/chain/{id}", "backends": [
      { "name": "user", "url": "BACKEND/users/{id}", "key": "user" },
      { "name": "orders", "url": "BACKEND/orders/{user.id}", "key": "orders" },
      { "name": "items", "foreach": "orders", "url": "BACKEND/b/{item.items.0}", "key": "items" } ] },
CHAIN
)
    { "name": "deadline", "path": "/deadline", "timeout_ms": 100, "backends": [
      { "name": "slow", "url": "$b/slow/2000/x", "key": "slow", "timeout_ms": 5000 },
      { "name": "user", "url": "$b/users/1", "key": "user" } ] }
  ]
}
JSON
sed -i "s#BACKEND/#$b/#g" "$conf"
exec "$bin" -c "$conf"
