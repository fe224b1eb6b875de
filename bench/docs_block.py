"""How a benchmark's figures reach docs/benchmarks.md: the script writes them, not a person.

Every bench script runs its `main()` inside `write_docs_block(NAME)`. Given
`--write-docs` (or `--write-docs=BLOCK`, for a script with several blocks, such as
`receipts-proofs`), the script runs as it always does, printing as it goes, and when it
finishes the block between `<!-- bench:BLOCK:start -->` and `<!-- bench:BLOCK:end -->` in
docs/benchmarks.md is replaced by the command it ran, the machine it ran on, and what it
printed. Without the flag nothing changes. The flag is taken out of `sys.argv` before the
script parses its own options, so no script needs to know of it (and child processes
started with the script's arguments never see it).
"""

from __future__ import annotations

import io
import os
import platform
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

PAGE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
FLAG = "--write-docs"


def _markers(block: str) -> tuple[str, str]:
    return f"<!-- bench:{block}:start -->", f"<!-- bench:{block}:end -->"


def replace_block(text: str, block: str, body: str) -> str:
    """`text` with the block named `block` holding `body` instead; its markers must be
    there, once each, start before end."""
    start, end = _markers(block)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"{PAGE.name}: no single {start} ... {end} block to replace")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body.strip(chr(10))}\n{end}{tail}"


def render(command: str, output: str) -> str:
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    fence = "~~~~" if "```" in output else "```"
    return (
        f"Written by `{command} --write-docs` on {time.strftime('%Y-%m-%d')} ({machine}):\n\n"
        f"{fence}text\n{output.rstrip()}\n{fence}\n"
    )


def _take_flag(default: str) -> str | None:
    for n, arg in enumerate(sys.argv[1:], 1):
        if arg == FLAG or arg.startswith(FLAG + "="):
            del sys.argv[n]
            return arg.partition("=")[2] or default
    return None


class _Tee(io.TextIOBase):
    def __init__(self, *streams: io.TextIOBase) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)


@contextmanager
def write_docs_block(name: str) -> Iterator[None]:
    """Run a bench script's main() inside this; see the module's docstring."""
    block = _take_flag(name)
    if block is None:
        yield
        return
    if not re.fullmatch(r"[a-z0-9_-]+", block):
        raise SystemExit(f"{FLAG}={block}: a block name is lower-case letters, digits, - and _")
    replace_block(PAGE.read_text(), block, "")  # fail before the run, not after it
    command = " ".join(["python", f"bench/{Path(sys.argv[0]).name}", *_shown(sys.argv[1:])])
    captured = io.StringIO()
    with redirect_stdout(_Tee(sys.stdout, captured)):  # type: ignore[type-var]
        yield
    PAGE.write_text(replace_block(PAGE.read_text(), block, render(command, captured.getvalue())))
    print(f"wrote the {block} block of {PAGE}", file=sys.stderr)


def _shown(args: list[str]) -> list[str]:
    """The arguments as a reader would retype them: where the work folder was (`--dir`)
    is this machine's business, not part of what was measured."""
    shown: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--dir":
            skip = True
        elif not arg.startswith("--dir="):
            shown.append(arg)
    return shown
