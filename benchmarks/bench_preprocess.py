"""Preprocess throughput against ffmpeg decoding + scaling to raw RGB, both using the whole machine.

aqa: `aqa preprocess DIR --out STORE` with its defaults (one decoding process per core), wall time of
the command, start-up included. ffmpeg: `ffmpeg -i X -vf scale=171:128 -pix_fmt rgb24 -f rawvideo -`
for every file, as many at once as there are cores (each with ffmpeg's own default threading), its
output read and counted. Both rates divide the same frame count: every frame of every source as
`ffprobe -count_frames` counts them (ffmpeg's constant-rate output can repeat or drop a frame of a
variable-rate file; that count is recorded apart). The two are run alternately, `ROUNDS` times, and the
median of the paired ratios is reported, so a change in the machine's load hits both. Also recorded:
CPU seconds of each (children's rusage: independent of other processes' load), and ffmpeg with one
thread per process. When other processes compete for the cores, the scheduler shares CPU time per
thread, so ffmpeg's several threads per process get a larger share than aqa's one-thread workers.

Also: --workers 1 vs 2; peak resident memory for 10 and 100 videos (the same 10 files, repeated), both
the largest single process and the sum over the aqa process tree sampled every 20 ms; start-up time of
`aqa --help`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (
    aqa_command,
    children_cpu_seconds,
    cpus,
    is_real,
    log,
    median,
    row,
    spread,
    videos,
    work_dir,
)

FRAME_BYTES = 171 * 128 * 3
ROUNDS = 3
RSS_COUNTS = (10, 100)


def ffmpeg_command(path: Path, single_thread: bool = False) -> list[str]:
    threads = ["-threads", "1", "-filter_threads", "1"] if single_thread else []
    scale = ["-vf", "scale=171:128", "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]
    return ["ffmpeg", "-v", "error", "-nostdin", *threads, "-i", str(path), *scale]


def _ffmpeg_one(path: Path, single_thread: bool = False) -> int:
    """Run ffmpeg on one file; return how many frames it wrote (its output is read and counted)."""
    command = ffmpeg_command(path, single_thread)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        total = 0
        while chunk := proc.stdout.read1(1 << 20):
            total += len(chunk)
    if proc.returncode:
        raise RuntimeError(f"ffmpeg failed on {path}")
    return total // FRAME_BYTES


def ffmpeg_all(files: list[Path], single_thread: bool = False) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, frames written) for ffmpeg over all files, `cpus()` at a time."""
    cpu = children_cpu_seconds()
    start = time.perf_counter()
    with ThreadPoolExecutor(cpus()) as pool:
        written = sum(pool.map(lambda path: _ffmpeg_one(path, single_thread), files))
    return time.perf_counter() - start, children_cpu_seconds() - cpu, written


def aqa_preprocess(source: Path, out: Path, *options: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process tree) of one `aqa preprocess`."""
    shutil.rmtree(Path(str(out) + ".partial"), ignore_errors=True)
    out.unlink(missing_ok=True)
    cpu = children_cpu_seconds()
    start = time.perf_counter()
    subprocess.run(
        [*aqa_command(), "preprocess", str(source), "--out", str(out), *options],
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - start
    out.unlink()
    return wall, children_cpu_seconds() - cpu


def decoded_frames(path: Path) -> int:
    """Every frame the file decodes to (ffprobe -count_frames; PyAV where ffprobe is missing)."""
    if shutil.which("ffprobe"):
        command = ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0"] + [
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            str(path),
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        return int(output.strip().split(",")[0])
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _tree(root: int) -> set[int]:
    """`root` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return tree


