"""Every command line the README and the docs show parses: ``python experiments/X.py ...`` with that script's
own parser, ``raynas ...`` with the CLI's, so a renamed script, subcommand, flag or choice in a write-up fails
here. Running them is the entry-point tests' job (they train for minutes). A synopsis (``[--flag a|b]``,
``...``) is checked flag by flag: each option it names exists; a concrete command is parsed whole.
The shell blocks are the un-labelled and ``bash`` fences; ``python`` blocks are run by test_docs_snippets.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
from pathlib import Path

import pytest

from raynas.cli import build_parser as cli_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "experiments" / "results").glob("*/README.md")),
]
SEPARATORS = {"&&", "||", ";", "&", "|"}


def shell_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of the shell fences of ``path`` (continuations joined), with their line numbers."""
    lines, fence, pending = [], None, ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.lstrip().startswith("```"):  # a fence, also an indented one (in a list)
            fence = None if fence is not None else line.lstrip()[3:].strip()
            continue
        if fence in ("", "bash", "sh"):
            pending += line.strip().rstrip("\\") + " "
            if not line.endswith("\\"):
                lines.append((number, pending.strip()))
                pending = ""
    return lines


def command_of(words: list[str]) -> list[str] | None:
    """The argv a command line runs: ``python experiments/X.py ...`` and the script a ``ray submit`` or
    ``ray job submit ... -- python`` sends (its flags after ``--``), as ``[script, *flags]``; ``raynas ...``
    as it is; None for any other command."""
    if words and words[0] == "raynas":
        return words
    scripts = [i for i, word in enumerate(words) if word.startswith("experiments/") and word.endswith(".py")]
    runs_it = words and (words[0].startswith("python") or words[0] == "ray")
    if not scripts or not runs_it:
        return None
    flags = words[scripts[0] + 1 :]
    return [words[scripts[0]], *(flags[1:] if flags[:1] == ["--"] else flags)]


def commands(paths: list[Path], root: Path = ROOT) -> list[tuple[str, list[str]]]:
    """``(where, argv)`` of every experiment script and ``raynas`` command in the shell fences."""
    found = []
    for path in paths:
        for number, line in shell_lines(path):
            words: list[str] = []
            for word in [*shlex.split(line, comments=True), ";"]:
                if word not in SEPARATORS:
                    words.append(word)
                    continue
                argv = command_of(words)
                if argv is not None:
                    found.append((f"{path.relative_to(root)}:{number}", argv))
                words = []
    return found


def script_parser(script: str) -> argparse.ArgumentParser:
    name = "documented_" + Path(script).stem
    if name not in sys.modules:  # a script's dataclasses need their module registered
        spec = importlib.util.spec_from_file_location(name, ROOT / script)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name].build_parser()


def subparser(parser: argparse.ArgumentParser, words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The (sub)parser a command's leading subcommand words select, and the words left."""
    while words:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or words[0] not in actions[0].choices:
            break
        parser, words = actions[0].choices[words[0]], words[1:]
    return parser, words


COMMANDS = commands(DOCS)


def test_the_docs_show_commands_of_both_kinds() -> None:
    kinds = {argv[0].startswith("experiments/") for _, argv in COMMANDS}
    assert kinds == {True, False} and len(COMMANDS) >= 15


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_a_documented_command_parses(where: str, argv: list[str]) -> None:
    if argv[0].startswith("experiments/"):
        assert (ROOT / argv[0]).is_file(), f"{where}: no script {argv[0]}"
        parser, words = script_parser(argv[0]), argv[1:]
    else:
        parser, words = subparser(cli_parser(), argv[1:])
    synopsis = any("[" in word or "..." in word or "<" in word for word in words)
    if not synopsis:
        parser.parse_args(words)  # argparse exits (status 2) on an unknown flag or a bad choice
        return
    known = {option for action in parser._actions for option in action.option_strings}
    for word in words:
        flag = word.strip("[]").split("=")[0]
        if flag.startswith("--"):
            assert flag in known, f"{where}: {flag} is not an option of {' '.join(argv[:3])}"


def test_a_stale_flag_in_a_write_up_is_caught(tmp_path: Path) -> None:
    """The check itself: a continued command in a bash fence is found whole, and a flag the script lost
    fails to parse."""
    doc = tmp_path / "README.md"
    doc.write_text(
        "text\n```bash\npython experiments/proxy_calibration.py --layout pair \\\n"
        "    --no-such-flag 3 &\n```\n```text\nraynas data scenes --nope\n```\n"
    )
    found = [argv for _, argv in commands([doc], root=tmp_path)]
    assert found == [["experiments/proxy_calibration.py", "--layout", "pair", "--no-such-flag", "3"]]
    with pytest.raises(SystemExit):
        script_parser(found[0][0]).parse_args(found[0][1:])
