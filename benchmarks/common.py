"""Shared by the benchmarks: the machine's description, the test videos, timing and formatting helpers.

The videos are the real public test videos (../shared/data/videos when present; the deliberately
corrupted one left out) plus 24 synthetic dives from `aqa synth`: the same set for every benchmark.
Everything a benchmark writes goes into one temporary folder, removed at exit.
"""

from __future__ import annotations

import atexit
import functools
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = REPO.parent / "shared" / "data" / "videos"
SYNTHETIC_VIDEOS = 24
BIN = Path(sys.executable).parent


def cpus() -> int:
    return len(os.sched_getaffinity(0))


def log(message: str) -> None:
    """Progress on stderr, so a long `make bench` shows what it is doing."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict:
    """What the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info = {
        "cpus": cpus(),
        "cpu_model": model,
        "memory_gib": round(memory_gib, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    for name in ("torch", "torchvision", "numpy", "h5py", "av", "PIL"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except ImportError:
            info[name] = None
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        first = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.splitlines()
        info["ffmpeg"] = first[0] if first else "?"
    return info


@functools.cache
def work_dir() -> Path:
    """One temporary folder for the whole run (outputs, stores, JPEG folders), removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="aqa-bench-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def aqa_command() -> list[str]:
    """How a user starts aqa: the installed console script, else `python -m aqa_cli`."""
    script = BIN / "aqa"
    return [str(script)] if script.exists() else [sys.executable, "-m", "aqa_cli"]


@functools.cache
def videos() -> Path:
    """The benchmark's videos (real + synthetic) in one folder; built once per run."""
    folder = work_dir() / "videos"
    folder.mkdir()
    if SHARED_VIDEOS.is_dir():
        for video in sorted(SHARED_VIDEOS.iterdir()):
            if video.suffix != ".md" and "corrupted" not in video.name:
                shutil.copy(video, folder / video.name)
    synth = work_dir() / "synth"
    subprocess.run(
        [*aqa_command(), "synth", str(synth), "--videos", str(SYNTHETIC_VIDEOS), "--seed", "0"],
        check=True,
        capture_output=True,
    )
    for video in sorted(synth.glob("*.mp4")):
        shutil.copy(video, folder / video.name)
    return folder


def is_real(path: str | Path) -> bool:
    return not Path(path).name.startswith("dive_")


@functools.cache
def store(*options: str) -> Path:
    """`aqa preprocess` of the benchmark's videos (with the defaults, unless `options`)."""
    out = work_dir() / ("videos" + "".join(options).replace("-", "_") + ".h5")
    command = [*aqa_command(), "preprocess", str(videos()), "--out", str(out), *options]
    subprocess.run(command, check=True, capture_output=True)
    return out


def children_cpu_seconds() -> float:
    """User + system CPU seconds of all children reaped so far (and their reaped descendants)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values) -> float:
    return statistics.median(values)


def spread(values) -> str:
    """min-max of repeated measurements, for the JSON (noise on a shared machine)."""
    return f"{min(values):.3g}-{max(values):.3g}"


def row(
    name: str, measure: str, aqa, reference="", ratio="", target="", ok: bool | None = None, **extra
) -> dict:
    """One table row; `extra` (raw numbers, repetitions) goes to results.json only."""
    result = {
        "name": name,
        "measure": measure,
        "aqa": aqa,
        "reference": reference,
        "ratio": ratio,
        "target": target,
    }
    if ok is not None:
        result["met"] = "yes" if ok else "NO"
    if extra:
        result["details"] = extra
    return result