def _memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of one process in KiB: resident now, and its high-water mark since exec."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line[:5]] = int(line.split()[1])
    except OSError:
        pass
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def peak_rss(source: Path, out: Path) -> tuple[float, float]:
    """(largest single process, largest sum over the process tree) resident memory in MiB of one
    `aqa preprocess`, from /proc every 20 ms: each process's own high-water mark (VmHWM, exact while it
    lives), and the sum of the current resident sizes. (The kernel's ru_maxrss is no use here: after
    fork + exec it starts from the size of the process that started the command.)"""
    proc = subprocess.Popen(
        [*aqa_command(), "preprocess", str(source), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    largest = total = 0
    while proc.poll() is None:
        sizes = [_memory_kib(pid) for pid in _tree(proc.pid)]
        largest = max([largest] + [hwm for _, hwm in sizes])
        total = max(total, sum(rss for rss, _ in sizes))
        time.sleep(0.02)
    if proc.returncode:
        raise RuntimeError(f"aqa preprocess failed ({proc.returncode}) on {source}")
    return largest / 1024, total / 1024


def run() -> list[dict]:
    if shutil.which("ffmpeg") is None:
        return [row("preprocess vs ffmpeg", "skipped: ffmpeg not installed (apt-get install ffmpeg)", "")]
    folder = videos()
    files = sorted(folder.iterdir())
    work = work_dir()
    log(f"preprocess: counting the frames of {len(files)} videos")
    frames = {path.name: decoded_frames(path) for path in files}
    total = sum(frames.values())
    rows = []

    log(f"preprocess vs ffmpeg: {ROUNDS} alternating rounds")
    aqa_runs, ffmpeg_runs, single_runs = [], [], []
    written = set()
    for round_ in range(ROUNDS):
        steps = ["aqa", "ffmpeg", "single"] if round_ % 2 else ["single", "ffmpeg", "aqa"]
        for step in steps:
            if step == "aqa":
                aqa_runs.append(aqa_preprocess(folder, work / "all.h5"))
            else:
                wall, cpu, count = ffmpeg_all(files, single_thread=step == "single")
                (ffmpeg_runs if step == "ffmpeg" else single_runs).append((wall, cpu))
                written.add(count)
    ratios = [f[0] / a[0] for a, f in zip(aqa_runs, ffmpeg_runs, strict=True)]
    aqa_rate = [total / wall for wall, _ in aqa_runs]
    ffmpeg_rate = [total / wall for wall, _ in ffmpeg_runs]
    ratio = median(ratios)
    real = [name for name in frames if is_real(name)]
    rows.append(
        row(
            f"preprocess vs ffmpeg ({len(files)} videos: {len(real)} real, {len(files) - len(real)} "
            f"synthetic; {total} frames)",
            f"frames/s, median of {ROUNDS}",
            f"{median(aqa_rate):.0f}",
            f"{median(ffmpeg_rate):.0f}",
            f"{ratio:.2f}x",
            ">= 0.8x",
            ok=ratio >= 0.8,
            aqa_wall_s=[round(wall, 3) for wall, _ in aqa_runs],
            ffmpeg_wall_s=[round(wall, 3) for wall, _ in ffmpeg_runs],
            aqa_cpu_s=[round(cpu, 3) for _, cpu in aqa_runs],
            ffmpeg_cpu_s=[round(cpu, 3) for _, cpu in ffmpeg_runs],
            ratios=[round(r, 3) for r in ratios],
            ratio_range=spread(ratios),
            frames_decoded=total,
            ffmpeg_frames_written=sorted(written),
            frames_per_video=frames,
        )
    )
    single = median([f[0] / a[0] for a, f in zip(aqa_runs, single_runs, strict=True)])
    rows.append(
        row(
            "preprocess vs ffmpeg -threads 1 -filter_threads 1 (one thread per process, as aqa's workers)",
            f"frames/s, median of {ROUNDS}",
            f"{median(aqa_rate):.0f}",
            f"{median([total / wall for wall, _ in single_runs]):.0f}",
            f"{single:.2f}x",
            "(info)",
            ffmpeg_wall_s=[round(wall, 3) for wall, _ in single_runs],
        )
    )
    aqa_cpu = median([cpu for _, cpu in aqa_runs])
    ffmpeg_cpu = median([cpu for _, cpu in ffmpeg_runs])
    rows.append(
        row(
            "preprocess vs ffmpeg, CPU time (load-independent)",
            "CPU s per 1000 frames",
            f"{aqa_cpu / total * 1000:.2f}",
            f"{ffmpeg_cpu / total * 1000:.2f}",
            f"{ffmpeg_cpu / aqa_cpu:.2f}x",
            "(info)",
        )
    )

    log("preprocess --workers 1 vs 2")
    one, two = [], []
    for round_ in range(ROUNDS):
        for workers in (1, 2) if round_ % 2 == 0 else (2, 1):
            wall, _ = aqa_preprocess(folder, work / f"w{workers}.h5", "--workers", str(workers))
            (one if workers == 1 else two).append(wall)
    rows.append(
        row(
            "preprocess --workers 2 vs 1",
            f"frames/s, median of {ROUNDS}",
            f"{total / median(two):.0f} (2)",
            f"{total / median(one):.0f} (1)",
            f"{median(one) / median(two):.2f}x",
            "(info)",
            workers1_wall_s=[round(x, 3) for x in one],
            workers2_wall_s=[round(x, 3) for x in two],
        )
    )

    # The same 10 files, once and ten times over: any growth comes from the count alone.
    ten = [f for f in files if is_real(f)][:5] + [f for f in files if not is_real(f)][:5]
    peaks = {}
    for count in RSS_COUNTS:
        log(f"preprocess peak RSS, {count} videos")
        many = work / f"many{count}"
        many.mkdir()
        for i in range(count):
            source = ten[i % len(ten)]
            os.link(source, many / f"v{i:03d}{source.suffix}")
        peaks[count] = peak_rss(many, work / f"many{count}.h5")
    for count in RSS_COUNTS:
        largest, tree = peaks[count]
        flat = largest <= 1.15 * peaks[RSS_COUNTS[0]][0] and tree <= 1.15 * peaks[RSS_COUNTS[0]][1]
        rows.append(
            row(
                f"preprocess peak RSS, {count} videos",
                "MiB: largest process / process tree",
                f"{largest:.0f} / {tree:.0f}",
                target="flat in the count (<= +15%)",
                ok=flat if count != RSS_COUNTS[0] else None,
                files=[f.name for f in ten],
            )
        )

    log("aqa --help start-up")
    helps = []
    for _ in range(7):
        start = time.perf_counter()
        subprocess.run([*aqa_command(), "--help"], check=True, capture_output=True)
        helps.append(time.perf_counter() - start)
    rows.append(
        row(
            "aqa --help start-up",
            "s, median of 7 (max)",
            f"{median(helps):.2f} ({max(helps):.2f})",
            target="< 1 s",
            ok=max(helps) < 1.0,
            command=" ".join(aqa_command()) + " --help",
        )
    )
    return rows
