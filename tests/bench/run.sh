#!/usr/bin/env bash
# Builds the gateway in Release and runs the shared bench harness with it
# ("cgw") beside nginx-lua with 2 workers. Extra arguments go to run.sh,
# e.g. tests/bench/run.sh --duration 4. Needs ../shared/bench/setup.sh once.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
bench=${BENCH_DIR:-$here/../shared/bench}
cmake -S "$here" -B "$here/build-release" -DCMAKE_BUILD_TYPE=Release -DGATEWAY_BUILD_TESTS=OFF >/dev/null
cmake --build "$here/build-release" -j "$(nproc)" --target gateway >/dev/null
cd "$bench"
exec ./run.sh --only cgw,nginx-lua \
    --target "cgw=exec $here/tests/bench/target.sh" \
    --target 'nginx-lua=NGINX_WORKERS=2 exec ./peers/nginx-lua/start.sh' "$@"
