"""The one-writer lock: a second writer is refused, the lock file goes away with its holder, and a writer
that waited on a lock file its holder removed locks the file the path names now."""

import threading
import time
from pathlib import Path

import pytest

from aqa_cli.util.errors import AqaError
from aqa_cli.util.safe_output import output_lock, writer_lock


def test_a_second_writer_is_refused_and_no_lock_file_stays(tmp_path: Path) -> None:
    store = tmp_path / "store.h5"
    lock = tmp_path / "store.h5.lock"
    with output_lock(store):
        assert lock.exists()
        with pytest.raises(AqaError, match=f"another aqa process is writing {store}"), output_lock(store):
            pass
        assert lock.exists()  # the refused writer leaves the holder's lock alone
    assert list(tmp_path.iterdir()) == []
    with output_lock(store):  # free again
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_waiting_writer_locks_the_file_the_path_names_after_the_holder_removed_it(tmp_path: Path) -> None:
    lock, target = tmp_path / "x.lock", tmp_path / "x"
    holding, tried, release = threading.Event(), threading.Event(), threading.Event()
    refused: list[str] = []

    def waiter() -> None:
        with writer_lock(lock, target, wait=True):  # opens the holder's file, waits for it
            holding.set()
            try:  # a third writer must see this one's lock on the file `lock` names now
                with writer_lock(lock, target):
                    pass
            except AqaError as exc:
                refused.append(str(exc))
            tried.set()
            release.wait(10)

    with writer_lock(lock, target):
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.3)  # the waiter is blocked on the holder's lock file
        assert not holding.is_set()
    assert holding.wait(10) and tried.wait(10)
    assert lock.exists() and len(refused) == 1 and "another aqa process" in refused[0]
    release.set()
    thread.join(10)
    assert not lock.exists()
