"""One writer per output directory, and state files that may be half-written.

``output_lock(OUT, command)`` takes an exclusive, non-blocking ``fcntl.flock`` on
``OUT/.rsdata/lock`` for as long as the ``with`` block runs; a second rsdata process on the same
directory gets :class:`~rsdata.errors.OutputLockedError` (an ``OutputConflictError``: exit 2 through
the CLI) naming the holder's pid, host, command and start time. The kernel drops the lock when the
holder exits for any reason (crash, SIGKILL), so a lock is never stale; the holder's details in
the file are only there for the message.

    with output_lock(out_dir, "rsdata run pipelines/demo.yaml") as lock:
        plan = build_plan(...)          # may delete and recreate OUT/.rsdata (--overwrite) ...
        lock.check()                    # ... so re-assert the lock before writing
        run_local(plan, ...)

``read_json_state(path)`` reads a JSON state file that an earlier, killed run may have left
half-written: ``None`` when it is missing or unreadable as a JSON object, so the caller can treat
it as absent (and rewrite it) instead of failing with a traceback.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rsdata.errors import InputError, OutputLockedError, OutputWriteError, UsageError

STATE_DIR = ".rsdata"
LOCK_NAME = "lock"
_ATTEMPTS = 20  # a lock file deleted by its releasing holder between our open and flock: retry


def command_line(argv: list[str] | None = None, limit: int = 300) -> str:
    """The current command as a user would type it (for the holder's entry in the lock file)."""
    args = list(sys.argv if argv is None else argv)
    if args and Path(args[0]).name in ("__main__.py", "rsdata", "cli.py"):
        args[0] = "rsdata"
    text = " ".join(args) or "rsdata"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_output_dir(out_dir: Path, option: str = "--out") -> None:
    """Refuse an output path that exists and is not a directory (or lies below a file)."""
    out_dir = Path(out_dir)
    for parent in (out_dir, *out_dir.parents):
        if parent.exists() and not parent.is_dir():
            what = "it" if parent == out_dir else f"its parent {parent}"
            raise UsageError(f"{option} {out_dir}: {what} is a file, not a directory. Give a directory "
                             "for the output (it is created when missing), or move the file away.")
        if parent.exists():
            return


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(fd: int) -> dict[str, Any]:
    """The holder's entry in the lock file (it writes it right after locking: give it a moment)."""
    for _ in range(10):
        try:
            raw = os.pread(fd, 65536, 0)
            info = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (OSError, ValueError):
            info = None
        if isinstance(info, dict):
            return info
        time.sleep(0.02)
    return {}


def _conflict_message(out_dir: Path, info: dict[str, Any]) -> str:
    pid = info.get("pid")
    host = info.get("host")
    started = info.get("started")
    parts = [f"pid {pid}" if pid else "pid unknown"]
    if host and host != socket.gethostname():
        parts.append(f"on host {host}")
    if info.get("command"):
        parts.append(f"running `{info['command']}`")
    if started:
        age = ""
        if isinstance(info.get("started_unix"), (int, float)):
            age = f" ({max(0, int(time.time() - info['started_unix']))} s ago)"
        parts.append(f"started {started}{age}")
    msg = (f"{out_dir} is in use by another rsdata process ({', '.join(parts)}). Two processes "
           "writing one output directory would corrupt it: wait for that one to finish, "
           "stop it")
    msg += f" (kill {pid})" if pid else ""
    msg += ", or choose another --out."
    if pid and (not host or host == socket.gethostname()) and isinstance(pid, int) and not _pid_alive(pid):
        msg += (f" Process {pid} has exited, but a process it started (a worker) still holds the lock "
                f"on {out_dir / STATE_DIR / LOCK_NAME}: stop that process first.")
    return msg


class OutputLock:
    """A held lock (see :func:`output_lock`); ``check()`` re-asserts it after the directory changed."""

    def __init__(self, out_dir: Path, path: Path, command: str, fd: int) -> None:
        self.out_dir = out_dir
        self.path = path
        self.command = command
        self.fds = [fd]
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                     "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "started_unix": round(time.time(), 3)}
        self._write(fd)

    def _write(self, fd: int) -> None:
        try:
            data = json.dumps(self.info).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError:
            pass  # the entry only feeds another process's message; the lock itself holds

    def _ours(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        own = os.fstat(self.fds[-1])
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

    def check(self) -> None:
        """Make sure the lock file at ``path`` is still ours; if something deleted it (e.g. an
        ``--overwrite`` that cleared ``OUT/.rsdata``), take a fresh one, or raise
        :class:`OutputLockedError` when another process got there first."""
        if self._ours():
            return
        fd = _acquire(self.out_dir, self.path)
        self.fds.append(fd)
        self._write(fd)

    def release(self) -> None:
        if self.fds and self._ours():
            try:
                os.unlink(self.path)  # while still holding it: contenders re-check the inode
            except OSError:
                pass
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


def _acquire(out_dir: Path, path: Path) -> int:
    last: OSError | None = None
    for _ in range(_ATTEMPTS):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            flags = getattr(os, "O_CLOEXEC", 0)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o644)
            except PermissionError:
                if not path.exists():
                    raise
                fd = os.open(path, os.O_RDONLY | flags)  # another user's lock file: still lockable
        except FileNotFoundError as exc:  # a releasing holder removed the directory: retry
            last = exc
            continue
        except (NotADirectoryError, FileExistsError):
            check_output_dir(out_dir)
            raise UsageError(f"{path.parent} is a file, not a directory: rsdata keeps its state "
                             f"there. Move it away or choose another --out.") from None
        except OSError as exc:
            raise OutputWriteError(f"cannot create the lock file {path}: {exc.strerror or exc}. "
                                   "Check that the output directory is writable.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise OutputWriteError(f"cannot lock {path}: {exc.strerror or exc}. rsdata needs a "
                                       "file system with file locks for its output.") from None
            info = _holder(fd)
            os.close(fd)
            raise OutputLockedError(_conflict_message(out_dir, info)) from None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            os.close(fd)
            continue
        own = os.fstat(fd)
        if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
            return fd
        os.close(fd)  # we locked a file its holder had just released and deleted: try again
    raise OutputWriteError(f"cannot take the lock {path}: it keeps disappearing ({last}); "
                           "is another program deleting the output directory?")


@contextmanager
def output_lock(out_dir: str | Path, command: str | None = None, *,
                name: str = LOCK_NAME) -> Iterator[OutputLock]:
    """Hold the exclusive lock of ``out_dir`` (``OUT/.rsdata/<name>``) for the ``with`` block.

    Creates the directories as needed (and removes them again on exit if they are still empty and
    this call created them). Raises :class:`OutputLockedError` at once when another process holds
    the lock, :class:`UsageError` when ``out_dir`` is a file.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    state = out_dir / STATE_DIR
    created = [d for d in (state, out_dir, *out_dir.parents) if not d.exists()]
    path = state / name
    fd = _acquire(out_dir, path)
    lock = OutputLock(out_dir, path, command or command_line(), fd)
    try:
        yield lock
    finally:
        lock.release()
        for d in created:  # innermost first; only what this call created and is still empty
            try:
                d.rmdir()
            except OSError:
                break


def read_json_state(path: str | Path) -> dict[str, Any] | None:
    """A JSON object from a state file, or ``None`` when the file is missing, empty, truncated,
    not UTF-8, not JSON or not an object (a killed run's leftovers: treat as absent, rewrite it).

    Raises :class:`InputError` only for what rewriting will not fix (no permission, a directory).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, but rsdata keeps a file there: remove it "
                         "(it is not rsdata's) and run again.") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}. Check its permissions.") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None
