#!/usr/bin/env bash
# The README's run command: installs dependencies (tests/setup.sh; run as
# root when packages are missing), builds into build/, starts the demo
# backend (build/tests/mock_backend) on 127.0.0.1:9001 and runs the gateway
# in the foreground with conf/gateway.json. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

tests/setup.sh
cmake -S . -B build
cmake --build build -j "$(nproc)"

mock_out=$(mktemp)
build/tests/mock_backend --port 9001 >"$mock_out" &
mock_pid=$!
# The gateway runs as a foreground child rather than through exec: exec would
# replace this shell and drop the trap, leaving the backend running.
cleanup() {
    kill "$mock_pid" 2>/dev/null || true
    wait "$mock_pid" 2>/dev/null || true
    rm -f "$mock_out"
}
trap cleanup EXIT
# The backend prints "port 9001" once it listens.
for _ in $(seq 50); do
    grep -q '^port ' "$mock_out" && break
    if ! kill -0 "$mock_pid" 2>/dev/null; then
        echo "demo: the demo backend did not start (is 127.0.0.1:9001 in use?)" >&2
        exit 1
    fi
    sleep 0.1
done

cat <<'HINT'

Demo backend on 127.0.0.1:9001, gateway on :8080. Try, in another terminal:
  curl -i localhost:8080/api/dashboard/42      # user + orders + recs, merged
  curl -i localhost:8080/api/users/7
  curl -i localhost:8080/api/orders/42        # user, then its orders, then a product per order
  curl -i localhost:8080/api/slow/1            # a slow backend vs. the deadline
  curl -i localhost:8080/api/flaky/1           # an optional backend that fails
  curl -i -H 'X-Request-Timeout-Ms: 50' localhost:8080/api/slow/1
  curl -s -X POST 'localhost:9001/_mode?prefix=/users&status=500'   # break users
  curl -s -X POST 'localhost:9001/_mode?prefix=/users&clear=1'      # and repair
Ctrl-C stops the gateway and the demo backend.

HINT
build/gateway -c conf/gateway.json
