#!/usr/bin/env bash
# tests/docker/image.sh: builds docker/Dockerfile with a real Docker engine
# and runs what it builds (the checks next to it parse the files only).
#
#   1. An engine: the running one, else dockerd started here (docker.io
#      installed with apt-get when missing), stopped at the end.
#   2. Base images: debian:12-slim and debian:12 as they are when present;
#      else pulled; else made here with debootstrap --variant=minbase bookworm
#      (installed when missing)
#      from this machine's Debian mirror, with its apt sources, and imported.
#      Kept for the next run.
#   3. The README's builds: gateway:0.1.0 and gateway-demo-backends:0.1.0
#      (`docker build --network host`, the apt-get steps reach the mirror).
#   4. `--check` of the shipped config inside the image (no network).
#   5. Two demo backend containers (the upstream group "users"), then the
#      gateway image in front of them, all with `--network host` on
#      127.0.0.1 only (the gateway's config is docker/gateway.json with its
#      listen address and backend hosts changed): the image's HEALTHCHECK
#      must turn healthy, /healthz, /readyz, /api/dashboard/42 and
#      /api/pool/42 (the group) must answer; `docker stop` must end the
#      gateway with exit code 0 after "SIGTERM, draining", the demo backends
#      with 0.
#
# Prints "SKIP: ..." and exits 0 only when no engine can be had here (not
# root, docker.io not installable, dockerd does not start); any other failure
# exits 1. Long (a cold run builds everything), so ctest labels it
# docker-image, tests/all.sh leaves it out, .ci/run runs it on its own.
set -euo pipefail
cd "$(dirname "$0")/../.."

readonly GW_IMAGE=gateway:0.1.0
readonly DEMO_IMAGE=gateway-demo-backends:0.1.0
readonly GW_NAME=gateway-image-test-gw
readonly DEMO_NAME=gateway-image-test-backends
readonly DEMO2_NAME=gateway-image-test-backends2
# The image's HEALTHCHECK fetches 127.0.0.1:8080: with host networking that
# is the host's port 8080.
readonly GW_PORT=8080
# Bounds for waits on conditions (polled), not expected durations.
readonly WAIT_S=${IMAGE_TEST_WAIT_S:-180}
work=${IMAGE_TEST_DIR:-/var/tmp/gateway-image-test}

t0=$(date +%s)
say() { echo "image.sh [$(($(date +%s) - t0)) s]: $*"; }
fail() { echo "FAIL: tests/docker/image.sh: $*" >&2; exit 1; }
skip() { echo "SKIP: tests/docker/image.sh: $*"; exit 0; }

