#!/usr/bin/env python3
"""Checks docker/k8s/*.yaml without a cluster.

    check_k8s.py --root REPO --gateway build/gateway

- every file parses as YAML (several documents allowed), each document has
  apiVersion, kind and metadata.name; a Deployment, Service, ConfigMap and
  HorizontalPodAutoscaler named for the gateway are present;
- the Deployment: replicas >= 2, container port 8080 (the port the config
  listens on), readiness probe /readyz and liveness probe /healthz on it,
  CPU and memory requests and limits, runAsNonRoot with the image's
  non-root uid, readOnlyRootFilesystem, the config mounted from the
  ConfigMap so that the file is /etc/gateway/gateway.json (the path the
  image's CMD reads), terminationGracePeriodSeconds above the preStop sleep
  plus the config's server.shutdown_timeout_ms, explicit workers no more
  than the CPU limit (0 would mean the node's CPUs);
- the config in the ConfigMap is docker/gateway.json with the backends at
  the demo-backends Service and the second demo instance at demo-backends-2
  (and its own workers), passes `gateway --check`, and every host it calls
  (a backend URL's host, or each host of the upstream group the URL names)
  is a Service in these manifests on the right port;
- the Service selects the Deployment's pods and sends port 80 to 8080;
- the HPA (autoscaling/v2) scales that Deployment on CPU, with requests set.
"""

import argparse
import glob
import ipaddress
import json
import math
import os
import re
import subprocess
import sys
import tempfile

import dockerparse

try:
    import yaml
except ImportError:
    sys.exit("PyYAML is missing: apt-get install python3-yaml (tests/setup.sh)")

CONFIG = "/etc/gateway/gateway.json"
# Where docker/gateway.json's hosts (compose services) are in the cluster.
COMPOSE_TO_K8S = {"backends:9001": "demo-backends:9001", "backends2:9002": "demo-backends-2:9002"}
DEFAULT_SHUTDOWN_MS = 10000  # conf/README.md


