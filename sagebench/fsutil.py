"""Files that are never seen half-written, and a lock that several processes can share.

Why: a results file, a leaderboard or a chunk of per-sample records may be read (or the
process writing it killed) at any moment. :func:`atomic_write_bytes` writes to a temporary
file in the same folder, flushes it to disk and renames it over the target, so a reader sees
the old file or the new one, never a mix. :class:`FileLock` (``fcntl.flock`` on a lock file)
serialises read-modify-write cycles between processes, e.g. two runs submitting to one
leaderboard at once; the kernel releases it when its holder dies, even by SIGKILL, so a crash
never leaves a stale lock behind. :func:`update_json` combines both.

Every path here must be on a local or POSIX-locking file system (flock on some network file
systems is advisory per host only).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from sagebench.errors import SageBenchError

__all__ = [
    "FileLock",
    "LockTimeout",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "file_lock",
    "fsync_dir",
    "update_json",
]


class LockTimeout(SageBenchError):
    """The lock could not be taken in time: another process holds it."""


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename or a new file) to disk; a no-op where unsupported."""
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename.

    Readers never see half a file, and a crash (even SIGKILL) leaves either the old file or the
    new one, plus at worst a hidden ``.<name>.*`` temporary file. With ``durable`` the file and
    its folder are fsynced, so the new content also survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600): give it the mode a plain open() would (or the old file's)
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, durable: bool = True) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n", durable=durable)


def is_temp_file(path: str | os.PathLike) -> bool:
    """A leftover of an interrupted :func:`atomic_write_bytes` (hidden, ``.tmp`` suffix)."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(".tmp")


class FileLock:
    """An exclusive inter-process lock on ``path`` (created if missing), via ``fcntl.flock``.

    ``timeout``: seconds to wait for it (``0``: try once; ``None``: wait forever); on expiry
    :class:`LockTimeout` names the lock file and the holder's pid. Re-entrant within one
    object; not shared between threads. The lock file is left in place on release (deleting it
    would let two processes lock two different files of the same name).
    """

    def __init__(self, path: str | os.PathLike, timeout: float | None = 60.0, poll: float = 0.05,
                 what: str | None = None) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.poll = poll
        self.what = what or str(self.path)
        self._fd: int | None = None
        self._depth = 0

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def holder(self) -> str | None:
        """The pid recorded by the current holder, when readable."""
        try:
            return self.path.read_text().strip() or None
        except OSError:
            return None

    def acquire(self, timeout: float | None | type[Ellipsis] = ...) -> "FileLock":
        import fcntl

        if self._fd is not None:
            self._depth += 1
            return self
        timeout = self.timeout if timeout is ... else timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if timeout is None else time.monotonic() + max(0.0, float(timeout))
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                    if deadline is not None and time.monotonic() >= deadline:
                        holder = self.holder()
                        raise LockTimeout(
                            f"{self.what} is locked by another process{f' (pid {holder})' if holder else ''}; "
                            f"gave up after {timeout:g} s. Wait for it to finish (the lock is released when "
                            "its holder exits, even if it crashes)."
                        ) from None
                    time.sleep(self.poll)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._depth = 1
        return self

    def release(self) -> None:
        import fcntl

        if self._fd is None:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten lock must not outlive its object
        with contextlib.suppress(Exception):
            while self._fd is not None:
                self.release()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float | None = 60.0, what: str | None = None) -> Iterator[FileLock]:
    """``with file_lock("board.json.lock"): ...``: hold :class:`FileLock` for the block."""
    lock = FileLock(path, timeout=timeout, what=what)
    with lock:
        yield lock


def update_json(path: str | os.PathLike, update: Callable[[Any], Any], default: Callable[[], Any] = dict,
                timeout: float | None = 60.0) -> Any:
    """Read-modify-write a JSON file under a lock (``<path>.lock``), written atomically.

    ``update`` receives the current content (``default()`` when the file does not exist) and
    returns the new content (or ``None`` after changing it in place). Concurrent callers in any
    number of processes are serialised, so none of their changes is lost. Returns what was written.
    """
    path = Path(path)
    with file_lock(path.with_name(path.name + ".lock"), timeout=timeout, what=f"{path} (lock {path.name}.lock)"):
        try:
            current = json.loads(path.read_text())
        except FileNotFoundError:
            current = default()
        except json.JSONDecodeError as exc:
            raise SageBenchError(f"{path} is not valid JSON ({exc}); fix or remove it.") from exc
        new = update(current)
        new = current if new is None else new
        atomic_write_json(path, new)
        return new
