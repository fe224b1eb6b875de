"""The docs cannot drift from the code (issue 25).

- The CLI reference page is what docs/gen_cli.py renders from the Typer app now.
- Every `clearset ...` command the docs' pages and the README show (in code blocks and in
  inline code) names a real command, and every option it uses is one that command takes.
- The commands of docs/getting-started.md run, as written, on the demo data.
- Every bench script writes its own block of docs/benchmarks.md (`--write-docs`).
- The README starts with the two set-up commands, and stays short.

`mkdocs build --strict` (broken links, pages missing from the nav) runs in .ci/run.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer
import yaml

from clearset.cli import app
from clearset.demo import DemoData
from tests.conftest import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
GENERATED = {DOCS / "reference" / "cli.md"}
SETUP = ["pip install -e '.[test]' && clearset demo", "pytest"]


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pages() -> list[Path]:
    return [README, *sorted(p for p in DOCS.rglob("*.md") if p not in GENERATED)]


# ---------------------------------------------------------------- finding commands

FENCE = re.compile(r"^(```+|~~~+)([\w-]*)[^\n]*\n(.*?)^\1\s*$", re.S | re.M)
SHELL = {"sh", "bash", "shell", "console", ""}
INLINE = re.compile(r"(?<!`)`(clearset [^`]+)`(?!`)")


@dataclass(frozen=True)
class Shown:
    page: str
    line: str


def code_blocks(text: str, languages: set[str] = SHELL) -> list[str]:
    return [m.group(3) for m in FENCE.finditer(text) if m.group(2) in languages]


def commands_in_block(block: str) -> list[str]:
    """Each `clearset ...` command of a shell block: continuation lines joined, comments
    cut, `&&` and `;` chains split."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        for part in re.split(r"&&|;", line):
            part = " ".join(part.split()).removeprefix("$ ")
            if part.startswith("clearset ") or part == "clearset":
                found.append(part)
    return found


def shown_commands() -> list[Shown]:
    shown = []
    for page in pages():
        text = page.read_text()
        name = str(page.relative_to(ROOT))
        for block in code_blocks(text):
            shown += [Shown(name, c) for c in commands_in_block(block)]
        prose = FENCE.sub("", text)
        shown += [Shown(name, " ".join(m.group(1).split())) for m in INLINE.finditer(prose)]
    return shown


def parse(line: str) -> tuple[str | None, list[str]]:
    """(the subcommand, the options used) of one shown command line."""
    try:
        tokens = shlex.split(line)
    except ValueError:  # an unbalanced quote in a sketch: split on blanks instead
        tokens = line.split()
    words: list[str] = []
    for token in tokens[1:]:
        if token in {">", "2>", "|&"} or token.startswith(">"):
            break
        words.append(token)
    command = next((w for w in words if not w.startswith(("-", "["))), None)
    options = []
    for word in words:
        match = re.match(r"^\[*(--?[A-Za-z][\w-]*)", word)
        if match:
            options.append(match.group(1))
    return command, options


def accepted(command: Any) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(param.opts)
        names.update(getattr(param, "secondary_opts", ()))
    return names


def test_the_docs_show_commands() -> None:
    shown = shown_commands()
    assert len(shown) > 100, len(shown)
    pages_with = {s.page for s in shown}
    assert "README.md" in pages_with and "docs/getting-started.md" in pages_with


def test_every_shown_command_and_option_exists() -> None:
    group: Any = typer.main.get_command(app)
    root = group.context_class(group, info_name="clearset")
    problems = []
    for item in shown_commands():
        name, options = parse(item.line)
        if name is None:
            command = group
        else:
            command = group.get_command(root, name)
            if command is None:
                problems.append(f"{item.page}: `{item.line}`: no command {name!r}")
                continue
        words = [w for w in item.line.split()[1:] if not w.startswith(("-", "["))]
        if hasattr(command, "commands") and len(words) > 1:  # a group: `clearset exchange answer`
            command = command.commands.get(words[1], command)
        known = accepted(command)
        problems += [
            f"{item.page}: `{item.line}`: clearset {name or ''} has no option {option}"
            for option in options
            if option not in known
        ]
    assert not problems, "\n".join(problems)


def test_the_option_check_catches_a_wrong_option() -> None:
    # The check above must be able to fail: a made-up option and command are found.
    assert parse("clearset scan SRC --out RUN [--lists L ...]") == ("scan", ["--out", "--lists"])
    group: Any = typer.main.get_command(app)
    root = group.context_class(group, info_name="clearset")
    assert "--lists" not in accepted(group.get_command(root, "scan"))
    assert group.get_command(root, "sacn") is None
    assert commands_in_block("clearset a \\\n  --b x  # c\necho && clearset d; ls\n") == [
        "clearset a --b x",
        "clearset d",
    ]


