"""The docs cannot drift from the code: every fenced ```python snippet of README.md and docs/*.md
runs, every ``adah ...`` line of their fenced shell blocks names a real command with real
options, and docs/config-reference.md is what its generator writes.

Markdown directives, an HTML comment on the line just above a fence:
``<!-- doctest: skip (why) -->`` does not run that snippet (it needs `make demo`, big data, ...);
``<!-- doctest: slow (why) -->`` runs it, and marks the file's snippet test slow. The snippets of
one file run in order in one namespace and one scratch folder (the current directory), so a
later snippet may continue an earlier one. docs/research/ (the study's record) is not checked.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
DIRECTIVE = re.compile(r"<!--\s*doctest:\s*(\w+)(.*?)-->")
SEPARATORS = {"&&", "||", ";", "|", "&"}


@dataclass
class Block:
    path: Path
    line: int  # line number of the block's first content line in the Markdown file
    lang: str
    text: str
    directive: str  # "skip", "slow" or ""

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path}:{self.line}"


def fenced_blocks(path: Path, text: str | None = None) -> list[Block]:
    """Every fenced block of a Markdown file, with the doctest directive just above it."""
    lines = (path.read_text() if text is None else text).splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:  # blocks are consumed whole, so a fence met here opens one (bare ``` too)
            i += 1
            continue
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        d = DIRECTIVE.search(prev)
        start, body = i + 1, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        blocks.append(Block(path, start + 1, m.group(2).lower(), textwrap.dedent("\n".join(body)),
                            d.group(1) if d else ""))
        i += 1
    return blocks


# ---- adah command lines ------------------------------------------------------------------------


def command_lines(block: Block) -> list[tuple[int, str]]:
    """(line number, logical line) of a shell block, backslash continuations joined."""
    out, pending, start = [], "", 0
    for n, raw in enumerate(block.text.splitlines(), block.line):
        line = raw.rstrip()
        if not pending:
            start = n
            line = line[2:] if line.startswith("$ ") else line
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def adah_invocations(line: str) -> list[list[str]]:
    """The argument lists of every ``adah`` call on a shell line (``adah ...``, ``.venv/bin/adah``,
    ``python -m adah``, ``torchrun ... -m adah``, after ``VAR=value`` assignments)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    commands, current = [], []
    for tok in tokens:
        if tok in SEPARATORS:
            commands.append(current)
            current = []
        else:
            current.append(tok)
    commands.append(current)
    found = []
    for cmd in commands:
        for idx, tok in enumerate(cmd):
            if os.path.basename(tok) == "adah" and all("=" in p and not p.startswith("-") for p in cmd[:idx]):
                found.append(cmd[idx + 1:])
                break
            if tok == "-m" and idx + 1 < len(cmd) and cmd[idx + 1] == "adah":
                found.append(cmd[idx + 2:])
                break
    return found


def _is_group(cmd) -> bool:
    """typer vendors its own click, so groups and options are recognised by what they have."""
    return isinstance(getattr(cmd, "commands", None), dict)


def _option_names(cmd, help_names: list[str]) -> dict:
    """Every option spelling of ``cmd`` (hidden ones too) -> its parameter; help names -> None."""
    names: dict = {h: None for h in help_names}
    for p in cmd.params:
        if getattr(p, "param_type_name", "") == "option":
            for name in (*p.opts, *p.secondary_opts):
                names[name] = p
    return names


def check_invocation(root, args: list[str]) -> str | None:
    """None when ``adah ARGS`` resolves to a command and every option is one of its parameters
    (hidden aliases count); else what is wrong."""
    cmd, path = root, ["adah"]
    help_names = list(root.context_settings.get("help_option_names", ["--help"]))
    i, asked_help = 0, False
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "...":
            continue
        if arg.startswith("-") and arg != "-":
            name = arg.split("=", 1)[0]
            options = _option_names(cmd, help_names)
            if name not in options:
                return f"`{' '.join(path)}` has no option {name}"
            param = options[name]
            if param is None or param.is_eager:
                asked_help = True
            if param is not None and "=" not in arg and not (param.is_flag or param.count):
                i += 1  # its value
            continue
        if _is_group(cmd):
            sub = cmd.commands.get(arg)
            if sub is None:
                return f"`{' '.join(path)}` has no command {arg!r}"
            cmd, path = sub, [*path, arg]
            help_names = list(cmd.context_settings.get("help_option_names", help_names))
    if _is_group(cmd) and not asked_help:
        return f"`{' '.join(path)}` needs a command ({', '.join(sorted(cmd.commands))})"
    return None


def command_problems(root, files: list[Path]) -> list[str]:
    problems = []
    for path in files:
        for block in fenced_blocks(path):
            if block.lang not in SHELL_LANGS:
                continue
            for n, line in command_lines(block):
                where = f"{block.where.rsplit(':', 1)[0]}:{n}"
                try:
                    invocations = adah_invocations(line)
                except ValueError as exc:
                    problems.append(f"{where}: cannot parse the shell line ({exc}): {line.strip()}")
                    continue
                for args in invocations:
                    problem = check_invocation(root, args)
                    if problem:
                        problems.append(f"{where}: {problem}: {line.strip()}")
    return problems