dockerd_pid=
tmp=
cleanup() {
    local rc=$?
    if [ -n "${DOCKER:-}" ] && "$DOCKER" info >/dev/null 2>&1; then
        "$DOCKER" rm -f "$GW_NAME" "$DEMO_NAME" "$DEMO2_NAME" >/dev/null 2>&1 || true
    fi
    stop_dockerd
    [ -z "$tmp" ] || rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
# Names the command that set -e stopped at (in this shell, not in $(...)).
set -E
trap 'rc=$?; [ "$BASHPID" != $$ ] || echo "FAIL: tests/docker/image.sh: line $LINENO: \"$BASH_COMMAND\" exited $rc" >&2' ERR

# Polls "$@" every half second until it succeeds; 1 after WAIT_S seconds.
wait_for() {
    local end=$(($(date +%s) + WAIT_S))
    until "$@"; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.5
    done
}

# ---- the engine ----

# The docker.io client matches the daemon it installs; another docker CLI
# earlier in PATH may lack the legacy builder's defaults.
pick_client() {
    if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker
    elif command -v docker >/dev/null; then DOCKER=$(command -v docker)
    else DOCKER=
    fi
}

# Installs Debian package $2 when command $1 is missing; 1 if it cannot.
ensure_tool() {
    command -v "$1" >/dev/null && return 0
    [ "$(id -u)" = 0 ] || return 1
    say "installing $2"
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
    "${apt[@]}" install "$2" >>"$work/apt.log" 2>&1 ||
        { "${apt[@]}" update >>"$work/apt.log" 2>&1 && "${apt[@]}" install "$2" >>"$work/apt.log" 2>&1; }
}

engine_up() { "$DOCKER" info >/dev/null 2>&1; }
dockerd_alive() { kill -0 "$dockerd_pid" 2>/dev/null; }
engine_up_or_dockerd_gone() { engine_up || ! dockerd_alive; }

# Starts dockerd with storage driver $1, logging to $work/dockerd.log.
# No bridge and no iptables rules: every container here uses --network host.
start_dockerd() {
    dockerd --storage-driver="$1" --bridge=none --iptables=false --ip-masq=false \
        >"$work/dockerd.log" 2>&1 9>&- &
    dockerd_pid=$!
    if wait_for engine_up_or_dockerd_gone && engine_up; then
        return 0
    fi
    stop_dockerd
    return 1
}

stop_dockerd() {
    [ -n "$dockerd_pid" ] || return 0
    if dockerd_alive; then
        kill -TERM "$dockerd_pid" 2>/dev/null || true
        local end=$(($(date +%s) + 60))
        while dockerd_alive && [ "$(date +%s)" -lt "$end" ]; do sleep 0.5; done
        dockerd_alive && kill -KILL "$dockerd_pid" 2>/dev/null
    fi
    wait "$dockerd_pid" 2>/dev/null || true
    dockerd_pid=
}

get_engine() {
    pick_client
    if [ -n "$DOCKER" ] && engine_up; then
        say "using the running engine ($("$DOCKER" version -f '{{.Server.Version}}'))"
        return 0
    fi
    ensure_tool dockerd docker.io ||
        skip "no Docker engine runs and docker.io cannot be installed (needs root and Debian's mirror; see $work/apt.log)"
    pick_client
    [ -n "$DOCKER" ] || skip "docker.io installed no docker client"
    local driver
    for driver in overlay2 vfs; do
        if start_dockerd "$driver"; then
            say "started dockerd (pid $dockerd_pid, storage driver $driver, log $work/dockerd.log)"
            return 0
        fi
        say "dockerd does not start with storage driver $driver: $(tail -n 1 "$work/dockerd.log")"
    done
    skip "no Docker engine can be started here (dockerd with overlay2 and vfs failed; see $work/dockerd.log)"
}

# ---- base images ----

have_image() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# The URI of this machine's apt source for bookworm (one-line or deb822).
debian_mirror() {
    local files=() f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    awk '
        function flush() { if (!done && hit && uri != "") { print uri; done = 1 } hit = 0; uri = "" }
        FNR == 1 { flush() }
        /^[ \t]*$/ { flush(); next }
        /^URIs:/ { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") hit = 1 }
        /^deb[ \t]/ {
            sub(/\[[^]]*\][ \t]*/, "")
            if (!done && $3 == "bookworm") { print $2; done = 1 }
        }
        END { flush() }' "${files[@]}"
}

# Copies this machine's apt sources into root $1: each file whose keyrings
# (Signed-By) all exist in the new root, so apt-get update works there (the
# Debian archive keyring does; a third party's does not).
copy_sources() {
    local root=$1 f k ok copied=0
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && grep -qv '^[[:space:]]*\(#\|$\)' "$f" || continue
        ok=1
        for k in $(grep -oiE '(signed-by[:=][[:space:]]*)/[^] ,]+' "$f" | grep -o '/.*' || true); do
            [ -e "$root$k" ] || ok=0
        done
        [ "$ok" = 1 ] || continue
        mkdir -p "$root$(dirname "$f")"
        cp "$f" "$root$f"
        copied=$((copied + 1))
    done
    [ "$copied" -gt 0 ]
}

# Trims root $1 the way Debian's official slim images are: no docs (but
# copyrights), man pages or translations, now and in later apt-get installs;
# apt's caches removed after each install; no package lists.
slim() {
    local root=$1
    [ -n "$root" ] && [ "$root" != / ] && [ -d "$root/etc/dpkg" ] || fail "slim: bad root '$root'"
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/groff/*' \
        'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
        'path-exclude /usr/share/lintian/*' >"$root/etc/dpkg/dpkg.cfg.d/docker"
    local clean='"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"'
    printf '%s\n' "DPkg::Post-Invoke { $clean; };" "APT::Update::Post-Invoke { $clean; };" \
        'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' >"$root/etc/apt/apt.conf.d/docker-clean"
    find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root/usr/share/man" "$root/usr/share/groff" "$root/usr/share/info" \
        "$root/usr/share/locale" "$root/usr/share/lintian" \
        "$root/var/lib/apt/lists" "$root/var/cache/apt"
    mkdir -p "$root/var/lib/apt/lists/partial" "$root/var/cache/apt/archives/partial"
}

make_base() {
    local mirror root
    mirror=$(debian_mirror)
    mirror=${mirror:-http://deb.debian.org/debian}
    say "debian:12-slim cannot be pulled: making a local one with debootstrap --variant=minbase bookworm from $mirror, with this machine's apt sources, imported as debian:12-slim (and debian:12 for the build stage)"
    root=$tmp/rootfs
    ensure_tool debootstrap debootstrap || fail "debootstrap is missing and cannot be installed; see $work/apt.log"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        fail "debootstrap failed; see $work/debootstrap.log"
    rm -f "$root/etc/apt/sources.list"
    copy_sources "$root" || echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
    slim "$root"
    tar --numeric-owner -C "$root" -c . |
        "$DOCKER" import -c 'CMD ["bash"]' -m "debootstrap --variant=minbase bookworm (tests/docker/image.sh)" \
            - debian:12-slim >/dev/null
    rm -rf "$root"
}

get_bases() {
    local img
    for img in debian:12-slim debian:12; do
        if have_image "$img"; then
            say "base image $img: present, reused"
        elif timeout 300 "$DOCKER" pull -q "$img" >/dev/null 2>&1; then
            say "base image $img: pulled"
        elif [ "$img" = debian:12-slim ]; then
            make_base
        else
            # The build stage only needs apt on Debian 12: the local slim
            # image has it.
            "$DOCKER" tag debian:12-slim debian:12
            say "base image debian:12: cannot be pulled, tagged from the local debian:12-slim"
        fi
    done
}

# ---- build ----

# Builds tag $1 with extra docker build options after it; removes the image
# the tag named before, when the build replaced it.
build() {
    local tag=$1 old new s
    shift
    old=$("$DOCKER" image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    s=$(date +%s)
    DOCKER_BUILDKIT=0 "$DOCKER" build --network host -f docker/Dockerfile "$@" -t "$tag" . \
        >"$work/build-${tag%%:*}.log" 2>&1 || { tail -n 30 "$work/build-${tag%%:*}.log" >&2; fail "docker build of $tag failed; see $work/build-${tag%%:*}.log"; }
    new=$("$DOCKER" image inspect -f '{{.Id}}' "$tag")
    if [ -n "$old" ] && [ "$old" != "$new" ]; then
        "$DOCKER" rmi "$old" >/dev/null 2>&1 || true
    fi
    say "built $tag in $(($(date +%s) - s)) s, $(($("$DOCKER" image inspect -f '{{.Size}}' "$tag") / 1000000)) MB"
}

# ---- run ----

# Free: no TCP socket of any state uses it as its local port.
port_free() {
    if command -v ss >/dev/null; then
        [ -z "$(ss -Htan "sport = :$1")" ]
    else
        ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# No listener on port $1 (sockets in TIME-WAIT do not stop a bind).
nothing_listens() {
    if command -v ss >/dev/null; then
        [ -z "$(ss -Hltn "sport = :$1")" ]
    else
        ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# A free port below the kernel's ephemeral range, where the tests' own
# listeners (port 0) and outgoing connections never land.
free_port() {
    local low p i
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    p=$((20000 + RANDOM % (low - 20100)))
    for ((i = 0; i < 100; i++, p++)); do
        port_free "$p" && { echo "$p"; return 0; }
    done
    return 1
}

running() { [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }
health() { "$DOCKER" inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$1"; }
settled() { ! running "$1" || [ "$(health "$1")" != starting ]; }
answers() { curl -fsS -o /dev/null --max-time 5 "$1" 2>/dev/null || ! running "$2"; }

dump() {
    echo "--- docker logs $1" >&2
    "$DOCKER" logs "$1" 2>&1 | tail -n 40 >&2 || true
}

# Stops container $1 with docker stop and checks its exit code is 0.
stop_ok() {
    "$DOCKER" stop -t 15 "$1" >/dev/null
    local rc
    rc=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$1")
    [ "$rc" = 0 ] || { dump "$1"; fail "$1 exited $rc after docker stop"; }
}

# Starts demo backend container $1 on a free loopback port; sets BE_PORT.
# One at a time: the next free_port sees this one's port taken.
run_demo() {
    local name=$1 be_port
    be_port=$(free_port) || fail "no free port for the demo backend"
    "$DOCKER" run -d --name "$name" --network host "$DEMO_IMAGE" \
        --listen 127.0.0.1 --port "$be_port" >/dev/null
    wait_for answers "http://127.0.0.1:$be_port/users/1" "$name" || true
    running "$name" && curl -fsS -o /dev/null "http://127.0.0.1:$be_port/users/1" ||
        { dump "$name"; fail "the demo backend container $name did not answer on 127.0.0.1:$be_port"; }
    say "demo backend container $name answers on 127.0.0.1:$be_port"
    BE_PORT=$be_port
}

run_gateway() {
    local conf=$tmp/gateway.json body
    sed -e "s#\"0\\.0\\.0\\.0:$GW_PORT\"#\"127.0.0.1:$GW_PORT\"#" \
        -e "s#backends:9001#127.0.0.1:$BE1_PORT#g" -e "s#backends2:9002#127.0.0.1:$BE2_PORT#g" \
        docker/gateway.json >"$conf"
    grep -q "\"127.0.0.1:$GW_PORT\"" "$conf" && ! grep -qE 'backends2?:900[12]' "$conf" ||
        fail "docker/gateway.json: cannot point its listen address and backends at 127.0.0.1"
    chmod 644 "$conf"
    wait_for nothing_listens "$GW_PORT" || fail "port $GW_PORT is in use (the image's HEALTHCHECK fetches 127.0.0.1:$GW_PORT)"
    "$DOCKER" run -d --name "$GW_NAME" --network host \
        -v "$conf:/etc/gateway/gateway.json:ro" "$GW_IMAGE" >/dev/null
    wait_for settled "$GW_NAME" || true
    [ "$(health "$GW_NAME")" = healthy ] || { dump "$GW_NAME"; "$DOCKER" inspect -f '{{json .State}}' "$GW_NAME" >&2; fail "the gateway container did not turn healthy (state $(health "$GW_NAME"))"; }
    say "gateway container healthy (its HEALTHCHECK)"
    curl -fsS "http://127.0.0.1:$GW_PORT/healthz" >/dev/null || fail "GET /healthz"
    curl -fsS "http://127.0.0.1:$GW_PORT/readyz" >/dev/null || fail "GET /readyz"
    body=$(curl -fsS "http://127.0.0.1:$GW_PORT/api/dashboard/42") || fail "GET /api/dashboard/42"
    case $body in
        *'"user"'*'User 42'*'"orders"'*) ;;
        *) fail "GET /api/dashboard/42 through the gateway gave $body" ;;
    esac
    say "/healthz, /readyz and /api/dashboard/42 answered: $body"
    body=$(curl -fsS "http://127.0.0.1:$GW_PORT/api/pool/42") || fail "GET /api/pool/42 (the upstream group)"
    case $body in
        *'User 42'*) say "/api/pool/42 (the group users) answered: $body" ;;
        *) fail "GET /api/pool/42 through the gateway gave $body" ;;
    esac
    stop_ok "$GW_NAME"
    # To a file first: grep -q ending a pipe early would fail it (pipefail).
    "$DOCKER" logs "$GW_NAME" >"$work/gateway.log" 2>&1
    grep -q '^gateway: SIGTERM, draining$' "$work/gateway.log" ||
        { dump "$GW_NAME"; fail "no drain message in the gateway's logs after docker stop"; }
    grep -q '"path":"/api/dashboard/42".*"status":200' "$work/gateway.log" ||
        { dump "$GW_NAME"; fail "no access-log line for /api/dashboard/42 on the container's stdout"; }
    say "docker stop: gateway drained and exited 0"
    stop_ok "$DEMO_NAME"
    stop_ok "$DEMO2_NAME"
    say "docker stop: demo backends exited 0"
}

main() {
    mkdir -p "$work"
    # One run at a time on this machine (the engine, the ports, the tags).
    exec 9>"$work/lock"
    flock -w 3600 9 || fail "another tests/docker/image.sh holds $work/lock"
    tmp=$(mktemp -d "$work/run.XXXXXX")
    get_engine
    "$DOCKER" rm -f "$GW_NAME" "$DEMO_NAME" "$DEMO2_NAME" >/dev/null 2>&1 || true
    get_bases
    build "$GW_IMAGE"
    build "$DEMO_IMAGE" --target demo-backends
    "$DOCKER" run --rm --network none "$GW_IMAGE" --check -c /etc/gateway/gateway.json >/dev/null ||
        fail "the image's gateway --check of its own config"
    say "the image's gateway accepts its shipped config (--check)"
    run_demo "$DEMO_NAME"
    BE1_PORT=$BE_PORT
    run_demo "$DEMO2_NAME"
    BE2_PORT=$BE_PORT
    run_gateway
    say "ok"
}

main "$@"
