"""A soak: 500 short videos (40 in `make test`) preprocessed with 2 workers while worker processes are
killed now and then. Nothing is lost (a video whose worker died twice is reported, and the rerun a user
would type stores it), and no process or file handle is left behind."""

from __future__ import annotations

import os
import random
import signal
import threading
from pathlib import Path

from helpers import number_frame, read_number, write_video
from injection import UNWANTED, fault_count, leftover_processes, record, start

from aqa_cli.store import VideoStore

VIDEOS, KILLS = fault_count(40, 500), fault_count(3, 20)  # at least that many workers killed
FRAMES = 6


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class WorkerKiller(threading.Thread):
    """Kills a random worker of `pid` every 0.2-0.8 s (seeded), and samples its open file count."""

    def __init__(self, pid: int, rng: random.Random):
        super().__init__(daemon=True)
        self.pid, self.rng = pid, rng
        self.kills: list[int] = []
        self.files: list[int] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.rng.uniform(0.2, 0.8)):
            self.files.append(open_files(self.pid))
            workers = children(self.pid)
            if workers:
                victim = self.rng.choice(sorted(workers))
                try:
                    os.kill(victim, signal.SIGKILL)
                    self.kills.append(victim)
                except ProcessLookupError:
                    pass  # it had just been replaced


def test_many_videos_with_workers_killed_now_and_then(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    for i in range(VIDEOS):
        write_video(videos / f"v{i:03d}.mp4", [number_frame(FRAMES * i + k, 120, 64) for k in range(FRAMES)])
    out = tmp_path / "soak.h5"
    rng = random.Random(500)
    kills, runs, files = 0, 0, []
    while True:
        runs += 1
        process = start(["preprocess", videos, "--out", out, "--frames", str(FRAMES), "--workers", "2"])
        killer = WorkerKiller(process.pid, rng)
        killer.start()
        stdout, stderr = process.communicate(timeout=3600)
        killer.stopped.set()
        killer.join()
        kills += len(killer.kills)
        files += killer.files
        assert not any(word in stdout + stderr for word in UNWANTED), stderr[-3000:]
        assert leftover_processes(process.pid) == []
        if process.returncode == 0:
            break
        assert process.returncode == 1 and "died 2 times" in stdout, stdout[-3000:]  # reported, not lost
        assert runs < 4, "reruns do not converge"
    assert kills >= KILLS, f"only {kills} workers were killed"
    usual = sorted(files)[len(files) // 2]  # a leak of even one handle per restarted worker would show
    assert max(files) <= usual + 4, f"open files of the main process: usually {usual}, up to {max(files)}"
    with VideoStore(out) as store:
        assert list(store.column("id")) == [f"v{i:03d}" for i in range(VIDEOS)]
        assert store.failed() == []
        for i in range(VIDEOS):
            assert [read_number(frame) for frame in store.frames(i)] == [
                FRAMES * i + k for k in range(FRAMES)
            ]
    record("preprocess", "soak: worker killed", f"{VIDEOS} videos all stored after {runs} run(s)", kills)
