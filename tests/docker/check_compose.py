#!/usr/bin/env python3
"""Checks docker/compose.yaml and docker/gateway.json without a Docker engine.

    check_compose.py --root REPO

- compose.yaml parses; services gateway and backends exist, built from
  docker/Dockerfile (context: the repository root) with targets runtime and
  demo-backends, stages that exist;
- the gateway publishes container port 8080 on host port 8080;
- stop_grace_period is above the config's server.shutdown_timeout_ms;
- backends and backends2 (the two demo backend instances) are built from
  the demo-backends target;
- docker/gateway.json is conf/gateway.json (the README demo) with each
  127.0.0.1:9001 (backend origins and upstream group hosts) replaced by
  backends:9001 and each 127.0.0.1:9002 by backends2:9002, and every host it
  calls (a backend URL's host, or each host of the upstream group the URL
  names) is a compose service listening on that port.
"""

import argparse
import json
import os
import re
import sys

import dockerparse

try:
    import yaml
except ImportError:
    sys.exit("PyYAML is missing: apt-get install python3-yaml (tests/setup.sh)")

# Where the README demo's backends (tests/demo.sh) are in compose.
DEMO_HOSTS = {"127.0.0.1:9001": "backends:9001", "127.0.0.1:9002": "backends2:9002"}
DEFAULT_SHUTDOWN_MS = 10000  # conf/README.md


def duration_ms(s):
    """A compose duration ("15s", "1m30s", "500ms") in milliseconds."""
    if isinstance(s, (int, float)):
        return s * 1000
    total, pos = 0.0, 0
    units = {"h": 3600e3, "m": 60e3, "s": 1e3, "ms": 1, "us": 1e-3}
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", s):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    return total if pos == len(s) and pos > 0 else None


def published(ports, target):
    """Whether a compose ports list publishes container port target on the
    same host port (short "H:C", "IP:H:C" or long syntax)."""
    for p in ports or []:
        if isinstance(p, dict):
            if int(p.get("target", 0)) == target and int(p.get("published", 0) or 0) == target:
                return True
            continue
        parts = str(p).split("/")[0].rsplit(":", 2)
        if len(parts) >= 2 and parts[-1] == str(target) and parts[-2] == str(target):
            return True
    return False


def listen_port(argv):
    """The --port of a mock_backend command line (9001 when absent)."""
    if "--port" in argv and argv.index("--port") + 1 < len(argv):
        return int(argv[argv.index("--port") + 1])
    return 9001


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    a = ap.parse_args()
    c = dockerparse.Checker()
    path = os.path.join(a.root, "docker/compose.yaml")
    try:
        with open(path, encoding="utf-8") as f:
            comp = yaml.safe_load(f)
    except yaml.YAMLError as e:
        sys.exit(f"FAIL: {path}: {e}")
    stages = dockerparse.load(os.path.join(a.root, "docker/Dockerfile"))
    services = comp.get("services") or {}

    for name, target in (("gateway", "runtime"), ("backends", "demo-backends"), ("backends2", "demo-backends")):
        s = services.get(name)
        if not c.check(isinstance(s, dict), f"compose has no service {name}"):
            continue
        b = s.get("build")
        if not c.check(isinstance(b, dict), f"service {name} has no build section"):
            continue
        ctx = os.path.normpath(os.path.join(a.root, "docker", b.get("context", ".")))
        c.check(ctx == os.path.normpath(a.root), f"service {name}: build context {b.get('context')} is not the repository root")
        c.check(
            os.path.normpath(os.path.join(ctx, b.get("dockerfile", "Dockerfile")))
            == os.path.normpath(os.path.join(a.root, "docker/Dockerfile")),
            f"service {name}: dockerfile is not docker/Dockerfile",
        )
        c.check(b.get("target") == target, f"service {name}: build target {b.get('target')}, want {target}")
        c.check(target in [st.name for st in stages], f"docker/Dockerfile has no stage {target}")
    if c.errors:
        return dockerparse.report(c)

    gw = services["gateway"]
    c.check(published(gw.get("ports"), 8080), "service gateway does not publish 8080:8080")

    with open(os.path.join(a.root, "docker/gateway.json"), encoding="utf-8") as f:
        conf = json.load(f)
    shutdown_ms = conf.get("server", {}).get("shutdown_timeout_ms", DEFAULT_SHUTDOWN_MS)
    grace = duration_ms(gw.get("stop_grace_period", "10s"))
    c.check(grace is not None, f"service gateway: cannot read stop_grace_period {gw.get('stop_grace_period')}")
    c.check(
        grace is None or grace > shutdown_ms,
        f"service gateway: stop_grace_period {gw.get('stop_grace_period', '10s (default)')} is not above shutdown_timeout_ms {shutdown_ms}",
    )

    # The image's config is the README demo, moved to the backends service.
    with open(os.path.join(a.root, "conf/gateway.json"), encoding="utf-8") as f:
        demo = f.read()
    for local, there in DEMO_HOSTS.items():
        demo = demo.replace(local, there)
    want = json.loads(demo)
    want["server"]["listen"] = "0.0.0.0:8080"
    c.check(conf == want, f"docker/gateway.json is not conf/gateway.json with the demo backends moved: {DEMO_HOSTS}")

    default_cmd = dockerparse.stage(stages, "demo-backends").last("CMD").exec_form()
    for who, host, port in dockerparse.called_hosts(conf):
        s = services.get(host)
        if not c.check(s is not None, f"backend {who} calls {host}: no such compose service"):
            continue
        if (s.get("build") or {}).get("target") != "demo-backends":
            continue
        cmd = s.get("command", default_cmd)
        cmd = cmd.split() if isinstance(cmd, str) else cmd
        c.check(
            port == listen_port(cmd),
            f"backend {who} calls {host}:{port}; the {host} service listens on {listen_port(cmd)}",
        )
    return dockerparse.report(c, f"ok: {path}: services {sorted(services)}")


if __name__ == "__main__":
    sys.exit(main())