# ---------------------------------------------------------------- getting started, run


def getting_started_commands() -> list[str]:
    text = (DOCS / "getting-started.md").read_text()
    lines = [c for block in code_blocks(text) for c in commands_in_block(block)]
    # `clearset demo` (the set-up line) is run whole by tests/test_cli_text.py; here the
    # demo's data set is built directly and the commands after it run on it.
    return [c for c in lines if c != "clearset demo"]


def test_getting_started_runs_as_written(
    demo_data: DemoData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = getting_started_commands()
    assert len(commands) >= 6, commands
    shutil.copytree(demo_data.root, tmp_path / "clearset-demo" / "data")
    monkeypatch.chdir(tmp_path)
    for line in commands:
        proc = cli(*shlex.split(line)[1:])
        assert proc.returncode == 0, f"`{line}` exited {proc.returncode}:\n{proc.stderr}"
    # What the page says the steps leave behind is there (the last step, a match, moves
    # the report made from the matches it replaces to the run's history).
    for path in ("my-clean", "my-run/receipt.dsse.json", "proof.json", "my-run/history/match-1"):
        assert (tmp_path / path).exists(), path


def test_readme_first_run_is_the_getting_started_run() -> None:
    # The README's first run is a subset of the page's, which the test above runs.
    text = README.read_text().split("## A first real run", 1)[1].split("\n## ", 1)[0]
    run = set(getting_started_commands())
    readme = [c for block in code_blocks(text) for c in commands_in_block(block)]
    assert readme and set(readme) <= run, set(readme) - run


# ---------------------------------------------------------------- README, reference, site


def test_readme_starts_with_the_two_setup_commands_and_stays_short() -> None:
    text = README.read_text()
    first = code_blocks(text)[0]
    assert first.splitlines() == SETUP
    before = text.split("```")[0]
    assert before.count("\n## ") == 1  # only the title, the one-liner and "Set up"
    assert len(text.encode()) < 12_000
    assert code_blocks((DOCS / "getting-started.md").read_text())[0].splitlines() == SETUP


def test_cli_reference_is_generated_from_the_code() -> None:
    gen = _load(DOCS / "gen_cli.py", "gen_cli")
    assert (DOCS / "reference" / "cli.md").read_text() == gen.render(), (
        "docs/reference/cli.md is stale: run python docs/gen_cli.py"
    )


def test_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def leaves(node: Any) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [leaf for child in node for leaf in leaves(child)]
        return [leaf for child in node.values() for leaf in leaves(child)]

    nav = leaves(config["nav"])
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == on_disk


# ---------------------------------------------------------------- benchmarks


def test_every_bench_script_writes_its_own_block() -> None:
    text = (DOCS / "benchmarks.md").read_text()
    starts = re.findall(r"^<!-- bench:([\w-]+):start -->$", text, re.M)
    ends = re.findall(r"^<!-- bench:([\w-]+):end -->$", text, re.M)
    assert starts == ends and len(set(starts)) == len(starts)
    scripts = sorted(ROOT.glob("bench/*.py"))
    names = set()
    for script in scripts:
        match = re.search(r'write_docs_block\("([\w-]+)"\)', script.read_text())
        if "def main(" in script.read_text() or "__main__" in script.read_text():
            assert match, f"{script.name} does not write its docs block (--write-docs)"
        if match:
            names.add(match.group(1))
    assert names <= set(starts), names - set(starts)
    assert len(names) >= 10


def test_a_block_is_replaced_between_its_markers_only() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        docs_block = _load(ROOT / "bench" / "docs_block.py", "docs_block")
    finally:
        sys.path.remove(str(ROOT / "bench"))
    other = "<!-- bench:y:start -->\nk\n<!-- bench:y:end -->\n"
    page = f"a\n<!-- bench:x:start -->\nold\n<!-- bench:x:end -->\nb\n{other}"
    body = docs_block.render("python bench/x.py --n 1", "figure 1\n")
    new = docs_block.replace_block(page, "x", body)
    assert "old" not in new and "figure 1" in new
    assert "`python bench/x.py --n 1 --write-docs`" in new
    assert new.startswith("a\n<!-- bench:x:start -->\n")
    assert new.endswith(f"<!-- bench:x:end -->\nb\n{other}")
    with pytest.raises(ValueError):
        docs_block.replace_block(page, "z", body)
