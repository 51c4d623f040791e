"""Files that are never seen half-written, and a lock that several processes can share.

Why: a results file, a leaderboard or a chunk of per-sample records may be read (or the
process writing it killed) at any moment. :func:`atomic_write_bytes` writes to a temporary
file in the same folder, flushes it to disk and renames it over the target, so a reader sees
the old file or the new one, never a mix. :class:`FileLock` (the ``filelock`` package, plus the
holder's pid) serialises read-modify-write cycles between processes, e.g. two runs submitting
to one leaderboard at once. :func:`update_json` combines both. :func:`check_writable` probes an
output folder before any compute.

Every path here must be on a local or POSIX-locking file system (flock on some network file
systems is advisory per host only).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from sagebench.errors import SageBenchError

__all__ = [
    "FileLock",
    "LockTimeout",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable",
    "file_lock",
    "fsync_dir",
    "held_by_another",
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
    """An exclusive inter-process lock on ``path`` (the ``filelock`` package's ``fcntl.flock`` lock).

    ``timeout``: seconds to wait for it (``0``: try once; ``None``: wait forever); on expiry
    :class:`LockTimeout` names what is locked and the holder's pid. Why a thin wrapper over
    ``filelock.FileLock``: the holder's pid is written beside the lock (``<path>.pid``; the lock
    file itself is truncated by every waiter), so that a second run can say which live process
    holds an output folder or a board. The kernel releases the lock when its holder dies, even
    by SIGKILL, so a crash never leaves a stale lock. Re-entrant within one object.
    """

    def __init__(self, path: str | os.PathLike, timeout: float | None = 60.0, poll: float = 0.05,
                 what: str | None = None) -> None:
        import filelock

        self.path = Path(path)
        self.timeout = timeout
        self.poll = poll
        self.what = what or str(self.path)
        self._lock = filelock.FileLock(str(self.path), timeout=-1 if timeout is None else float(timeout),
                                       thread_local=False)
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file locked

    @property
    def pid_path(self) -> Path:
        return self.path.with_name(self.path.name + ".pid")

    @property
    def locked(self) -> bool:
        return self._lock.is_locked

    def holder(self) -> str | None:
        """The pid recorded by the current holder, when readable."""
        try:
            return self.pid_path.read_text().strip() or None
        except OSError:
            return None

    def acquire(self, timeout: float | None | type[Ellipsis] = ...) -> "FileLock":
        import filelock

        first = not self._lock.is_locked
        timeout = self.timeout if timeout is ... else timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=-1 if timeout is None else max(0.0, float(timeout)),
                               poll_interval=self.poll)
        except filelock.Timeout:
            holder = self.holder()
            raise LockTimeout(
                f"{self.what} is locked by another process{f' (pid {holder})' if holder else ''}; "
                f"gave up after {timeout:g} s. Wait for it to finish (the lock is released when "
                "its holder exits, even if it crashes)."
            ) from None
        if first:
            atomic_write_text(self.pid_path, f"{os.getpid()}\n", durable=False)
            self._identity = _file_identity(self.path)
        return self

    def still_held(self) -> bool:
        """Held by this object, on the file that is at :attr:`path` now (not one deleted and made again)."""
        return self._lock.is_locked and self._identity is not None and _file_identity(self.path) == self._identity

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()
        if not self._lock.is_locked:
            self._identity = None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def held_by_another(path: str | os.PathLike) -> tuple[bool, str | None]:
    """``(held, pid)``: whether another process holds the :class:`FileLock` at ``path`` now, and its pid.

    Creates nothing: a missing lock file is a free lock. Probes with a non-blocking attempt that is
    released at once (call it only for a lock this process does not hold itself).
    """
    import filelock

    path = Path(path)
    if not path.is_file():
        return False, None
    probe = filelock.FileLock(str(path), timeout=0, thread_local=False)
    try:
        probe.acquire(timeout=0)
    except filelock.Timeout:
        try:
            pid = path.with_name(path.name + ".pid").read_text().strip() or None
        except OSError:
            pid = None
        return True, pid
    except OSError:  # unreadable lock file: cannot tell, do not refuse for it
        return False, None
    probe.release()
    return False, None


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


def check_writable(out_dir: Path) -> None:
    """Raise a :class:`SageBenchError` now, not after the sweep, when ``out_dir`` cannot be written.

    Creates nothing: probes the folder, or the nearest existing folder above it, with a
    temporary file that is removed at once.
    """
    out_dir = Path(out_dir)
    probe = out_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    hint = "Set output_dir=PATH to a writable folder."
    if probe.exists() and not probe.is_dir():
        raise SageBenchError(f"Cannot write results to {out_dir}: {probe} is a file, not a folder. {hint}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".sagebench-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise SageBenchError(f"Cannot write results to {out_dir}: {probe} is not writable "
                             f"({exc.strerror or exc}). {hint}") from exc