def cpu_cores(q):
    """A Kubernetes CPU quantity ("500m", "2", 1.5) in cores."""
    s = str(q)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def port_of(container, port):
    """A probe or targetPort (number or container port name) as a number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def prestop_seconds(container):
    """How long the preStop hook sleeps (exec sleep N or the sleep action)."""
    pre = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre:
        return float(pre["sleep"].get("seconds", 0))
    cmd = pre.get("exec", {}).get("command", [])
    if cmd[:1] == ["sleep"] and len(cmd) == 2:
        return float(cmd[1])
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--gateway", required=True, help="the built gateway binary")
    a = ap.parse_args()
    c = dockerparse.Checker()

    docs = []
    files = sorted(glob.glob(os.path.join(a.root, "docker/k8s/*.yaml")))
    c.check(files, "no docker/k8s/*.yaml")
    for f in files:
        try:
            with open(f, encoding="utf-8") as fh:
                for d in yaml.safe_load_all(fh):
                    if d is None:
                        continue
                    ok = isinstance(d, dict) and d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name")
                    if c.check(ok, f"{f}: a document without apiVersion, kind or metadata.name"):
                        docs.append((os.path.basename(f), d))
        except yaml.YAMLError as e:
            c.errors.append(f"{f}: {e}")
    if c.errors:
        return dockerparse.report(c)

    def find(kind, name):
        hits = [d for _, d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
        c.check(len(hits) == 1, f"want one {kind} named {name}, found {len(hits)}")
        return hits[0] if len(hits) == 1 else None

    dep = find("Deployment", "gateway")
    svc = find("Service", "gateway")
    hpa = find("HorizontalPodAutoscaler", "gateway")
    if not (dep and svc and hpa):
        return dockerparse.report(c)

    c.check(dep["apiVersion"] == "apps/v1", "Deployment is not apps/v1")
    c.check(dep["spec"].get("replicas", 1) >= 2, "Deployment runs fewer than 2 replicas")
    pod = dep["spec"]["template"]
    labels = pod.get("metadata", {}).get("labels", {})
    sel = dep["spec"].get("selector", {}).get("matchLabels", {})
    c.check(sel and all(labels.get(k) == v for k, v in sel.items()), "Deployment selector does not match its pod labels")
    spec = pod["spec"]
    ctrs = [x for x in spec.get("containers", []) if x.get("name") == "gateway"]
    if not c.check(len(ctrs) == 1, "Deployment has no container named gateway"):
        return dockerparse.report(c)
    ctr = ctrs[0]

    # Image user: the Dockerfile's numeric USER of the runtime stage.
    rt = dockerparse.stage(dockerparse.load(os.path.join(a.root, "docker/Dockerfile")), "runtime")
    user = rt.last("USER")
    image_uid = int(user.args.split(":")[0]) if user and user.args.split(":")[0].isdigit() else None
    c.check(image_uid, "docker/Dockerfile runtime stage has no numeric non-root USER")
    psc, csc = spec.get("securityContext", {}), ctr.get("securityContext", {})
    c.check(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, "runAsNonRoot is not set")
    uid = csc.get("runAsUser", psc.get("runAsUser", image_uid))
    c.check(uid != 0, "runAsUser is 0")
    c.check(uid == image_uid, f"runAsUser {uid} is not the image's user {image_uid}")
    c.check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not set")
    c.check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")

    ports = [p.get("containerPort") for p in ctr.get("ports", [])]
    c.check(ports == [8080], f"container ports {ports}, want [8080]")
    for kind, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        probe = ctr.get(kind, {}).get("httpGet")
        if c.check(probe, f"no {kind} with httpGet"):
            c.check(probe.get("path") == path, f"{kind} path {probe.get('path')}, want {path}")
            c.check(port_of(ctr, probe.get("port")) == 8080, f"{kind} port {probe.get('port')} is not 8080")

    res = ctr.get("resources", {})
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            c.check(r in res.get(part, {}), f"resources.{part}.{r} is not set")

    # The config file: which volume ends up at CONFIG, from which ConfigMap key.
    args = ctr.get("args", ["-c", CONFIG])
    c.check(ctr.get("command") in (None, ["/usr/local/bin/gateway"]), "container command overrides the image's gateway")
    c.check(args == ["-c", CONFIG], f"container args {args}, want [-c, {CONFIG}]")
    key = cm_name = None
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    for m in ctr.get("volumeMounts", []):
        v = vols.get(m.get("name"), {})
        if "configMap" not in v:
            continue
        cm = v["configMap"]
        items = {i["path"]: i["key"] for i in cm.get("items", [])}
        mp = m["mountPath"]
        if m.get("subPath"):
            if mp == CONFIG:
                key = items.get(m["subPath"], m["subPath"]) if items else m["subPath"]
        elif os.path.dirname(CONFIG) == mp.rstrip("/"):
            name = os.path.basename(CONFIG)
            key = items.get(name) if items else name
        if key:
            cm_name = cm.get("name")
            c.check(m.get("readOnly") is True, "the config volume is not mounted readOnly")
            break
    if not c.check(key, f"no ConfigMap volume puts a file at {CONFIG}"):
        return dockerparse.report(c)
    cmap = find("ConfigMap", cm_name)
    if not cmap or not c.check(key in cmap.get("data", {}), f"ConfigMap {cm_name} has no key {key}"):
        return dockerparse.report(c)
    text = cmap["data"][key]
    try:
        conf = json.loads(text)
    except ValueError as e:
        c.errors.append(f"ConfigMap {cm_name} {key}: invalid JSON: {e}")
        return dockerparse.report(c)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as t:
        t.write(text)
    try:
        r = subprocess.run([a.gateway, "--check", "-c", t.name], capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(t.name)
    c.check(r.returncode == 0, f"ConfigMap {cm_name} {key}: gateway --check fails:\n{r.stdout}{r.stderr}")

    # The image's config with the cluster's names: the demo stays one demo.
    with open(os.path.join(a.root, "docker/gateway.json"), encoding="utf-8") as fh:
        image_conf = fh.read()
    for compose, k8s in COMPOSE_TO_K8S.items():
        # "backends:9001" but not inside "demo-backends:9001" or "xbackends:9001"
        image_conf = re.sub(r"(?<![\w.-])" + re.escape(compose), k8s, image_conf)
    want = json.loads(image_conf)
    want["server"]["workers"] = conf.get("server", {}).get("workers")
    c.check(
        conf == want,
        f"ConfigMap {cm_name} {key} is not docker/gateway.json with the demo backends moved: {COMPOSE_TO_K8S} (workers aside)",
    )

    server = conf.get("server", {})
    listen = server.get("listen", "0.0.0.0:8080")
    c.check(listen == "0.0.0.0:8080", f"the config listens on {listen}, want 0.0.0.0:8080 (the probes and the Service need it)")
    shutdown_ms = server.get("shutdown_timeout_ms", DEFAULT_SHUTDOWN_MS)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    pre = prestop_seconds(ctr)
    c.check(
        grace * 1000 > pre * 1000 + shutdown_ms,
        f"terminationGracePeriodSeconds {grace} s is not above preStop {pre} s + shutdown_timeout_ms {shutdown_ms} ms: the kubelet would SIGKILL a draining gateway",
    )
    workers = server.get("workers", 0)
    limit = res.get("limits", {}).get("cpu")
    if limit is not None:
        c.check(
            1 <= workers <= math.ceil(cpu_cores(limit)),
            f"server.workers is {workers} with a CPU limit of {limit}: set it to at most the limit (0 means the node's CPUs)",
        )

    # Backends: hosts the config calls that these manifests define.
    services = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Service"}
    for who, host, port in dockerparse.called_hosts(conf):
        try:
            ipaddress.ip_address(host)
            c.errors.append(f"backend {who} calls {host}: use a Service name, not an address")
            continue
        except ValueError:
            pass
        # name, name.namespace or name.namespace.svc.cluster.local
        s = services.get(host.split(".")[0])
        if c.check(s, f"backend {who} calls {host}, which is no Service here"):
            sp = [p.get("port") for p in s["spec"].get("ports", [])]
            c.check(port in sp, f"backend {who} calls {host}:{port}, Service ports {sp}")

    # Service.
    c.check(svc["spec"].get("selector") == sel, "the gateway Service does not select the Deployment's pods")
    sports = svc["spec"].get("ports", [])
    c.check(
        any(p.get("port") == 80 and port_of(ctr, p.get("targetPort", p.get("port"))) == 8080 for p in sports),
        "the gateway Service does not send port 80 to the container's 8080",
    )

    # HPA.
    c.check(hpa["apiVersion"] == "autoscaling/v2", f"HPA is {hpa['apiVersion']}, want autoscaling/v2")
    hs = hpa["spec"]
    ref = hs.get("scaleTargetRef", {})
    c.check(ref.get("kind") == "Deployment" and ref.get("name") == "gateway", "HPA does not scale the gateway Deployment")
    c.check(1 <= hs.get("minReplicas", 1) <= hs.get("maxReplicas", 0), "HPA minReplicas/maxReplicas are not 1 <= min <= max")
    c.check(hs.get("minReplicas", 1) >= 2, "HPA minReplicas is below 2: one replica is a single point of failure")
    c.check(
        any(m.get("type") == "Resource" and m.get("resource", {}).get("name") == "cpu" for m in hs.get("metrics", [])),
        "HPA has no CPU resource metric",
    )
    return dockerparse.report(c, f"ok: {len(docs)} manifests in {len(files)} files")


if __name__ == "__main__":
    sys.exit(main())
