"""raynas writes generated data only into what it made: a new or empty folder, or one carrying its marker.

A data root is often a folder of the user's (``--out ~/coco``, or a job's ``data.root`` with ``data.format``
left at its default): a generator that moved its ``train/`` and ``val/`` aside would delete the user's
dataset. So every generator claims its root first (:func:`claim_output`, before it writes a byte) and
publishes into it with :func:`publish`, which leaves the marker :data:`MARKER` at the root: which generator
made the data, with which settings, and whether the swap finished. Anything without that marker (other
than the bodies ``raynas pretrain`` keeps in ``pretrained/``) is the user's, and is refused with one line.
Digits folders made before the marker existed are recognised by their annotation files.

Marker: ``{"generator": kind, "settings": {...}, "raynas_version": str, "entries": [...],
"complete": bool}``; ``entries`` are the names the generator publishes, ``complete`` is false while they
are being swapped in (an interrupted swap leaves raynas's own unfinished data, generated anew next time).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from raynas import __version__
from raynas.config import ConfigError
from raynas.data.annotations import DatasetError
from raynas.io import atomic_write_json

MARKER = ".raynas-dataset.json"
PRETRAINED = "pretrained"  # raynas pretrain keeps bodies in DATA/pretrained/, possibly before DATA exists
_PRETRAINED_FILES = (".pt", ".run_info.json", ".lock", ".tmp")  # bodies, their records, locks, temp files
_LISTED = 5  # entries named in a refusal


def read_json(path: Path, fix: str) -> dict[str, Any]:
    """A JSON object raynas wrote (a marker, generated annotations), checked, not trusted: a missing,
    truncated or edited file is one line naming ``path`` and ``fix``, never a decoder traceback."""
    try:
        payload = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing; {fix}") from None
    except IsADirectoryError:
        raise DatasetError(f"{path} is a folder, not a JSON file; {fix}") from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path} is damaged (not UTF-8 text: byte {err.start}); {fix}") from None
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{path} is damaged (not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}); {fix}"
        ) from None
    if not isinstance(payload, dict):
        raise DatasetError(f"{path} is damaged (a JSON {type(payload).__name__}, not an object); {fix}")
    return payload


def _marker_fix(root: Path) -> str:
    return (
        f"if raynas made {str(root)!r}, delete that folder and run again (it is generated anew); "
        f"if the files there are yours, delete only {MARKER}"
    )


def read_marker(root: str | os.PathLike) -> dict[str, Any] | None:
    """The marker at ``root``, or ``None`` where there is none; a damaged or edited marker is an error that
    names the file (never taken for absent: that would make raynas's data look like the user's)."""
    root = Path(root)
    path = root / MARKER
    if not path.exists() and not path.is_symlink():
        return None
    marker = read_json(path, _marker_fix(root))
    marker.setdefault("entries", [])
    marker.setdefault("complete", True)
    wrong = [
        key
        for key, kind in (("generator", str), ("settings", dict), ("entries", list), ("complete", bool))
        if not isinstance(marker.get(key), kind)
    ]
    if wrong or not all(isinstance(e, str) and e and "/" not in e for e in marker["entries"]):
        raise ConfigError(f"{path} is damaged (bad or missing {wrong or ['entries']}); {_marker_fix(root)}")
    return marker


def _legacy_marker(root: Path, what: str, fix: str) -> dict[str, Any] | None:
    """Digits made by a raynas before markers: both annotation files say "raynas digits" in their info."""
    files = [root / "annotations" / f"instances_{split}.json" for split in ("train", "val")]
    if not all(path.is_file() for path in files):
        return None
    for path in files:
        unsure = f"raynas cannot tell whether it made {what} {str(root)!r}: if it did, delete that folder "
        info = read_json(path, unsure + f"and run again; {fix}").get("info")
        if not isinstance(info, dict) or not str(info.get("description", "")).startswith("raynas digits"):
            return None
    from raynas.data.digits import digits_settings  # digits imports this module

    settings = digits_settings(root)
    return {"generator": "digits", "settings": settings, "entries": ["train", "val", "annotations"],
            "complete": True}  # fmt: skip


def _pretrained_bodies(entry: Path) -> bool:
    """``pretrained/`` as ``raynas pretrain`` leaves it (only its files): data may be generated beside it."""
    if entry.name != PRETRAINED or entry.is_symlink() or not entry.is_dir():
        return False
    return all(p.is_file() and p.name.endswith(_PRETRAINED_FILES) for p in entry.iterdir())


def _listing(entries: list[Path]) -> str:
    names = [e.name + ("/" if e.is_dir() else "") for e in entries[:_LISTED]]
    return ", ".join(names + ["..."] * (len(entries) > _LISTED))


def claim_output(
    root: str | os.PathLike, kind: str, settings: dict[str, Any], *, replace: bool, what: str, fix: str
) -> bool:
    """Whether generator ``kind`` may write ``settings``' data into ``root``; checked before anything is
    written. True: ``root`` holds that data already (nothing to do). False: ``root`` is missing or empty,
    or holds raynas's own ``kind`` data that may be written (unfinished, or of other settings with
    ``replace``). Anything else raises one line naming ``what`` (``--out``, ``data.root``), what is there,
    and ``fix``: the user's files, other generators' data, ``kind`` data of other settings without
    ``replace``."""
    root = Path(root)
    where = f"{what} {str(root)!r}"
    if not root.exists() and not root.is_symlink():
        return False
    if not root.is_dir():
        raise NotADirectoryError(f"{where} is a file, not a folder; {fix}")
    marker = read_marker(root) or _legacy_marker(root, what, fix)
    if marker is None:
        foreign = sorted((e for e in root.iterdir() if not _pretrained_bodies(e)), key=lambda e: e.name)
        if not foreign:
            return False
        count = f"{len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'}"
        raise ConfigError(
            f"{where} holds {count} raynas did not make: {_listing(foreign)}; raynas generates data only "
            f"into a new or empty folder or one it made; {fix}"
        )
    if marker["generator"] != kind:
        raise ConfigError(f"{where} holds raynas's {marker['generator']} data, not {kind} data; {fix}")
    if not marker["complete"] or not all((root / entry).exists() for entry in marker["entries"]):
        return False  # raynas's own, unfinished or partly deleted: generated anew
    found = marker["settings"]
    if found == settings:
        return True
    if replace:
        return False
    changed = {k: f"{found.get(k)} there, {v} asked" for k, v in settings.items() if found.get(k) != v}
    changed |= {k: f"{v} there, not asked" for k, v in found.items() if k not in settings}
    raise ConfigError(f"{where} holds {kind} data generated with other settings ({changed}); {fix}")


def _write_marker(
    root: Path, kind: str, settings: dict[str, Any], entries: tuple[str, ...], done: bool
) -> None:
    marker = {"generator": kind, "settings": settings, "raynas_version": __version__,
              "entries": list(entries), "complete": done}  # fmt: skip
    atomic_write_json(root / MARKER, marker)


def publish(staging: Path, root: Path, entries: tuple[str, ...], kind: str, settings: dict[str, Any]) -> None:
    """Move ``entries`` (finished in ``staging``, on ``root``'s filesystem) into ``root``, after
    :func:`claim_output` allowed it. The marker first says the data are unfinished, the old entries leave
    (into ``staging/.replaced``, deleted with ``staging``), the new ones arrive, and the marker says
    complete last: an interrupted swap leaves raynas's own unfinished data, never old and new mixed nor a
    folder that looks like the user's. Other entries of ``root`` (e.g. ``pretrained/``) are kept."""
    root.mkdir(parents=True, exist_ok=True)
    _write_marker(root, kind, settings, entries, done=False)
    old = staging / ".replaced"
    old.mkdir()
    for entry in entries:
        if (root / entry).exists() or (root / entry).is_symlink():
            os.replace(root / entry, old / entry)
    for entry in entries:
        os.replace(staging / entry, root / entry)
    _write_marker(root, kind, settings, entries, done=True)


def generated_root(path: str | os.PathLike) -> Path | None:
    """The dataset root raynas generated that ``path`` (``ROOT/annotations/x.json``) belongs to, or None."""
    root = Path(path).absolute().parent.parent
    return root if read_marker(root) is not None else None
