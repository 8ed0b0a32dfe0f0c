"""Crash-safe file writing and file hashing shared by checkpoints, engines and parity files."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def umask_mode() -> int:
    """The mode `open()` gives a new file (0o644 under the usual umask 022). Written files get
    it rather than mkstemp's 0600: weights, checkpoints and reports are not secrets, and a
    node or colleague running as another user must be able to read them."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write `path` through `write(handle)` so readers see the old file or the whole new one.

    The bytes go to a hidden temp file beside `path` (same filesystem), are fsynced, renamed
    over `path`, and the directory is fsynced so the rename survives a crash. On any error the
    temp file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(directory: str | Path) -> None:
    """fsync a folder so that renames into it survive a crash."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """`atomic_write` of a bytes value."""
    return atomic_write(path, lambda handle: handle.write(data))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read `chunk` bytes at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class WriteError(RuntimeError):
    """A file could not be written (full disk, read-only or immutable folder, path under a file).

    The message is one line naming the path and the cause; the target is left as it was.
    """


def write_error(path: str | Path, err: OSError) -> WriteError:
    """One-line WriteError for an OSError raised while writing `path`."""
    cause = err.strerror or str(err)
    name = os.strerror(err.errno) if err.errno else type(err).__name__
    if cause != name:
        cause = f"{cause} ({name})"
    return WriteError(f"cannot write {path}: {cause}")


def ensure_dir(directory: str | Path) -> Path:
    """mkdir -p that says 'Not a directory' (not 'File exists') when a file is in the way."""
    directory = Path(directory)
    for folder in (directory, *directory.parents):
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
            break
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def os_error_in_chain(err: BaseException) -> OSError | None:
    """The first OSError in an exception's cause/context chain (exporters wrap them)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
