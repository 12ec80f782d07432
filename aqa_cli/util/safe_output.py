"""Writing outputs safely: atomic replacement, one writer at a time, partial work, one-line errors for disk
trouble. Every writer of the toolkit goes through these helpers.

Every file a command writes appears whole or not at all (`atomic_output`: a temporary file in the same
folder, fsynced, then renamed over the target; the temporary file is removed on any failure), a second
process writing the same output stops at once (`writer_lock`), long jobs keep what they finished in a
`PartialWork` folder so that a rerun resumes, and a full or read-only disk is one line saying what to do
(`write_error`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from aqa_cli.util.errors import AqaError

DEFAULT_REMEDY = "choose a writable --out"


class OutputError(AqaError):
    """The output location refuses writes (full, read-only, no permission): every later write would fail
    too, so a job of many runs stops instead of recording each run as failed."""


def write_error(exc: OSError, where: Path, remedy: str = DEFAULT_REMEDY) -> AqaError:
    """The one-line error for an OSError while writing `where`."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"disk full while writing {where}: free some space and rerun to resume")
    if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return OutputError(f"cannot write {where}: {exc.strerror}; {remedy}")
    return AqaError(f"cannot write {where}: {exc}")


def temporary_path(path: Path) -> Path:
    """Where `atomic_output` writes `path` first: hidden, in the same folder, one per process (two writers
    never share one)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def os_error_of(exc: BaseException | None) -> OSError | None:
    """The OSError behind an exception, if any (torch and h5py wrap the file's own errors)."""
    while exc is not None and not isinstance(exc, OSError):
        exc = exc.__cause__ or exc.__context__
    return exc


@contextmanager
def atomic_output(path: Path, remedy: str = DEFAULT_REMEDY) -> Iterator[Path]:
    """Yield a temporary path to write `path` through; when the block ends, the temporary file is fsynced
    and renamed over `path`. On any failure it is removed and `path` is left as it was; an OSError (also
    one wrapped by a library, e.g. torch's zip writer) becomes `write_error`'s one line."""
    path = Path(path)
    temp = temporary_path(path)
    with _close_errors_quiet():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            yield temp
            fsync_file(temp)
            os.replace(temp, path)
        except BaseException as exc:
            temp.unlink(missing_ok=True)
            cause = os_error_of(exc)
            if cause is None or isinstance(exc, AqaError | KeyboardInterrupt):
                raise
            raise write_error(cause, path, remedy) from exc


def atomic_write(path: Path, data: bytes | str, remedy: str = DEFAULT_REMEDY) -> None:
    """Write `data` to `path` whole or not at all; concurrent writers never see each other's halves."""
    content = data.encode() if isinstance(data, str) else data
    with atomic_output(path, remedy) as temp, open(temp, "wb") as out:
        out.write(content)
        out.flush()


@contextmanager
def _close_errors_quiet() -> Iterator[None]:
    """After a failed write, h5py reports close errors as 'Exception ignored' tracebacks on stderr; the
    OSError that caused them is reported instead, as one line."""
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        sys.unraisablehook = previous


@contextmanager
def writer_lock(
    lock_path: Path, target: Path, remedy: str = DEFAULT_REMEDY, *, wait: bool = False
) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path` (the OS drops it if this process dies), or stop
    with one line saying that another aqa process is writing `target`; with `wait`, wait for it instead.
    The lock file is removed when the block ends, while still held, so no empty file stays beside the
    output; a process that opened it just before then finds it gone and locks the new one."""
    handle = _lock_file(lock_path, target, remedy, wait)
    try:
        yield
    finally:
        with suppress(OSError):
            lock_path.unlink()
        handle.close()


def _lock_file(lock_path: Path, target: Path, remedy: str, wait: bool) -> IO:
    """The open, exclusively locked lock file that `lock_path` names now."""
    while True:
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock_path, "a")  # noqa: SIM115 - held for the whole block
        except OSError as exc:
            raise write_error(exc, lock_path, remedy) from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            raise AqaError(
                f"another aqa process is writing {target} (it holds {lock_path}); "
                "wait for it to finish or stop it, then rerun"
            ) from None
        if _names(lock_path, handle):
            return handle
        handle.close()  # its holder removed it while we waited for it


def _names(path: Path, handle: IO) -> bool:
    """Whether `path` still names the open file `handle`."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def output_lock(path: Path, remedy: str = DEFAULT_REMEDY):
    """`writer_lock` on `PATH.lock`, the lock every single-file output of the toolkit is written under."""
    return writer_lock(Path(str(path) + ".lock"), path, remedy)


def partial_folder(output: Path) -> Path:
    """Where the finished pieces of the job writing `output` are kept until it is done."""
    return Path(str(output) + ".partial")


class PartialWork:
    """`OUTPUT.partial/`: the finished pieces of a long job, one atomically written file each, and the
    settings they were made with (`config.json`). A rerun with the same settings keeps the pieces; other
    settings are refused with `differences(earlier settings)` in the message."""

    def __init__(self, output: Path, settings: dict, differences: Callable[[dict], str]):
        self.dir = partial_folder(output)
        self.settings = json.loads(json.dumps(settings, sort_keys=True))
        self._differences = differences

    def open(self) -> PartialWork:
        """Create the folder, or check that its earlier work used the same settings; drop the temporary
        files of writes that a kill cut short."""
        config_file = self.dir / "config.json"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for leftover in self.dir.glob(".*.tmp"):
                leftover.unlink()
            if config_file.exists():
                earlier = json.loads(config_file.read_text())
                if earlier != self.settings:
                    raise AqaError(
                        f"{self.dir} holds unfinished work made with other settings "
                        f"({self._differences(earlier)}); rerun with those settings, or delete {self.dir} "
                        "to start over"
                    )
            else:
                atomic_write(config_file, json.dumps(self.settings, sort_keys=True))
        except OSError as exc:
            raise write_error(exc, self.dir) from exc
        return self

    def path(self, name: str) -> Path:
        return self.dir / name

    def pieces(self, pattern: str) -> list[Path]:
        return sorted(self.dir.glob(pattern))

    def write(self, name: str, data: bytes) -> None:
        atomic_write(self.path(name), data)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
