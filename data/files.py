"""Output files that are never left half-written: written under a temporary name, then renamed.

Every command of the project writes its outputs through :func:`atomic_path`, so a run killed at any
moment leaves either the old file or the new one under the real name, never part of one.
"""
from __future__ import annotations

import glob
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temporary_name(path: str | os.PathLike) -> Path:
    """The hidden temporary name beside ``path`` this process writes to: ``.<name>.<pid>.tmp``.

    The pid lets a resumed job tell a temporary left by a killed run from one still being written.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (another user's counts; 0, not yet written, does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Remove the temporaries of ``path`` (:func:`temporary_name`) that killed processes on this machine
    left behind (a checkpoint's are as large as it); one that cannot be removed is left."""
    path = Path(path)
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-len(".tmp")]
        if pid.isdigit() and not _running(int(pid)):
            try:
                tmp.unlink()
            except OSError:  # gone meanwhile, another user's, or a folder
                pass


@contextmanager
def atomic_path(path: str | os.PathLike, sync: bool = False, sweep: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends, rename it onto ``path``.

    Parameters
    ----------
    path : path
        The file to (re)place.
    sync : bool
        ``fsync`` the temporary before the rename, for large files whose loss would be costly.
    sweep : bool
        First remove the temporaries of ``path`` that killed processes left
        (:func:`remove_stale_temporaries`), for large files: it lists the folder.

    Examples
    --------
    >>> with atomic_path("out/metrics.json") as tmp:   # doctest: +SKIP
    ...     tmp.write_text("{}")

    If the block raises, the temporary is removed and ``path`` is left as it was. A folder at
    ``path`` raises ``IsADirectoryError`` before the block runs.
    """
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: a folder, where a file is to be written")
    if sweep:
        remove_stale_temporaries(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if sync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Locked(RuntimeError):
    """Another running process holds the lock of a file (:func:`held_lock`)."""


@contextmanager
def held_lock(target: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``.<target name>.lock`` beside ``target`` while ``what`` writes it: two writers at once would
    lose work (each taking the other's partial file for a broken one).

    The lock file holds the holder's process id; one left by a process that no longer runs (killed)
    is taken over.

    Raises
    ------
    Locked
        When a running process holds the lock, naming it and the lock file.
    """
    target = Path(target)
    path = target.with_name(f".{target.name}.lock")
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)  # a plain file, not an executable
            break
        except FileExistsError:
            try:
                pid = int(path.read_text() or 0)  # empty: its holder is writing its pid now
            except (ValueError, FileNotFoundError):  # not a lock of ours, or just released
                path.unlink(missing_ok=True)
                continue
            if not _running(pid):
                path.unlink(missing_ok=True)  # its process is gone
                continue
            raise Locked(f"{target}: {what} (process {pid}) is writing it; wait for it to finish, or delete "
                         f"{path} if it is not running") from None
    else:
        raise Locked(f"{target}: cannot take the lock {path}")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        path.unlink(missing_ok=True)


def output_error(path: str | os.PathLike, what: str = "", parents: bool = False) -> str | None:
    """Why no file can be written at ``path`` (a folder is there, no folder to hold it, or that folder
    cannot be written in), for an argument's error message (``what``: its name, e.g. ``--taggram``);
    ``None`` when one can. ``parents``: the missing folders above it are to be made."""
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    if path.is_dir():
        return f"{name}: a folder; give the name of a file to write (in it, or elsewhere)"
    if not parents and not path.parent.exists():
        return f"{name}: the folder {path.parent} does not exist; create it or pick another"
    return _place_error(path.parent, name)


def folder_error(path: str | os.PathLike, what: str = "") -> str | None:
    """Why no folder can be made, or written in, at ``path`` (a file is there, or above it; no
    permission; a read-only disk), for an argument's error message; ``None`` when one can."""
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    if path.exists() and not path.is_dir():
        return f"{name}: a file, not a folder; give a folder's name"
    return _place_error(path, name)


def _place_error(folder: Path, name: str) -> str | None:
    """Why ``folder`` (made if missing) cannot hold new files, judged at its nearest existing folder."""
    near = folder
    while not near.exists() and near != near.parent:
        near = near.parent
    if not near.is_dir():
        return f"{name}: {near} is a file, not a folder"
    if not os.access(near, os.W_OK | os.X_OK):  # also false on a read-only disk, even for root
        return f"{name}: cannot write in {near} (no permission, or a read-only disk)"
    return None


def write_atomically(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
