"""The README doctest: every ```sh block of README.md marked `<!-- doctest -->`
(or `<!-- doctest: portico CONFIG -->`, `<!-- doctest: broker -->`) is run
command by command from a fresh copy of the shipped tree, and each command's
stdout is compared with the `# ` lines the README shows under it. The
convention is written at the top of README.md's source; in short:

- a command is a line that is not a comment (a trailing backslash continues
  it); the `# ` lines right under it are its expected stdout; a command
  without them must print nothing; a command must exit 0;
- expected output that is JSON is compared as JSON: "..." matches any value,
  a string with "..." in it any text there, a member "...": "..." any other
  members; other output line by line, "..." matching any text and a line of
  just "..." any number of lines;
- `CMD &` runs in the background until the block ends (`portico -c FILE &`:
  the doctest waits for FILE's server port, other commands for the ports
  they name); background processes are stopped by pid with SIGTERM at the
  end of the block, and a portico must exit 0;
- ports 11223, 11224, 11443, 18081 and 18082 become free ports, the same
  in the commands, their expected output and the copied configs.

So the README cannot drift: change a command or its output and this fails.
Blocks marked broker need the test broker (scripts/rabbitmq start). The
first screen's block (scripts/run, scripts/test) is the one block not run:
scripts/test would run this test.
"""
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from amqp_support import BROKER_PORT, BROKER_URL, SOURCE, Portico, broker_serving, free_port, \
    listen_lines, shipped_copy

README = os.path.join(SOURCE, "README.md")
BINARY = os.environ.get("PORTICO_BIN") or os.path.join(SOURCE, "build", "portico")
README_PORTS = (11223, 11224, 11443, 18081, 18082)
MARK = re.compile(r"^<!-- doctest(?::\s*(.*?))?\s*-->\s*$")


# ---- parsing ---------------------------------------------------------------


class Command:
    def __init__(self, line, text):
        self.line, self.text, self.expected = line, text, []

    @property
    def background(self):
        return re.search(r"(?<!&)&\s*(#.*)?$", self.text) is not None


class Block:
    def __init__(self, line, section, options):
        self.line, self.section, self.options = line, section, options
        self.commands = []

    @property
    def id(self):
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")
        return "%s-line%d" % (slug, self.line)


def sh_blocks(text):
    """[(line, section, marker options or None, [lines])] of every ```sh block."""
    out, section, mark, lines, start = [], "", None, None, 0
    for n, line in enumerate(text.splitlines(), 1):
        if lines is not None:
            if line.startswith("```"):
                out.append((start, section, mark, lines))
                lines, mark = None, None
            else:
                lines.append((n, line))
            continue
        if line.startswith("## "):
            section = line[3:].strip()
        m = MARK.match(line)
        if m:
            mark = m.group(1) or ""
            continue
        if line.strip() == "```sh":
            lines, start = [], n
            continue
        if line.strip():
            mark = None  # a marker belongs to the block right under it
    return out


def parse_block(start, section, options, lines):
    block = Block(start, section, options)
    current, pending = None, ""
    for n, line in lines:
        stripped = line.strip()
        if pending:
            pending += " " + stripped
            if not stripped.endswith("\\"):
                current = Command(n, pending.replace("\\ ", " "))
                block.commands.append(current)
                pending = ""
            else:
                pending = pending[:-1].rstrip()
            continue
        if not stripped:
            current = None
        elif stripped.startswith("#"):
            if current is not None:
                current.expected.append(re.sub(r"^# ?", "", stripped))
        elif stripped.endswith("\\"):
            pending = stripped[:-1].rstrip()
        else:
            current = Command(n, stripped)
            block.commands.append(current)
    return block


def readme_blocks():
    return sh_blocks(open(README).read())


DOCTESTED = [parse_block(*b) for b in readme_blocks() if b[2] is not None]


# ---- comparing -------------------------------------------------------------


def text_pattern(expected):
    return re.compile("^" + ".*".join(re.escape(p) for p in expected.split("...")) + "$", re.S)


