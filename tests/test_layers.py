"""The layering rules of docs/architecture.md, checked on the source: data flows downwards.

Every module's imports are read with ``ast`` (``import x`` and ``from x import y``, at any depth, so an
import inside a function counts as much as one at the top), never by importing the module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "raynas"

#: the folders below the Ray line: usable without Ray and without a training job (studies: tables of rows)
RAY_FREE = ("spaces", "models", "data", "evaluation", "studies")
#: the only folders that may import Ray (jobs: the experiments' layer, above training and search)
RAY_USERS = ("training", "search", "jobs")
EXPERIMENTS = PACKAGE.parent / "experiments"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module the source of ``module`` imports, relative imports resolved to absolute names."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, *([node.module] if node.module else [])])
            found.add(name)
            # ``from raynas import training`` imports the module raynas.training
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def imports_of(path: Path) -> set[str]:
    return imported_modules(path.read_text(), module_name(path), path.name == "__init__.py")


def modules_under(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (PACKAGE / folder).rglob("*.py"))


def is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def offending(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(name for name in imports_of(path) if any(is_within(name, f) for f in forbidden))


def test_the_parser_sees_every_kind_of_import() -> None:
    """Top-level, nested, relative and ``from package import module`` imports are all found."""
    source = (
        "import ray.train\n"
        "from raynas.training.config import TrainConfig\n"
        "def f():\n"
        "    from ..search import run\n"
        "    from . import build\n"
    )
    found = imported_modules(source, "raynas.models.probe")
    assert {"ray.train", "raynas.training.config", "raynas.search.run", "raynas.models.build"} <= found
    assert imported_modules("from .opanas import space", "raynas.spaces", is_package=True) >= {
        "raynas.spaces.opanas.space"
    }


@pytest.mark.parametrize("path", modules_under(*RAY_FREE), ids=lambda p: module_name(p))
def test_pure_pytorch_layers_import_neither_ray_nor_the_jobs(path: Path) -> None:
    assert offending(path, ("ray", "raynas.training", "raynas.search")) == []


def test_the_checkpoint_format_does_not_depend_on_the_jobs() -> None:
    assert offending(PACKAGE / "checkpoints.py", ("ray", "raynas.training", "raynas.search")) == []


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in RAY_USERS),
    ids=lambda p: module_name(p),
)
def test_only_training_and_search_import_ray(path: Path) -> None:
    assert offending(path, ("ray",)) == []


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "jobs"),
    ids=lambda p: module_name(p),
)
def test_nothing_in_the_package_imports_the_experiments_jobs(path: Path) -> None:
    assert offending(path, ("raynas.jobs",)) == []


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.py")), ids=lambda p: p.name)
def test_an_experiment_script_imports_the_package_not_another_script(path: Path) -> None:
    """What two scripts share lives in raynas/jobs or raynas/studies: a script importing a sibling (through
    a ``sys.path`` edit) breaks where only the script is copied (``ray submit``) and hides shared code."""
    scripts = {p.stem for p in EXPERIMENTS.glob("*.py")}
    assert sorted(name for name in imports_of(path) if name.split(".")[0] in scripts) == []
    assert "sys.path" not in path.read_text()


def test_every_module_is_checked() -> None:
    """The Ray-free folders exist and hold modules (a renamed folder must not pass the tests vacuously)."""
    for folder in (*RAY_FREE, *RAY_USERS):
        assert modules_under(folder), folder
    assert len(list(EXPERIMENTS.glob("*.py"))) >= 5


#: the whole order of docs/architecture.md, lowest first: a module imports only from its own layer or lower
ORDER = ("errors", "config", "io", "registry", "spaces", "viz", "models", "data", "evaluation", "checkpoints",
         "studies", "training", "search", "jobs", "cli")  # fmt: skip


def layer_of(name: str) -> str | None:
    """The layer of a ``raynas.*`` module name (its first part below ``raynas``), None for others."""
    parts = name.split(".")
    return parts[1] if parts[0] == "raynas" and len(parts) > 1 else None


def imports_from_above(source: str, module: str) -> list[str]:
    """The ``raynas`` modules that ``source`` (of ``module``) imports from layers above its own."""
    rank = ORDER.index(layer_of(module))
    return sorted(
        name for name in imported_modules(source, module)
        if (layer := layer_of(name)) in ORDER and ORDER.index(layer) > rank
    )  # fmt: skip


@pytest.mark.parametrize(
    "path", sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"), ids=module_name
)
def test_every_module_imports_only_its_own_layer_or_lower(path: Path) -> None:
    assert imports_from_above(path.read_text(), module_name(path)) == []


def test_the_order_catches_an_upward_import_and_names_every_layer() -> None:
    """A data module that imports the training layer fails (the rule is not vacuous); every top-level
    module or folder of the package has its place in the order."""
    source = "def f():\n    from raynas.training.pretrain import pretrain_body\n"
    assert "raynas.training.pretrain" in imports_from_above(source, "raynas.data.probe")
    assert imports_from_above(source, "raynas.jobs.probe") == []
    layers = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    assert layers - {"__init__"} == set(ORDER)
