"""Reads a Dockerfile into stages without a Docker engine; and which hosts a
gateway config calls (called_hosts).

Shared by the check_*.py scripts here. It understands what docker/Dockerfile
uses: comments, line continuations, FROM ... AS name, exec (JSON) and shell
forms, and the package lists of `apt-get install` inside RUN. It is not a
full Dockerfile parser (no heredocs, no escape directive), and it says so
instead of guessing: anything it cannot read raises ParseError.
"""

import json
import sys
import shlex
import urllib.parse


class ParseError(Exception):
    pass


class Instruction:
    def __init__(self, lineno, keyword, args):
        self.lineno = lineno  # first physical line, 1-based
        self.keyword = keyword  # upper case: FROM, RUN, ...
        self.args = args  # the rest of the logical line, stripped

    def exec_form(self):
        """The argument list: the JSON array of the exec form, or the shell
        form split into words."""
        if self.args.startswith("["):
            try:
                v = json.loads(self.args)
            except ValueError as e:
                raise ParseError(f"line {self.lineno}: {self.keyword}: bad JSON array: {e}")
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise ParseError(f"line {self.lineno}: {self.keyword}: not an array of strings")
            return v
        return shlex.split(self.args)

    def __repr__(self):
        return f"{self.lineno}: {self.keyword} {self.args}"


class Stage:
    def __init__(self, index, base, name, lineno):
        self.index = index
        self.base = base
        self.name = name  # None when the FROM has no AS
        self.lineno = lineno
        self.instructions = []

    def all(self, keyword):
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword):
        found = self.all(keyword)
        return found[-1] if found else None

    def apt_packages(self):
        """Every package named by `apt-get install` (or `apt install`) in this
        stage's RUN instructions, in order."""
        pkgs = []
        for ins in self.all("RUN"):
            for words in shell_commands(ins):
                pkgs += apt_install_args(words)
        return pkgs


class Checker:
    """Collects failed checks, so one run reports all of them."""

    def __init__(self):
        self.errors = []

    def check(self, cond, msg):
        if not cond:
            self.errors.append(msg)
        return cond


def report(c, ok_msg=None):
    """Prints every failed check (or ok_msg); the exit status for main()."""
    for e in c.errors:
        print(f"FAIL: {e}", file=sys.stderr)
    if not c.errors and ok_msg:
        print(ok_msg)
    return 1 if c.errors else 0


def shell_commands(ins):
    """The simple commands of a RUN in shell form, each as a word list: the
    line split at &&, || and ;."""
    if ins.args.startswith("["):
        return [ins.exec_form()]
    lex = shlex.shlex(ins.args, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    cmds, cur = [], []
    for tok in lex:
        if tok in ("&&", "||", ";", "|", "&"):
            cmds.append(cur)
            cur = []
        else:
            cur.append(tok)
    cmds.append(cur)
    return [c for c in cmds if c]


def apt_install_args(words):
    """The packages of one `apt-get install` command, or [] for any other."""
    # Skip leading VAR=value assignments.
    while words and "=" in words[0] and not words[0].startswith("-"):
        words = words[1:]
    if len(words) < 2 or words[0] not in ("apt-get", "apt"):
        return []
    rest = [w for w in words[1:] if not w.startswith("-")]
    if not rest or rest[0] != "install":
        return []
    return rest[1:]


def logical_lines(text):
    """(first line number, text) of each instruction: comment lines dropped,
    continuations joined."""
    out = []
    buf, start = None, 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        stripped = line.lstrip()
        # A comment line, even inside a continuation, is dropped; parser
        # directives (# syntax=...) are comments as far as stages go.
        if stripped.startswith("#"):
            continue
        if buf is None:
            if not stripped:
                continue
            buf, start = "", n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        out.append((start, buf.strip()))
        buf = None
    if buf is not None:
        raise ParseError(f"line {start}: continuation runs past the end of the file")
    return out


def parse(text):
    """The stages of a Dockerfile, in order. Raises ParseError."""
    stages = []
    for lineno, line in logical_lines(text):
        parts = line.split(None, 1)
        keyword = parts[0].upper()
        args = parts[1].strip() if len(parts) > 1 else ""
        if args.startswith("<<"):
            raise ParseError(f"line {lineno}: heredocs are not supported")
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            if len(words) == 1:
                base, name = words[0], None
            elif len(words) == 3 and words[1].upper() == "AS":
                base, name = words[0], words[2]
            else:
                raise ParseError(f"line {lineno}: cannot read FROM {args}")
            stages.append(Stage(len(stages), base, name, lineno))
            continue
        if not stages:
            if keyword == "ARG":
                continue  # global build arguments before the first FROM
            raise ParseError(f"line {lineno}: {keyword} before the first FROM")
        stages[-1].instructions.append(Instruction(lineno, keyword, args))
    if not stages:
        raise ParseError("no FROM")
    return stages


def load(path):
    with open(path, encoding="utf-8") as f:
        return parse(f.read())


def stage(stages, name):
    for s in stages:
        if s.name == name:
            return s
    raise ParseError(f"no stage named {name} (stages: {[s.name for s in stages]})")


def called_hosts(conf):
    """[(who, host, port)] of every host a gateway config's backends call:
    a URL's own host and port (80/443 when absent), or, when the URL's host
    names an upstream group and has no port, each "host:port" of the group.
    who is "endpoint/backend" (with " via group NAME" for a group host)."""
    groups = conf.get("upstreams") or {}
    out = []
    for ep in conf.get("endpoints", []):
        for b in ep.get("backends", []):
            who = f"{ep['name']}/{b['name']}"
            u = urllib.parse.urlsplit(b["url"].replace("{", "x").replace("}", "x"))
            if u.hostname in groups and u.port is None:
                for h in groups[u.hostname].get("hosts", []):
                    host, _, port = h.rpartition(":")
                    out.append((f"{who} via group {u.hostname}", host.strip("[]"), int(port)))
            else:
                out.append((who, u.hostname or "", u.port or (443 if u.scheme == "https" else 80)))
    return out
