#!/usr/bin/env python3
"""Checks that an image stage of docker/Dockerfile can run a binary built here.

    check_runtime_libs.py --dockerfile docker/Dockerfile --stage runtime \
        --binary build/gateway [--sanitize address|thread]

Every shared library `ldd BINARY` resolves is mapped to its Debian package
with `dpkg -S` (this machine is Debian 12, like the image). That package must
be installed in the stage: named by the stage's `apt-get install`, or a
dependency of one of those (Depends and Pre-Depends, recursively, read from
dpkg or the apt cache), or part of debian:12-slim itself, taken to be the
Essential packages plus apt, with their dependencies. A library ldd cannot
find, a file no package owns, or a package name in the stage that Debian does
not know fails the check.

In a sanitizer build the sanitizer runtimes (libasan, libubsan, libtsan) are
reported and skipped: the image is built without them.
"""

import argparse
import os
import re
import subprocess
import sys

import dockerparse

SANITIZER_PKG = re.compile(r"^lib(asan|ubsan|tsan|lsan)\d+$")
DEBIAN12 = re.compile(r"^(docker\.io/)?(library/)?debian:(12|bookworm)[.0-9]*(-slim)?(@sha256:[0-9a-f]+)?$")
SLIM_EXTRA = ["apt"]  # Priority important, present in debian:*-slim


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True)


class Packages:
    """Package facts from dpkg, falling back to the apt cache for packages
    not installed on this machine."""

    def __init__(self):
        self.fields = {}
        self.provides = {}
        self.essentials = []
        fmt = "${Package}\t${Status}\t${Essential}\t${Provides}\t${Depends}\t${Pre-Depends}\n"
        out = run(["dpkg-query", "-W", "-f", fmt]).stdout
        for line in out.splitlines():
            name, status, ess, prov, dep, pre = line.split("\t")
            if "install ok installed" not in status:
                continue
            self.fields[name] = {"Depends": dep, "Pre-Depends": pre}
            if ess == "yes":
                self.essentials.append(name)
            for p in split_deps(prov):
                self.provides.setdefault(p[0], []).append(name)

    def control(self, pkg):
        """{Depends, Pre-Depends} of pkg, or None if Debian does not know it."""
        if pkg in self.fields:
            return self.fields[pkg]
        r = run(["apt-cache", "show", "--no-all-versions", pkg])
        f = None
        if r.returncode == 0 and r.stdout.strip():
            f = {"Depends": "", "Pre-Depends": ""}
            for line in r.stdout.splitlines():
                key, _, val = line.partition(": ")
                if key in f:
                    f[key] = val
        self.fields[pkg] = f
        return f

    def closure(self, roots):
        """roots and everything they depend on. For an alternative (a | b)
        the first one that exists is taken, as apt does; a virtual package
        is whatever installed package provides it."""
        seen, todo = set(), list(roots)
        while todo:
            pkg = todo.pop()
            if pkg in seen:
                continue
            f = self.control(pkg)
            if f is None:
                real = self.provides.get(pkg)
                if real:
                    seen.add(pkg)
                    todo.append(real[0])
                continue
            seen.add(pkg)
            for group in split_deps(f["Depends"]) + split_deps(f["Pre-Depends"]):
                for alt in group:
                    if self.control(alt) is not None or alt in self.provides:
                        todo.append(alt)
                        break
        return seen

    def essential(self):
        return list(self.essentials)


def split_deps(field):
    """'a (>= 1) | b, c:any' -> [['a', 'b'], ['c']]"""
    groups = []
    for group in field.split(","):
        alts = []
        for alt in group.split("|"):
            name = alt.strip().split(" ")[0].split(":")[0]
            if name:
                alts.append(name)
        if alts:
            groups.append(alts)
    return groups


def ldd(binary):
    """[(soname, path)] of the libraries the dynamic loader resolves."""
    r = run(["ldd", binary])
    if r.returncode != 0:
        sys.exit(f"ldd {binary} failed: {r.stderr.strip()}")
    libs = []
    for line in r.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            name, _, rest = line.partition("=>")
            rest = rest.strip()
            if rest.startswith("not found"):
                libs.append((name.strip(), None))
                continue
            path = rest.split(" (")[0].strip()
            if path:
                libs.append((name.strip(), path))
        elif line.startswith("/"):
            path = line.split(" (")[0]
            libs.append((os.path.basename(path), path))
        # else: linux-vdso and friends, provided by the kernel
    return libs


def candidates(path):
    """Usrmerge means ldd may name /lib/... for a file dpkg registered as
    /usr/lib/... (or the reverse), and the soname symlink is not always
    registered: the paths to ask dpkg about, best first."""
    cands = []
    for p in (path, os.path.realpath(path)):
        cands.append(p)
        cands.append(p[4:] if p.startswith("/usr/") else "/usr" + p)
    return cands


def owners(paths):
    """{path: package} for the library files dpkg knows, in one dpkg call
    (each call reads the whole database)."""
    allc = sorted({c for p in paths for c in candidates(p)})
    out = run(["dpkg", "-S"] + allc).stdout if allc else ""
    found = {}
    for line in out.splitlines():
        if line.startswith("diversion "):
            continue
        pkgs, _, f = line.partition(": ")
        # "libfoo1:amd64" or "a, b" when several packages share the path
        found[f.strip()] = pkgs.split(",")[0].strip().split(":")[0]
    result = {}
    for p in paths:
        for c in candidates(p):
            if c in found:
                result[p] = found[c]
                break
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dockerfile", required=True)
    ap.add_argument("--stage", required=True)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--sanitize", default="")
    a = ap.parse_args()

    try:
        st = dockerparse.stage(dockerparse.load(a.dockerfile), a.stage)
    except dockerparse.ParseError as e:
        sys.exit(f"{a.dockerfile}: {e}")
    errors = []
    if not DEBIAN12.match(st.base):
        errors.append(f"stage {a.stage} is FROM {st.base}, not Debian 12: this check maps with Debian 12's packages")

    pk = Packages()
    listed = st.apt_packages()
    for p in listed:
        if pk.control(p) is None and p not in pk.provides:
            errors.append(f"stage {a.stage} installs {p}: no such package in Debian (dpkg, apt cache)")
    from_list = pk.closure(listed)
    from_base = pk.closure(pk.essential() + SLIM_EXTRA)
    print(f"stage {a.stage} (FROM {st.base}) installs: {' '.join(listed) or '(nothing)'}")

    libs = ldd(a.binary)
    owned = owners([p for _, p in libs if p])
    for soname, path in libs:
        if path is None:
            errors.append(f"{soname}: ldd cannot find it on this machine")
            continue
        pkg = owned.get(path)
        if pkg is None:
            errors.append(f"{soname} ({path}): no Debian package owns it")
            continue
        if pkg in from_list:
            why = "installed" if pkg in listed else "dependency of the installed packages"
        elif pkg in from_base:
            why = "in debian:12-slim"
        elif a.sanitize and SANITIZER_PKG.match(pkg):
            why = f"skipped: {a.sanitize} sanitizer runtime, not in the image"
        else:
            errors.append(
                f"{soname} ({path}) comes from {pkg}, which stage {a.stage} does not install: add {pkg} to its apt-get install"
            )
            continue
        print(f"  ok {soname:28} {pkg:24} {why}")

    for e in errors:
        print(f"FAIL: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
