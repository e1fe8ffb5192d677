"""Atomic file writes (temporary file + fsync + rename): a crash never leaves half a file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def no_space_error(exc: OSError, path: Path) -> Exception:
    """The error to raise for an OSError while writing ``path``: a clear
    :class:`~rsdata.errors.OutputWriteError` when the disk (or a quota, or a file size limit)
    is full, else the original error."""
    if exc.errno in NO_SPACE:
        from rsdata.errors import OutputWriteError

        return OutputWriteError(
            f"cannot write {path}: {exc.strerror} ({errno.errorcode.get(exc.errno or 0, exc.errno)}). "
            "Nothing half-written was kept; free some space (or choose another --out) and run the "
            "same command again.")
    return exc


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        err = no_space_error(exc, path)
        if err is exc:
            raise
        raise err from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
