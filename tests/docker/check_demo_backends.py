#!/usr/bin/env python3
"""Checks that the demo backend accepts what the deployment files pass it.

    check_demo_backends.py --root REPO --mock build/tests/mock_backend

The demo backend runs in its own containers (compose services backends and
backends2, k8s Deployments demo-backends and demo-backends-2), so it must listen on every address, not on
loopback: each of its command lines (the Dockerfile's demo-backends CMD, the
compose command, the k8s container args) must say `--listen 0.0.0.0`, and
the real mock_backend must accept that command line. To stay on loopback
here, it is started with the same options but --listen 127.0.0.1 and
--port 0, must print "port N", and must exit 0 on SIGTERM.

Waits are on readiness (the "port N" line, or the pipe closing when the
program dies), not on the clock: a sanitizer build on a loaded machine may
take many seconds to start. HANG_S only turns a hung program into a message
before ctest's own timeout.
"""

import argparse
import glob
import os
import select
import signal
import subprocess
import sys
import time

import dockerparse

HANG_S = 150

try:
    import yaml
except ImportError:
    sys.exit("PyYAML is missing: apt-get install python3-yaml (tests/setup.sh)")


def command_lines(root):
    """[(where, argv)] of every demo backend invocation in docker/."""
    out = []
    st = dockerparse.stage(dockerparse.load(os.path.join(root, "docker/Dockerfile")), "demo-backends")
    cmd = st.last("CMD")
    out.append(("Dockerfile demo-backends CMD", cmd.exec_form() if cmd else []))
    with open(os.path.join(root, "docker/compose.yaml"), encoding="utf-8") as f:
        comp = yaml.safe_load(f)
    for name, svc in sorted(comp["services"].items()):
        if (svc.get("build") or {}).get("target") != "demo-backends":
            continue
        c = svc.get("command")
        if c is not None:
            out.append((f"compose {name} command", c.split() if isinstance(c, str) else c))
    for path in sorted(glob.glob(os.path.join(root, "docker/k8s/*.yaml"))):
        with open(path, encoding="utf-8") as f:
            for d in yaml.safe_load_all(f):
                if not d or d.get("kind") != "Deployment":
                    continue
                for ctr in d["spec"]["template"]["spec"]["containers"]:
                    if "demo-backends" in ctr.get("image", ""):
                        out.append((f"{os.path.basename(path)} {d['metadata']['name']} args", ctr.get("args", [])))
    return out


def try_run(mock, argv):
    """None if mock_backend starts with argv (loopback, ephemeral port) and
    exits 0 on SIGTERM, else what went wrong."""
    argv = list(argv)
    for opt, val in (("--listen", "127.0.0.1"), ("--port", "0")):
        if opt in argv and argv.index(opt) + 1 < len(argv):
            argv[argv.index(opt) + 1] = val
    p = subprocess.Popen([mock] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    try:
        # Unbuffered reads of the raw pipe, so select() sees every byte;
        # until the line is complete or the program closes its stdout.
        line, deadline = b"", time.monotonic() + HANG_S
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            r, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            chunk = os.read(p.stdout.fileno(), 256)
            if not chunk:
                break
            line += chunk
        if not line.startswith(b"port "):
            p.kill()
            _, err = p.communicate(timeout=10)
            return f"did not start (exit {p.returncode}): {err.decode(errors='replace').strip()}"
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=HANG_S)
        return None if rc == 0 else f"exit {rc} on SIGTERM"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--mock", required=True, help="the built mock_backend")
    a = ap.parse_args()
    errors = []
    for where, argv in command_lines(a.root):
        if "--listen" not in argv or argv[argv.index("--listen") + 1 :][:1] != ["0.0.0.0"]:
            errors.append(f"{where} {argv}: no --listen 0.0.0.0; the gateway in another container could not reach it")
        why = try_run(a.mock, argv)
        if why:
            errors.append(f"{where} {argv}: mock_backend {why}")
        else:
            print(f"ok: {where}: {argv}")
    for e in errors:
        print(f"FAIL: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
