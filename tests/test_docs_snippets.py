"""Every Python snippet of the README and the docs runs, so that none goes stale unnoticed.

The ```` ```python ```` blocks of ``README.md``, ``docs/*.md`` and ``experiments/results/*/README.md`` are run
as they are written, each in a temporary working directory (so that the ``runs/...`` folders they write land
there), under the module's local Ray when they use Ray. Bash blocks (```` ```bash ````) are not executed:
they install packages, start clusters or run whole experiments, which other tests cover through the real
entry points; ```` ```text ```` blocks are printed output.

What a snippet names that only a finished job leaves behind is replaced by a cheap stand-in
(:data:`STAND_INS`: the super-net checkpoint of the main job becomes a tiny untrained one written without Ray
Train), and a documented budget by a smaller one (:data:`BUDGETS`); the code path is the snippet's own.
A snippet that needs the super-net runs a Tune search (scorer actors, Tune trial processes): 85-120 s on the
2 shared cores here (load about 20), so it is marked slow
(``python -m pytest -m slow tests/test_docs_snippets.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers_supernet import make_supernet_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "experiments" / "results").glob("*/README.md")),
]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
USES_RAY = re.compile(r"\bray\b|ensure_ray|raynas\.search")

#: text in a snippet that stands for what a finished job leaves behind -> the fixture building a stand-in
STAND_INS = {'"runs/opanas_ea/supernet/checkpoint_..."': "supernet_checkpoint"}
#: a documented budget -> the test's (40 Tune trials of one candidate each take minutes on 2 cores)
BUDGETS = {"num_samples=40": "num_samples=4"}


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int  # of the opening fence
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_snippets(paths: list[Path]) -> list[Snippet]:
    """The ```` ```python ```` blocks of ``paths``, in order."""
    snippets = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for match in PYTHON_BLOCK.finditer(text):
            snippets.append(Snippet(path, text.count("\n", 0, match.start()) + 1, match.group(1)))
    return snippets


def optuna_table(namespace: dict[str, Any], snippet: Snippet) -> None:
    """docs/searchers.md: one row per candidate of the budget, scored, in the CSV it says it writes."""
    written = pd.read_csv("runs/opanas_ea/search/optuna/results.csv")
    assert len(written) == len(namespace["table"]) == 4
    assert written["AP"].notna().all() and set(written["strategy"]) == {"optuna"}


#: what a snippet must have left behind, beyond running without an error (keyed by its file)
OUTCOMES: dict[str, Callable[[dict[str, Any], Snippet], None]] = {"docs/searchers.md": optuna_table}

SNIPPETS = python_snippets(DOCS)


def as_param(snippet: Snippet) -> Any:
    """A snippet on the stand-in super-net runs a Tune search, which takes well over 30 s here: slow."""
    slow = any(text in snippet.code for text in STAND_INS)
    return pytest.param(snippet, id=snippet.name, marks=[pytest.mark.slow] if slow else [])


@pytest.fixture(scope="module")
def supernet_checkpoint(tiny_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_supernet_checkpoint(tmp_path_factory.mktemp("supernet"), tiny_digits)


def test_every_python_block_is_collected_and_every_stand_in_is_used() -> None:
    """A fence the pattern misses would be a snippet nobody runs; a stand-in no snippet contains is stale."""
    fences = sum(path.read_text(encoding="utf-8").count("```python") for path in DOCS)
    assert len(SNIPPETS) == fences >= 1
    for text in [*STAND_INS, *BUDGETS]:
        assert any(text in snippet.code for snippet in SNIPPETS), f"no snippet contains {text!r}"
    assert set(OUTCOMES) <= {str(snippet.path.relative_to(ROOT)) for snippet in SNIPPETS}


@pytest.mark.parametrize("snippet", [as_param(snippet) for snippet in SNIPPETS])
def test_python_snippet_runs(
    snippet: Snippet, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = snippet.code
    for text, fixture in STAND_INS.items():
        if text in code:
            code = code.replace(text, repr(str(request.getfixturevalue(fixture))))
    for text, budget in BUDGETS.items():
        code = code.replace(text, budget)
    if USES_RAY.search(code):
        request.getfixturevalue("ray_session")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(code, snippet.name, "exec"), namespace)
    check = OUTCOMES.get(str(snippet.path.relative_to(ROOT)))
    if check is not None:
        check(namespace, snippet)
