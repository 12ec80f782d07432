"""Writing outputs safely: atomic replacement, one writer at a time, one-line errors for disk trouble.

Every file a command writes appears whole or not at all (`atomic_write`: a temporary file in the same
folder, fsynced, then renamed over the target), a second process writing the same output stops at once
(`writer_lock`), and a full or read-only disk is one line saying what to do (`write_error`).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aqa_cli.errors import AqaError


def write_error(exc: OSError, where: Path, remedy: str = "choose a writable --out") -> AqaError:
    """The one-line error for an OSError while writing `where`."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return AqaError(f"disk full while writing {where}: free some space and rerun to resume")
    if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return AqaError(f"cannot write {where}: {exc.strerror}; {remedy}")
    return AqaError(f"cannot write {where}: {exc}")


def atomic_write(path: Path, data: bytes | str, remedy: str = "choose a writable --out") -> None:
    """Write `data` to `path` whole or not at all; concurrent writers never see each other's halves."""
    content = data.encode() if isinstance(data, str) else data
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: writers never share one
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise write_error(exc, path, remedy) from exc


@contextmanager
def writer_lock(
    lock_path: Path, target: Path, remedy: str = "choose a writable --out", *, wait: bool = False
) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path` (the OS drops it if this process dies), or stop
    with one line saying that another aqa process is writing `target`; with `wait`, wait for it instead."""
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a")  # noqa: SIM115 - held for the whole block
    except OSError as exc:
        raise write_error(exc, lock_path, remedy) from exc
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise AqaError(
                f"another aqa process is writing {target} (it holds {lock_path}); "
                "wait for it to finish or stop it, then rerun"
            ) from None
        yield
    finally:
        handle.close()
