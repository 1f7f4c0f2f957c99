#!/usr/bin/env python3
"""Checks docker/Dockerfile without a Docker engine.

    check_dockerfile.py --root REPO

- stages: build FROM Debian 12, demo-backends and runtime FROM debian:12-slim,
  runtime last (the default target of `docker build`);
- no `# syntax=` parser directive (BuildKit would pull a frontend image
  from a registry for it, which fails where only Debian's mirror is reachable);
- build installs the -dev packages tests/setup.sh lists (minus the test-only
  ones) and no test-only package, configures with cmake -S . -B build in
  Release with GATEWAY_BUILD_TESTS=OFF (the test tree needs cmocka and
  Python) and builds the gateway and mock_backend targets;
- runtime: a non-root USER, EXPOSE 8080, a HEALTHCHECK on
  http://127.0.0.1:8080/healthz whose program the stage installs,
  ENTRYPOINT the gateway, CMD `-c /etc/gateway/gateway.json`, the config
  copied there from docker/gateway.json, STOPSIGNAL SIGTERM, and every
  COPY --from naming a stage and a path that stage produces;
- the port in EXPOSE is the port docker/gateway.json listens on.
"""

import argparse
import json
import os
import re
import shlex
import sys

import dockerparse

CONFIG = "/etc/gateway/gateway.json"
BINARY = "/usr/local/bin/gateway"
# In tests/setup.sh for the tests only (sanitizer builds, cmocka, the
# Python checks, valgrind): the image build must not need them.
SETUP_TEST_ONLY = {"libclang-rt-14-dev", "libcmocka-dev", "clang", "valgrind", "python3", "python3-yaml"}


