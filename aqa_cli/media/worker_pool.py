"""Supervised worker processes: a worker that dies or hangs costs its own job, never the run.

The main process hands one job at a time to each worker over the worker's own pipe (no shared queue or
lock that a killed worker could leave held) and watches every worker's process sentinel:

* a worker that dies (kill -9, the out-of-memory killer, a crash inside a decoder) is replaced, and its
  job goes back to the front of the queue without the items it had already reported; a job whose worker
  died `MAX_DEATHS` times is reported failed;
* a worker that reports nothing for `timeout` seconds is killed and its job reported failed (a decode
  that hangs inside C code cannot be interrupted any other way);
* a job may stop the whole run by raising `StopRun` (e.g. the disk is full).

Workers ignore SIGINT: Ctrl-C in a terminal reaches the whole process group, and only the main process
answers it (it stops the workers; what they finished is kept). Workers also die with the main process
(Linux: PR_SET_PDEATHSIG), so `kill -9` of the main process leaves no worker running.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
import types
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from typing import Any

from aqa_cli.util.errors import AqaError
from aqa_cli.util.interrupts import ctrl_c_held

MAX_DEATHS = 2
_POLL_SECONDS = 1.0  # longest wait between checks of the deadlines


class StopRun(AqaError):
    """Raised by a job (in a worker) to stop the whole run; the main process raises it again."""


Work = Callable[[Any, Callable[[Any], None]], None]
"""A job function: `work(job, emit)` runs in a worker and calls `emit(message)` for each finished item.
It must be picklable (a module-level function or an instance of a module-level class)."""


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    connection: Connection
    task: tuple[Any, int] | None = None  # (job, deaths so far) while busy
    heard: float = 0.0  # monotonic time of the last message (or of the job's start)


class WorkerPool:
    """`size` worker processes, started at once (they import while the caller prepares the jobs)."""

    def __init__(self, size: int, timeout: float):
        self.size = size
        self.timeout = timeout
        self._context = multiprocessing.get_context("spawn")  # no fork under rich's refresh thread
        # Started now, not by the first worker's start: starting it unblocks SIGINT (CPython does not
        # restore the caller's mask), which would let that worker inherit Ctrl-C unblocked.
        resource_tracker.ensure_running()
        self._workers: list[_Worker] = []
        try:
            for _ in range(size):
                with ctrl_c_held():  # recorded before a Ctrl-C lands, so that close() stops it
                    self._workers.append(self._start())
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(
        self,
        jobs: list[Any],
        work: Work,
        on_message: Callable[[Any], None],
        on_failed: Callable[[Any, str], None],
        remaining: Callable[[Any], Any | None],
    ) -> None:
        """Run every job; `on_message` gets what the jobs emit, `on_failed(job, reason)` the jobs given
        up (of which it reports what was not emitted yet), and `remaining(job)` says what is left of a
        job whose worker died (None: nothing), to run again."""
        queue = deque((job, 0) for job in jobs)
        while queue or self._busy():
            for position, worker in enumerate(self._workers):
                if worker.task is None and queue:
                    if not worker.process.is_alive():  # died while idle: no job of its own to blame
                        worker = self._replace(position)
                    self._assign(worker, work, *queue.popleft())
            busy = self._busy()
            wait(
                [w.connection for w in busy] + [w.process.sentinel for w in busy],
                timeout=self._seconds_to_next_deadline(busy),
            )
            for position, worker in enumerate(self._workers):
                if worker.task is None:
                    continue
                self._read(worker, on_message, on_failed)
                if worker.task is None:
                    continue
                job, deaths = worker.task
                if not worker.process.is_alive():
                    self._replace(position)
                    left = remaining(job)
                    if left is None:
                        continue
                    if deaths + 1 >= MAX_DEATHS:
                        on_failed(
                            left,
                            f"its worker process died {MAX_DEATHS} times (killed, out of memory, or a crash "
                            "in the decoder)",
                        )
                    else:
                        queue.appendleft((left, deaths + 1))
                elif time.monotonic() - worker.heard > self.timeout:
                    self._replace(position)
                    on_failed(job, f"stopped after {self.timeout:g} s without progress (hanging or too slow)")

    def close(self) -> None:
        """Stop the workers: idle ones are asked to exit, busy ones (after an error) are killed."""
        for worker in self._workers:
            try:
                if worker.task is None and worker.process.is_alive():
                    worker.connection.send(None)
                else:
                    worker.process.kill()
            except OSError:
                worker.process.kill()
        for worker in self._workers:
            worker.process.join(5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            _release(worker)
        self._workers = []

    def _start(self) -> _Worker:
        """A new worker; call it with Ctrl-C held, which the worker inherits blocked until `_serve`."""
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(theirs, os.getpid()), daemon=True)
        try:
            with _caller_script_hidden():
                process.start()
        finally:
            theirs.close()
        return _Worker(process, ours)

    def _replace(self, position: int) -> _Worker:
        with ctrl_c_held():  # never a killed worker in the list, nor a started one missing from it
            worker = self._workers[position]
            worker.process.kill()
            worker.process.join()
            _release(worker)
            self._workers[position] = self._start()
        return self._workers[position]

    def _assign(self, worker: _Worker, work: Work, job: Any, deaths: int) -> None:
        worker.task = (job, deaths)
        worker.heard = time.monotonic()
        with contextlib.suppress(OSError):  # it died before the job reached it: its sentinel says so
            worker.connection.send((work, job))

    def _busy(self) -> list[_Worker]:
        return [worker for worker in self._workers if worker.task is not None]

    def _seconds_to_next_deadline(self, busy: list[_Worker]) -> float:
        now = time.monotonic()
        soonest = min((w.heard + self.timeout - now for w in busy), default=_POLL_SECONDS)
        return max(0.0, min(_POLL_SECONDS, soonest))

    def _read(self, worker: _Worker, on_message: Callable, on_failed: Callable) -> None:
        """Everything the worker has sent so far (also after it died: what it sent before is kept)."""
        try:
            while worker.connection.poll():
                kind, payload = worker.connection.recv()
                worker.heard = time.monotonic()
                if kind == "message":
                    on_message(payload)
                elif kind == "stop":
                    raise StopRun(payload)
                else:  # "done" or "failed": the worker is idle again
                    if kind == "failed":
                        on_failed(worker.task[0], payload)
                    worker.task = None
                    return
        except (EOFError, OSError):
            return  # it died mid-message; the sentinel check handles it


@contextlib.contextmanager
def _caller_script_hidden() -> Iterator[None]:
    """Start a worker without running the caller's script in it.

    A spawned child normally re-runs the parent's main script (as `__mp_main__`) so that functions
    defined there unpickle; a plain `python api.py` without an `if __name__ == "__main__":` guard would
    then run its whole pipeline again in every worker. Workers here run only aqa_cli's own module-level
    functions, so while a worker starts, `__main__` is a bare module with neither a spec nor a file,
    from which multiprocessing prepares nothing to re-run.
    """
    caller = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = caller


def _release(worker: _Worker) -> None:
    worker.connection.close()
    worker.process.close()


def _serve(connection: Connection, parent: int) -> None:
    """A worker's life: run jobs until told to stop (None) or the main process goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C that came while it started is dropped here
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with(parent)
    try:
        while (task := connection.recv()) is not None:
            work, job = task
            try:
                work(job, lambda message: connection.send(("message", message)))
            except StopRun as exc:
                connection.send(("stop", str(exc)))
                continue
            except Exception as exc:  # noqa: BLE001 - reported as the job's failure, in one line
                connection.send(("failed", " ".join(f"unexpected {type(exc).__name__}: {exc}".split())))
                continue
            connection.send(("done", None))
    except (EOFError, OSError):
        pass  # the main process is gone or closed the pipe: nothing left to report to


def _die_with(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(0)
