"""Small, shared I/O helpers: atomic writes (never a half-written output), one job per output folder,
folder identity by location, and device choice."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raynas.config import ConfigError
from raynas.errors import raise_disk_full

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: the claim of a run or search folder by the raynas job that writes it (:func:`claim_folder`)
LOCK_FILE = ".raynas.lock"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``.

    A crash mid-write leaves the previous file (or none), never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        raise_disk_full(err, path)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` with the same all-or-nothing guarantee as :func:`atomic_write_bytes`."""
    import torch  # here, not at the top: Tune trial processes import this module and never need torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # through a Python file: a full disk is then OSError(ENOSPC), not torch's "unexpected pos"
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        raise_disk_full(err, path)
        raise
    return path


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if absent): one writer per node of a shared output
    (the generated data, the pretrained body), while the others wait and then find it done."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class FolderInUseError(RuntimeError):
    """Another raynas job holds the folder (:func:`claim_folder`)."""


@contextmanager
def claim_folder(folder: str | os.PathLike, what: str = "job folder") -> Iterator[Path]:
    """Hold ``folder`` for this job: an exclusive, non-blocking ``flock`` on ``<folder>/.raynas.lock``.

    Two jobs writing one run or search folder destroy each other's work (each deletes the other's
    checkpoints as failed attempts), so a second job is refused with one line naming the first. The
    kernel drops the lock when its process dies; a lock file still naming a job is then a crashed job's,
    taken over with a warning. On the way out the lock file goes, and so do the folders the claim made
    if nothing was written into them: a refused command leaves nothing behind. Ray Train workers and
    Tune trials never claim: they write inside their driver's claim.
    """
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    try:
        handle = _locked(path, f"{what} {folder}")
    except BaseException:
        _remove_empty(created)
        raise
    try:
        previous = _record(handle)
        if previous:
            logger.warning(
                "taking over %s %s: the raynas job that held it (%s) ended without releasing it",
                what, folder, _describe(previous),
            )  # fmt: skip
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(_this_job()) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
        yield folder
    finally:
        path.unlink(missing_ok=True)  # while still locked: a job that opened it now re-checks the inode
        handle.close()
        _remove_empty(created)


def _locked(path: Path, where: str) -> Any:
    """The open, locked lock file; :class:`FolderInUseError` when another job holds it."""
    while True:
        handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _record(handle)
            handle.close()
            raise FolderInUseError(
                f"{where} is in use by another raynas job ({_describe(holder)}); wait for it to end, or "
                "give this job another --out (or run name)"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                return handle
        handle.close()  # its holder removed the file on release between our open and our lock: again


def _record(handle: Any) -> dict[str, Any]:
    handle.seek(0)
    try:
        record = json.loads(handle.read() or "{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _this_job() -> dict[str, Any]:
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": shlex.join(argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _describe(record: dict[str, Any]) -> str:
    if not record.get("pid"):
        return "its details are not written yet"
    return (
        f"pid {record['pid']} on {record.get('host', '?')}, `{record.get('command', '?')}`, "
        f"since {record.get('started', '?')}"
    )


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (the job wrote there), or gone: keep
            return


def same_place(old: Any, new: Any, old_folder: str | os.PathLike | None, new_folder: Path) -> bool:
    """Whether a value recorded by a job in ``old_folder`` and today's value name the same thing.

    A job folder is known by where it is, not by how a path was spelt: absolute paths count as the same
    when they resolve alike (a symlink, ``./``) or when ``old`` lies where the folder was and ``new``
    at the same place where it is now (a moved or copied folder, its data moved along). Other values
    must be equal.
    """
    if not (isinstance(old, str) and isinstance(new, str) and os.path.isabs(old) and os.path.isabs(new)):
        return old == new
    if old == new or Path(old).resolve() == Path(new).resolve():
        return True
    if old_folder is None:
        return False
    old_root, new_root = Path(old_folder), Path(new_folder)
    while old_root.name and old_root.name == new_root.name:  # strip the part that did not move
        old_root, new_root = old_root.parent, new_root.parent
    if not Path(old).is_relative_to(old_root):
        return False
    return (new_root / Path(old).relative_to(old_root)).resolve() == Path(new).resolve()


def select_device(prefer: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU. Asking for ``cuda`` without a GPU is an error."""
    import torch

    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(prefer)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA GPU is visible; use device: auto or cpu")
    return device


def run_info(config: Any = None, **extra: Any) -> dict[str, Any]:
    """What reproduces a run: the config, the seed it holds, and the versions of what ran it."""
    import dataclasses
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions = {}
    for package in ("raynas", "torch", "torchvision", "ray", "pycocotools", "numpy", "pandas"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    return {
        "config": config,
        "versions": versions,
        "python": platform.python_version(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        **extra,
    }


def read_job_record(path: Path, what: str, fix: str) -> dict[str, Any]:
    """A job folder's ``run_info.json`` (a training run's or a search's), checked: a damaged one is an error
    that names it, ``what`` it records and the ``fix``. Read as "no record", it would turn off the check
    that refuses to continue a job of other settings."""
    try:
        info = json.loads(path.read_text())
        problem = None if isinstance(info, dict) and isinstance(info.get("config"), dict) else "no config"
    except (OSError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        problem = " ".join(str(err).split())
    if problem is not None:
        raise ConfigError(f"{path} is damaged ({problem}); it records {what}: {fix}")
    return info
