"""Typed configuration: dataclasses with defaults, loaded strictly from YAML.

One config object drives the CLI, the experiment scripts and the Ray workers. Loading is strict:
unknown keys and wrong types are errors that name the key and the file, because a silently
ignored typo in a search config costs GPU-days.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


def _check_value(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if float in args and isinstance(value, float) and not math.isfinite(value):  # say why, not the union
            return _check_value(value, float, where)
        errors = []
        for option in args:
            try:
                return _check_value(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        names = " | ".join(getattr(a, "__name__", str(a)) for a in args)
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    if annotation is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_check_value(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML's .nan / .inf would only fail later, inside a Ray worker
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation in (str, bool):
        if not isinstance(value, annotation):
            raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
        return value
    return value


#: ``(low, high)`` closed; flags ``"low_open"`` (``low < value``) and ``"high_open"`` (``value < high``);
#: ``None``: unbounded
Bound = tuple


def _out_of(value: float, bound: Bound) -> str | None:
    low, high, *flags = bound
    low_open, high_open = "low_open" in flags, "high_open" in flags
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not below and not above:
        return None
    lower = None if low is None else f"{'>' if low_open else '>='} {low}"
    upper = None if high is None else f"{'<' if high_open else '<='} {high}"
    return " and ".join(part for part in (lower, upper) if part)


def check_ranges(config: Any, ranges: dict[str, Bound], prefix: str = "") -> None:
    """Raise :class:`ConfigError` for a field outside its range (see :data:`Bound`).

    Values that can never work (zero epochs, a negative learning rate, a probability above 1) are refused
    when the config is built, before any job starts; ``None`` passes (optional fields); lists are checked
    item by item. The message names the field and the range."""
    for name, bound in ranges.items():
        value = getattr(config, name)
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is None or isinstance(item, bool):
                continue
            problem = _out_of(item, bound)
            if problem:
                raise ConfigError(f"{prefix}{name} must be {problem}, got {value!r}")


def check_local_storage(path: str, what: str = "storage_path") -> None:
    """raynas writes its own tables, plots and run_info next to Ray's results with local file APIs, so
    a cloud URI would fail half-way through a run: refuse it up front (docs/cluster.md)."""
    if "://" in path:
        raise ValueError(
            f"{what} {path!r} is a URI; raynas needs a local or shared-filesystem path (NFS/EFS mounted at "
            "the same path on every node, see docs/cluster.md). Cloud storage URIs are not supported yet."
        )


def check_run_name(name: str, what: str = "run.name") -> None:
    """A run's name is one folder under its storage path: an empty name, ``.``, ``..`` or a path would put
    its results (and ``run_info.json``) somewhere else, beside or above other runs."""
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise ConfigError(
            f"{what} must be a folder name (not empty, '.' or '..', no '/' or '\\'), got {name!r}; "
            "storage_path says where runs go"
        )


def check_writable_folder(path: str, what: str = "storage_path") -> None:
    """Refuse, before a job writes anything, an output folder that is a file, lies below a file or is not
    writable. Checked where a job starts (not when a config is loaded: a checkpoint's config may name a
    cluster path that does not exist here)."""
    existing = Path(path).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{what} {path!r} cannot be a folder: {str(existing)!r} is a file; choose another --out / path"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{what} {path!r} is not writable here ({str(existing)!r}); choose another --out / path"
        )


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; known keys: {sorted(fields)}"
        )
    kwargs = {name: _check_value(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        text = str(err)
        parent, _, section = where.rpartition(".")
        if parent and text.startswith(f"{section}."):  # "x.yaml.optim" + "optim.epochs ..."
            where = parent
        raise ConfigError(f"{where}: {text}") from err


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-dict form (what goes to YAML, checkpoints and Ray workers)."""
    return dataclasses.asdict(config)


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats: PyYAML (YAML 1.1) reads ``1e-4`` (no dot) as a string, which would reject
    the natural way to write a learning rate or ``mu``. A key given twice in one mapping is an error
    (PyYAML keeps the last one silently, so a whole ``optim:`` block could vanish)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *anchor": merged keys may be overridden, that is what merging is for
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | float | bool | type(None)):
                continue  # an unhashable key: SafeLoader reports it itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice (lines {seen[key]} and {line}); keep one",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> Any:
    """The contents of a YAML file (strict about repeated keys); every error names the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config {str(path)!r} is a directory; pass the path of a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte {err.start}); save the config as UTF-8 YAML"
        ) from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from err


def load_yaml(cls: type[T], path: str | Path) -> T:
    """Load ``cls`` from a YAML file; every error names the file."""
    return from_dict(cls, read_yaml(path), where=str(path))


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def with_overrides(config: T, overrides: dict[str, Any], where: str = "overrides") -> T:
    """``config`` with the keys of ``overrides`` replaced, section by section, and checked like a
    loaded file (an unknown key or a wrong type is an error naming ``where``).

    Why: a preset that is a *budget* (the smoke size of every experiment) lives in one YAML file and
    is laid over each experiment's own recipe, instead of being retyped as ``replace`` chains.
    """
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: expected a mapping of config sections, got {overrides!r}")
    return from_dict(type(config), _merged(to_dict(config), overrides), where=where)


def apply_yaml(config: T, path: str | Path) -> T:
    """``config`` with the overrides in the YAML file ``path`` (see :func:`with_overrides`)."""
    return with_overrides(config, read_yaml(path) or {}, where=str(path))


def dump_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