def json_matches(want, got):
    if want == "...":
        return True
    if isinstance(want, str) and "..." in want:
        return isinstance(got, str) and text_pattern(want).match(got) is not None
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return False
        others = want.get("...") == "..."
        keys = set(want) - {"..."}
        if not keys <= set(got) or (not others and set(got) != keys):
            return False
        return all(json_matches(want[k], got[k]) for k in keys)
    if isinstance(want, list):
        return isinstance(got, list) and len(want) == len(got) and \
            all(json_matches(a, b) for a, b in zip(want, got))
    return want == got and type(want) == type(got)


def lines_match(want, got):
    if not want:
        return not got
    if want[0] == "...":
        return any(lines_match(want[1:], got[i:]) for i in range(len(got) + 1))
    return bool(got) and text_pattern(want[0]).match(got[0]) is not None and \
        lines_match(want[1:], got[1:])


def output_matches(expected, stdout):
    if not expected:
        return stdout.strip() == ""
    try:
        want = json.loads(" ".join(expected))
    except ValueError:
        want = None
    if want is not None and isinstance(want, (dict, list)):
        try:
            return json_matches(want, json.loads(stdout))
        except ValueError:
            return False
    return lines_match(expected, stdout.rstrip("\n").splitlines())


# ---- running ---------------------------------------------------------------


class Run:
    """One block's tree (a copy of the shipped files, its ports moved) and
    the processes it started."""

    def __init__(self, tmp_path):
        self.root = shipped_copy(str(tmp_path / "tree"))
        self.ports = {p: free_port() for p in README_PORTS}
        self.background = []
        cfg_dir = os.path.join(self.root, "config")
        for name in os.listdir(cfg_dir):
            if name.endswith(".yaml"):
                path = os.path.join(cfg_dir, name)
                text = self.subst(open(path).read())
                with open(path, "w") as f:
                    f.write(text)
        self.env = dict(os.environ)
        self.env["PATH"] = os.path.dirname(os.path.abspath(BINARY)) + os.pathsep + \
            self.env.get("PATH", "")
        self.env.pop("PORTICO_AMQP_URL", None)
        if BROKER_PORT != 5672:
            self.env["PORTICO_AMQP_URL"] = BROKER_URL

    def subst(self, text):
        for old, new in self.ports.items():
            text = re.sub(r"(?<![0-9])%d(?![0-9])" % old, str(new), text)
        return text

    def command(self, text):
        text = self.subst(text)
        if os.environ.get("PORTICO_BIN"):
            text = re.sub(r"(^|\s)build/portico(?=\s)", lambda m: m.group(1) + BINARY, text)
        return text

    def wait_ports(self, cmd, proc, log):
        m = re.search(r"-c\s+(\S+)", cmd)
        if m and "portico" in cmd:
            cfg = os.path.join(self.root, m.group(1))
            text = open(cfg).read()
            ports = []
            for i, path in listen_lines(text):
                if path == "server":
                    ports.append(int(re.search(r":(\d+)", text.splitlines()[i].split("listen:")[1])
                                     .group(1)))
        else:
            ports = [p for p in self.ports.values() if re.search(r"\b%d\b" % p, cmd)]
        deadline = time.time() + 30
        for port in ports:
            while True:
                if proc.poll() is not None:
                    raise AssertionError("`%s` exited with %d: %s" % (cmd, proc.returncode,
                                                                     open(log).read()))
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    assert time.time() < deadline, "`%s` did not listen on %d" % (cmd, port)
                    time.sleep(0.05)

    def run(self, cmd):
        c = self.command(cmd.text)
        where = "README.md:%d: `%s`" % (cmd.line, cmd.text)
        if cmd.background:
            c = re.sub(r"&\s*(#.*)?$", "", c).strip()
            log = os.path.join(self.root, "bg-%d.log" % len(self.background))
            with open(log, "w") as out:
                proc = subprocess.Popen(["bash", "-c", "exec " + c], cwd=self.root, env=self.env,
                                        stdout=out, stderr=subprocess.STDOUT)
            self.background.append((cmd, proc, log))
            self.wait_ports(c, proc, log)
            return
        r = subprocess.run(["bash", "-c", c], cwd=self.root, env=self.env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=180)
        assert r.returncode == 0, "%s exited with %d: %s%s" % (where, r.returncode, r.stdout,
                                                               r.stderr)
        expected = [self.subst(l) for l in cmd.expected]
        assert output_matches(expected, r.stdout), \
            "%s printed\n%s\nbut the README shows\n%s" % (where, r.stdout, "\n".join(expected))

    def stop(self):
        codes = []
        for cmd, proc, log in reversed(self.background):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            codes.append((cmd, proc.returncode, log))
        return codes


