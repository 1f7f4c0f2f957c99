#!/usr/bin/env bash
# The README's run command: installs dependencies (tests/setup.sh; run as
# root when packages are missing), builds into build/, starts two demo
# backend instances (build/tests/mock_backend) on 127.0.0.1:9001 and :9002
# (the upstream group "users" of conf/gateway.json; 9001 also serves every
# plain demo backend) and runs the gateway in the foreground with
# conf/gateway.json. Each instance's PID is in build/demo-backend-PORT.pid,
# so the README can stop one (kill $(cat build/demo-backend-9002.pid)) and
# start it again (see HINT). Ctrl-C stops the gateway and every instance
# whose PID file names a running mock_backend.
set -euo pipefail
cd "$(dirname "$0")/.."

tests/setup.sh
cmake -S . -B build
cmake --build build -j "$(nproc)"

PORTS=(9001 9002)
outs=()

# The PID in build/demo-backend-PORT.pid, when it is a running mock_backend
# (a stale file may name a process that is not ours any more).
our_pid() {
    local f="build/demo-backend-$1.pid" pid
    [[ -r $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q 'mock_backend' || return 1
    echo "$pid"
}

# The gateway runs as a foreground child rather than through exec: exec would
# replace this shell and drop the trap, leaving the backends running.
cleanup() {
    local port pid
    for port in "${PORTS[@]}"; do
        if pid=$(our_pid "$port"); then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
        rm -f "build/demo-backend-$port.pid"
    done
    rm -f "${outs[@]}"
}
trap cleanup EXIT

# Starts an instance on PORT and waits for its "port N" line.
start_backend() {
    local port=$1 out pid
    out=$(mktemp)
    outs+=("$out")
    build/tests/mock_backend --port "$port" >"$out" &
    pid=$!
    echo "$pid" >"build/demo-backend-$port.pid"
    for _ in $(seq 50); do
        grep -q '^port ' "$out" && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "demo: the demo backend did not start (is 127.0.0.1:$port in use?)" >&2
            exit 1
        fi
        sleep 0.1
    done
}

for port in "${PORTS[@]}"; do
    start_backend "$port"
done

cat <<'HINT'

Demo backends on 127.0.0.1:9001 and :9002 (group "users"), gateway on :8080.
Try, in another terminal:
  curl -i localhost:8080/api/dashboard/42      # user + orders + recs, merged
  curl -i localhost:8080/api/users/7
  curl -i localhost:8080/api/orders/42        # user, then its orders, then a product per order
  curl -i localhost:8080/api/slow/1            # a slow backend vs. the deadline
  curl -i localhost:8080/api/flaky/1           # an optional backend that fails
  curl -i -H 'X-Request-Timeout-Ms: 50' localhost:8080/api/slow/1
  curl -s -X POST 'localhost:9001/_mode?prefix=/users&status=500'   # break users
  curl -s -X POST 'localhost:9001/_mode?prefix=/users&clear=1'      # and repair
  curl -i localhost:8080/api/pool/7            # the group: 9001 or 9002
  kill $(cat build/demo-backend-9002.pid)      # stop one instance, and start it again:
  build/tests/mock_backend --port 9002 >/dev/null & echo $! >build/demo-backend-9002.pid
  curl -i localhost:8080/api/hedged/7          # a second attempt when the first is slow
Ctrl-C stops the gateway and the demo backends.

HINT
build/gateway -c conf/gateway.json