@pytest.fixture(scope="module")
def adah_command():
    import adah.cli  # noqa: F401 - registers every command on the app
    from adah.cli.common import app

    return typer.main.get_command(app)


def test_every_adah_command_in_the_docs_parses(adah_command):
    problems = command_problems(adah_command, DOC_FILES)
    assert not problems, "commands in the docs that the CLI does not accept:\n" + "\n".join(problems)


def test_the_command_check_can_fail(tmp_path, adah_command):
    """The checker itself: an unknown option, an unknown command and a bare group are caught,
    by file and line; a hidden alias and a help flag pass."""
    demo = typer.Typer()

    @demo.command()
    def build(checkpoint: str = typer.Option("", "--checkpoint", "--model", hidden=False),
              old: str = typer.Option("", "--old-name", hidden=True), force: bool = False) -> None:
        """Build."""

    @demo.command()
    def other() -> None:
        """Other."""

    root = typer.main.get_command(demo)
    page = tmp_path / "page.md"
    page.write_text("text\n\n```bash\nadah build --checkpoint x --old-name y --force\n"
                    "adah build --help\nadah build --nope 1\nadah buidl\n"
                    "VAR=1 adah build --model m \\\n   --what 2   # a comment\n```\n")
    problems = command_problems(root, [page])
    assert problems == [
        f"{page}:6: `adah build` has no option --nope: adah build --nope 1",
        f"{page}:7: `adah` has no command 'buidl': adah buidl",
        f"{page}:8: `adah build` has no option --what: VAR=1 adah build --model m     --what 2   # a comment",
    ]
    assert check_invocation(adah_command, ["index"]).startswith("`adah index` needs a command")
    assert check_invocation(adah_command, ["index", "info", "--index", "x"]) is None


# ---- Python snippets ---------------------------------------------------------------------------


def _python_files() -> list:
    params = []
    for path in DOC_FILES:
        runnable = [b for b in fenced_blocks(path) if b.lang == "python" and b.directive != "skip"]
        if runnable:
            slow = any(b.directive == "slow" for b in runnable)
            params.append(pytest.param(path, id=path.name, marks=[pytest.mark.slow] if slow else []))
    return params


def run_snippets(path: Path, text: str | None = None) -> None:
    """Run the file's Python snippets in order in one namespace; a failure names the Markdown
    file and line (tracebacks carry the file's own line numbers)."""
    namespace: dict = {"__name__": "__doc_snippet__"}
    for block in fenced_blocks(path, text):
        if block.lang != "python" or block.directive == "skip":
            continue
        code = compile("\n" * (block.line - 1) + block.text, str(path), "exec")
        try:
            exec(code, namespace)
        except Exception as exc:  # noqa: BLE001 - reported with its place in the Markdown
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
            line = frames[-1].lineno if frames else block.line
            raise AssertionError(f"{block.where.rsplit(':', 1)[0]}:{line}: the snippet starting at line "
                                 f"{block.line} fails: {type(exc).__name__}: {exc}") from None


@pytest.mark.slow
@pytest.mark.parametrize("path", _python_files())
def test_python_snippets_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_snippets(path)


def test_the_snippet_check_can_fail(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    page = tmp_path / "page.md"
    text = ("# t\n\n```python\nx = 1\n```\n\n<!-- doctest: skip (needs state) -->\n```python\nraise SystemError\n```\n"
            "\n```python\ny = x + 1\nassert y == 3, y\n```\n")
    page.write_text(text)
    with pytest.raises(AssertionError, match=rf"^{re.escape(str(page))}:14: the snippet starting at line 13 fails: "
                                             r"AssertionError: 2$"):
        run_snippets(page)


def test_every_snippet_directive_is_known():
    for path in DOC_FILES:
        for block in fenced_blocks(path):
            assert block.directive in ("", "skip", "slow"), f"{block.where}: unknown doctest directive {block.directive!r}"


# ---- the generated config reference ------------------------------------------------------------


def test_config_reference_is_generated_from_the_dataclasses():
    spec = importlib.util.spec_from_file_location("gen_config_reference", ROOT / "docs" / "tools" /
                                                  "gen_config_reference.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    expected = gen.render()
    assert "`train.epochs` | `100` |" in expected and "`attention.residual` | `1.0` | `0.0` |" in expected
    actual = (ROOT / "docs" / "config-reference.md").read_text()
    assert actual == expected, ("docs/config-reference.md is stale: run "
                                "PYTHONPATH=src python docs/tools/gen_config_reference.py")


# ---- links between the pages -------------------------------------------------------------------


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file, plus explicit <a id="..."> ones."""
    text = path.read_text()
    heads = re.findall(r"^#+\s+(.*)$", text, flags=re.M)
    return ({re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}
            | set(re.findall(r'<a id="([^"]+)"', text)))


def test_links_between_pages_resolve():
    problems = []
    for path in DOC_FILES:
        text = path.read_text()
        for m in re.finditer(r"\]\(([^)\s]+)\)", text):
            link = m.group(1)
            if re.match(r"^[a-z]+:", link):
                continue
            target, _, anchor = link.partition("#")
            file = (path.parent / target).resolve() if target else path
            where = f"{path.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}"
            if not file.exists():
                problems.append(f"{where}: no file {link}")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                problems.append(f"{where}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not problems, "broken links:\n" + "\n".join(problems)