@pytest.mark.parametrize("block", DOCTESTED, ids=[b.id for b in DOCTESTED])
def test_readme_block(block, tmp_path, request):
    options = block.options.split()
    if "broker" in options:
        request.getfixturevalue("broker")
        if not broker_serving():
            pytest.skip("the test broker does not serve")
    run = Run(tmp_path)
    server = None
    try:
        if options[:1] == ["portico"]:
            cfg = os.path.join(run.root, options[1])
            server = Portico(cfg, run.ports[11223], workdir=str(tmp_path))
        for cmd in block.commands:
            run.run(cmd)
    finally:
        codes = run.stop()
        if server:
            codes.append(("portico -c " + options[1], server.stop(), server.log_path))
    for cmd, code, log in codes:
        if "portico" in str(getattr(cmd, "text", cmd)):
            text = open(log).read()
            assert code == 0, "%s exited with %r: %s" % (cmd, code, text)
            assert '"level":"error"' not in text, text


def test_nearly_every_block_is_doctested():
    """Every sh block is run, but the first screen's (scripts/run would
    install and serve, scripts/test would run this test)."""
    blocks = readme_blocks()
    assert len(blocks) >= 8
    skipped = [(line, lines) for line, _, mark, lines in blocks if mark is None]
    assert len(skipped) == 1, "README blocks without a doctest marker: %s" % skipped
    commands = [l.split("#")[0].strip() for _, l in skipped[0][1] if l.strip()]
    assert commands == ["scripts/run", "scripts/test"]
    assert sum(len(b.commands) for b in DOCTESTED) >= 20
    assert all(b.commands for b in DOCTESTED)


def test_the_doctest_sees_a_drift(tmp_path):
    """A changed output or command fails: the comparison is not lenient."""
    assert output_matches(['{"a": 1, "b": "..."}'], '{"b": "x", "a": 1}')
    assert not output_matches(['{"a": 1, "b": "..."}'], '{"b": "x", "a": 2}')
    assert not output_matches(['{"a": 1}'], '{"a": 1, "c": 3}')
    assert output_matches(['{"a": 1, "...": "..."}'], '{"a": 1, "c": 3}')
    assert output_matches(["usage: x", "..."], "usage: x\nmore\nlines\n")
    assert not output_matches(["usage: y", "..."], "usage: x\nmore\n")
    assert output_matches(["... 0 failures ..."], "7 successes / 0 failures / 0 errors\n")
    assert not output_matches(["... 0 failures ..."], "7 successes / 1 failures / 0 errors\n")
    assert not output_matches([], "something\n")
    block = parse_block(1, "t", "", [(2, "# prose"), (3, "echo hi   # a comment"), (4, "# hi"),
                                     (5, ""), (6, "echo a \\"), (7, "  b"), (8, "# a b")])
    assert [(c.text, c.expected) for c in block.commands] == [
        ("echo hi   # a comment", ["hi"]), ("echo a b", ["a b"])]
    run = Run(tmp_path)
    with pytest.raises(AssertionError):
        run.run(Command(1, "echo changed"))
    with pytest.raises(AssertionError):
        run.run(Command(1, "false"))
    drift = Command(1, "echo 11223")
    drift.expected = ["11223"]
    run.run(drift)  # the port moves in both
