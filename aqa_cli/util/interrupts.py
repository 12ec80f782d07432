"""Ctrl-C held back over the few steps that must not be cut in half."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Defer Ctrl-C until the block is done, then deliver it to the handler in place before (by default:
    KeyboardInterrupt; a Ctrl-C is never lost, and one that was ignored stays ignored).

    Two layers, because a terminal's SIGINT can reach any thread of the process: Python's handler only
    records it (a KeyboardInterrupt inside a native module's initialisation aborts the process), and the
    calling thread blocks it, so that a process started inside the block (spawn: fork and exec) inherits
    SIGINT blocked rather than the default action, until it installs its own disposition. In any other
    thread it does nothing: Python runs signal handlers in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupted = []
    previous_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)  # a pending Ctrl-C reaches the recorder
        signal.signal(signal.SIGINT, previous_handler)
    if interrupted:
        signal.raise_signal(signal.SIGINT)
