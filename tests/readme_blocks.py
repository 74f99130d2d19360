"""The README's checked blocks, found by their HTML-comment markers (so other sections can
change freely around them):

- ``<!-- file: NAME -->`` before a fenced block: a file the commands below read (written,
  with that name, into the directory the commands run in);
- ``<!-- output: COMMAND -->`` ... ``<!-- end output -->``: a fenced block that starts with
  ``$ COMMAND`` and then holds exactly what COMMAND prints (stdout and stderr as a terminal
  shows them), run from a fresh directory with the ``file:`` blocks in it.

- ``<!-- lab output: TEST_FILE -->`` ... ``<!-- end output -->``: the same, for a command
  that only a test environment can run (the network-namespace lab); TEST_FILE runs it there
  and compares with :func:`lab_block` (latency figures aside, which no two runs share).

``python -m tests.readme_blocks`` rewrites every output block with what its command prints
now (after a change to the catalog, say); the tests then check the rewrite is what the
commands print.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
_FILE = re.compile(r"<!-- file: (?P<name>[^ ]+) -->\n```[a-z]*\n(?P<body>.*?)```\n", re.S)
_OUTPUT = re.compile(r"<!-- output: (?P<command>.+?) -->\n(?P<block>.*?)<!-- end output -->\n", re.S)
_LAB = re.compile(r"<!-- lab output: (?P<test>[^ ]+) -->\n```\n\$ (?P<command>[^\n]+)\n(?P<shown>.*?)```\n"
                  r"<!-- end output -->\n", re.S)
_LATENCY = re.compile(r"\d+\.\d ms")


@dataclass(frozen=True)
class OutputBlock:
    command: str
    shown: str  # what the README shows after the "$ COMMAND" line
    span: tuple[int, int]  # of the block between the markers


def files(text: str) -> dict[str, str]:
    return {m["name"]: m["body"] for m in _FILE.finditer(text)}


def output_blocks(text: str) -> list[OutputBlock]:
    blocks = []
    for match in _OUTPUT.finditer(text):
        block = match["block"]
        lines = block.split("\n")
        if lines[0] != "```" or lines[1] != f"$ {match['command']}" or lines[-2:] != ["```", ""]:
            raise ValueError(f"output block of {match['command']!r} is not a fenced block starting with "
                             f"'$ {match['command']}'")
        shown = "\n".join(lines[2:-2])
        blocks.append(OutputBlock(match["command"], shown + "\n" if shown else "", match.span("block")))
    return blocks


def lab_blocks(text: str) -> list[tuple[str, str, str, tuple[int, int]]]:
    """(test file, command, shown output, span) of each lab output block."""
    return [(m["test"], m["command"], m["shown"], m.span()) for m in _LAB.finditer(text)]


def lab_block(command: str) -> str:
    """The README's shown output of a lab command, latency figures as ``N ms``."""
    for _, shown_command, shown, _ in lab_blocks(README.read_text()):
        if shown_command == command:
            return without_latency(shown)
    raise LookupError(f"no lab output block for {command!r} in {README}")


def without_latency(output: str) -> str:
    """Latencies differ from run to run; the column keeps its width."""
    return _LATENCY.sub(lambda m: "N ms".rjust(len(m.group(0))), output)


def run(command: str, workdir: Path) -> str:
    """What `command` prints, run as a user would with the installed console script."""
    argv = shlex.split(command)
    if argv[0] == "illiad-exporter":
        argv = [sys.executable, "-m", "illiad_exporter", *argv[1:]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILLIAD_EXPORTER_")}
    proc = subprocess.run(argv, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=120, env=env)
    return proc.stdout


def outputs_now(text: str) -> list[tuple[OutputBlock, str]]:
    """Each output block and what its command prints now, every command in a fresh directory."""
    found = []
    for block in output_blocks(text):
        with tempfile.TemporaryDirectory() as tmp:
            for name, body in files(text).items():
                (Path(tmp) / name).write_text(body)
            found.append((block, run(block.command, Path(tmp))))
    return found


def rewrite(text: str) -> str:
    for block, printed in reversed(outputs_now(text)):
        start, end = block.span
        text = text[:start] + f"```\n$ {block.command}\n{printed}```\n" + text[end:]
    return text


if __name__ == "__main__":
    README.write_text(rewrite(README.read_text()))
    print(f"rewrote the output blocks of {README}")