def setup_packages(path):
    """The package list of tests/setup.sh: the words of its pkgs=(...)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^pkgs=\((.*?)\)", text, re.S | re.M)
    if not m:
        sys.exit(f"{path}: no pkgs=(...) list")
    return shlex.split(m.group(1), comments=True)


def user_is_root(user):
    name = user.split(":")[0]
    return name in ("root", "0", "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True, help="the repository")
    a = ap.parse_args()
    dockerfile = os.path.join(a.root, "docker/Dockerfile")
    try:
        stages = dockerparse.load(dockerfile)
        build = dockerparse.stage(stages, "build")
        demo = dockerparse.stage(stages, "demo-backends")
        rt = dockerparse.stage(stages, "runtime")
    except dockerparse.ParseError as e:
        sys.exit(f"{dockerfile}: {e}")
    c = dockerparse.Checker()

    # Parser directives are comments before the first instruction.
    with open(dockerfile, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                break
            c.check(
                not re.match(r"^#\s*syntax\s*=", line, re.I),
                f"{line.strip()}: BuildKit pulls that frontend image from a registry; the build must work with Debian's mirror only",
            )

    # Stages and bases.
    c.check(re.match(r"^debian:(12|bookworm)$", build.base), f"build stage FROM {build.base}, want debian:12")
    for st in (demo, rt):
        c.check(
            re.match(r"^debian:(12|bookworm)-slim$", st.base),
            f"{st.name} stage FROM {st.base}, want debian:12-slim",
        )
    c.check(stages[-1] is rt, "runtime is not the last stage: a plain `docker build` would not give the gateway image")

    # Build stage: the README's build.
    bpkgs = set(build.apt_packages())
    for p in setup_packages(os.path.join(a.root, "tests/setup.sh")):
        if (p.endswith("-dev") and p not in SETUP_TEST_ONLY) or p in ("build-essential", "cmake", "pkg-config"):
            c.check(p in bpkgs, f"build stage does not install {p} (tests/setup.sh needs it to build)")
    for p in sorted(SETUP_TEST_ONLY & bpkgs):
        c.check(False, f"build stage installs {p}, which only the tests need")
    cmds = [w for ins in build.all("RUN") for w in dockerparse.shell_commands(ins)]
    configure = [w for w in cmds if w[:1] == ["cmake"] and "-S" in w]
    builds = [w for w in cmds if w[:2] == ["cmake", "--build"]]
    if c.check(configure, "build stage never runs cmake -S . -B build"):
        w = configure[0]
        c.check(w[w.index("-S") + 1 : w.index("-S") + 2] == ["."], "cmake -S is not the repository root")
        c.check("-B" in w and w[w.index("-B") + 1 : w.index("-B") + 2] == ["build"], "cmake -B is not build")
        c.check("-DCMAKE_BUILD_TYPE=Release" in w, "build stage does not configure a Release build")
        c.check(
            "-DGATEWAY_BUILD_TESTS=OFF" in w,
            "build stage does not configure with -DGATEWAY_BUILD_TESTS=OFF: the test tree needs cmocka and Python 3",
        )
    if c.check(builds, "build stage never runs cmake --build build"):
        targets = set()
        for w in builds:
            if "--target" in w:
                for t in w[w.index("--target") + 1 :]:
                    if t.startswith("-"):
                        break
                    targets.add(t)
        # No --target builds everything, both included.
        for t in ("gateway", "mock_backend"):
            c.check(not targets or t in targets, f"cmake --build does not build {t}")
    workdir = build.last("WORKDIR")
    src = workdir.args if workdir else "/"
    produced = {os.path.join(src, "build/gateway"), os.path.join(src, "build/tests/mock_backend")}

    # Every COPY --from names an earlier stage and a file it builds.
    names = [s.name for s in stages]
    for st in stages:
        for ins in st.all("COPY"):
            words = ins.exec_form()
            frm = [w.split("=", 1)[1] for w in words if w.startswith("--from=")]
            paths = [w for w in words if not w.startswith("--")]
            if frm:
                c.check(
                    frm[0] in names[: st.index],
                    f"line {ins.lineno}: COPY --from={frm[0]}: no earlier stage of that name",
                )
                if frm[0] == "build":
                    for p in paths[:-1]:
                        c.check(p in produced, f"line {ins.lineno}: COPY --from=build {p}: the build stage does not produce it")
            else:
                for p in paths[:-1]:
                    c.check(
                        os.path.exists(os.path.join(a.root, p)),
                        f"line {ins.lineno}: COPY {p}: no such file in the repository",
                    )

    # Runtime stage.
    user = rt.last("USER")
    if c.check(user is not None, "runtime stage has no USER: the gateway would run as root"):
        c.check(not user_is_root(user.args), f"runtime USER {user.args} is root")
        c.check(
            re.match(r"^\d+(:\d+)?$", user.args),
            f"runtime USER {user.args} is not numeric: Kubernetes runAsNonRoot cannot verify a user name",
        )
        useradd = [w for ins in rt.all("RUN") for w in dockerparse.shell_commands(ins) if w[:1] == ["useradd"]]
        uid = user.args.split(":")[0]
        c.check(
            any("--uid" in w and w[w.index("--uid") + 1] == uid for w in useradd),
            f"runtime USER {uid} is not created with useradd --uid {uid} (no passwd entry)",
        )
    exposed = [p.split("/")[0] for ins in rt.all("EXPOSE") for p in ins.args.split()]
    c.check(exposed == ["8080"], f"runtime EXPOSE {exposed}, want 8080 only")

    hc = rt.last("HEALTHCHECK")
    if c.check(hc is not None, "runtime stage has no HEALTHCHECK"):
        m = re.search(r"\bCMD\s+(.*)$", hc.args)
        if c.check(m, "HEALTHCHECK without CMD"):
            argv = dockerparse.Instruction(hc.lineno, "CMD", m.group(1).strip()).exec_form()
            c.check(
                any(x.startswith("http://127.0.0.1:8080/healthz") or x.startswith("http://localhost:8080/healthz") for x in argv),
                f"HEALTHCHECK {argv} does not fetch http://127.0.0.1:8080/healthz",
            )
            prog = os.path.basename(argv[0]) if argv else ""
            c.check(
                prog in rt.apt_packages() or prog == "gateway",
                f"HEALTHCHECK runs {prog}, which the runtime stage does not install (debian:12-slim has no curl or wget)",
            )
            if prog == "curl":
                c.check("-f" in argv or "--fail" in argv or any(re.match(r"^-[a-zA-Z]*f", x) for x in argv),
                        "HEALTHCHECK curl without -f: a 5xx would count as healthy")
    ep = rt.last("ENTRYPOINT")
    c.check(ep is not None and ep.exec_form() == [BINARY], f"runtime ENTRYPOINT is not [\"{BINARY}\"]")
    c.check(ep is not None and ep.args.startswith("["), "ENTRYPOINT in shell form: signals would go to /bin/sh, not the gateway")
    cmd = rt.last("CMD")
    c.check(cmd is not None and cmd.exec_form() == ["-c", CONFIG], f"runtime CMD is not [\"-c\", \"{CONFIG}\"]")
    stop = rt.last("STOPSIGNAL")
    c.check(stop is not None and stop.args in ("SIGTERM", "15"), "runtime STOPSIGNAL is not SIGTERM (the signal that drains)")
    copies = [ins.exec_form() for ins in rt.all("COPY")]
    c.check(
        any(w[-2:] == ["docker/gateway.json", CONFIG] for w in copies),
        f"runtime stage does not COPY docker/gateway.json to {CONFIG}",
    )
    c.check(
        any(w[-1] == BINARY and any(x == "--from=build" for x in w) for w in copies),
        f"runtime stage does not COPY --from=build the gateway to {BINARY}",
    )
    c.check(
        "ca-certificates" in rt.apt_packages(),
        "runtime stage does not install ca-certificates: https backends would fail verification",
    )

    # The shipped config listens where the image says.
    with open(os.path.join(a.root, "docker/gateway.json"), encoding="utf-8") as f:
        conf = json.load(f)
    listen = conf.get("server", {}).get("listen", "0.0.0.0:8080")
    c.check(listen == "0.0.0.0:8080", f"docker/gateway.json listens on {listen}, want 0.0.0.0:8080 (reachable from outside the container)")

    for e in c.errors:
        print(f"FAIL: {e}", file=sys.stderr)
    if not c.errors:
        print(f"ok: {dockerfile}: stages {names}")
    return 1 if c.errors else 0


if __name__ == "__main__":
    sys.exit(main())
