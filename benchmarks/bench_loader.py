"""Training data loader: the toolkit's `StoreClips` against a JPEG-folder loader like the research code's.

Both give the model the same thing: a float32 (3, 96, 112, 112) video per sample, the window ending at
a random one of the last 6 of 103 frames, a random 112x112 crop, a random horizontal flip (the same
draws for both, from the same seeded generator), normalized with the backbone's mean and std, in
batches of 2 through a torch DataLoader with 0 or 2 worker processes.

* aqa: `StoreClips` over the store `aqa preprocess` made from the benchmark's videos (uint8 windows),
  then `Normalization.apply` in the main process, which is what `aqa train` does on the model's device
  (here the CPU).
* reference: one JPEG per frame in a folder per sample (the 103 frames the store holds, at the
  video's own size, written with Pillow at quality 90 in the setup), each frame opened with PIL,
  resized to 171x128 (bilinear), cropped, flipped, `to_tensor` and `normalize`d, then stacked.

Each loader runs one warm-up epoch (page cache, worker start-up, aqa's one-time sha256 check of each
sample), then `EPOCHS` timed epochs, alternating with the other loader; samples/s is the median epoch's.
Workers are persistent, as in `aqa train`.
The main process runs with one torch thread, as DataLoader workers do: with two OpenMP threads the
reference's per-frame (3, 112, 112) tensor operations ran 2-10x slower on a busy 2-core machine, which
measures the thread pool's contention rather than the loader.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from common import is_real, log, median, row, store, work_dir
from torch.utils.data import DataLoader, Dataset

BATCH = 2
EPOCHS = 3
WORKERS = (0, 2)
JPEG_QUALITY = 90
SIZE = (171, 128)  # (width, height), as the store keeps them


def write_jpeg_folders(store_path: Path, out: Path) -> list[Path]:
    """One folder per stored sample with its 103 frames as 000001.jpg ..., at the source's own size."""
    from PIL import Image

    from aqa_cli.media.decoder import VideoDecoder
    from aqa_cli.stores.video_store import VideoStore

    with VideoStore(store_path) as store_file:
        sources = store_file.column("source")
        indices = store_file.file["samples/frame_index"][()]
    folders = []
    for sample, (source, wanted) in enumerate(zip(sources, indices, strict=True)):
        folder = out / f"{sample:04d}"
        folder.mkdir(parents=True)
        keep = set(wanted.tolist())
        with VideoDecoder(source, None) as decoder:  # display-oriented, the video's own size
            frames = {index: frame for index, frame in decoder.frames(keep.__contains__) if index in keep}
        for position, index in enumerate(wanted):
            Image.fromarray(frames[int(index)]).save(folder / f"{position + 1:06d}.jpg", quality=JPEG_QUALITY)
        folders.append(folder)
    return folders


class JpegFolderClips(Dataset):
    """The research code's loader: a folder of JPEG frames per sample, decoded and resized per frame."""

    def __init__(self, folders, stored: int, window, normalization, scores, seed: int = 0):
        self.folders = list(folders)
        self.stored = stored
        self.window = window
        self.mean, self.std = list(normalization.mean), list(normalization.std)
        self.scores = scores
        self.seed = seed

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image
        from torchvision.transforms import functional

        w = self.window
        rng = np.random.default_rng([self.seed, 0, i])  # the draws StoreClips makes for an untagged index
        width, height = SIZE
        end = self.stored - int(rng.integers(w.jitter))
        top = int(rng.integers(height - w.crop + 1))
        left = int(rng.integers(width - w.crop + 1))
        flip = w.flip and bool(rng.integers(2))
        frames = []
        for position in range(end - w.frames, end):
            with Image.open(self.folders[i] / f"{position + 1:06d}.jpg") as image:
                image = image.convert("RGB").resize(SIZE, Image.BILINEAR)
            image = image.crop((left, top, left + w.crop, top + w.crop))
            if flip:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            frames.append(functional.normalize(functional.to_tensor(image), self.mean, self.std))
        return {"video": torch.stack(frames, dim=1), "score": torch.tensor(self.scores[i])}


def _epoch(loader: DataLoader, normalization) -> tuple[float, int]:
    """Seconds and samples for one pass; `normalization` (aqa) runs on each batch as training does."""
    start = time.perf_counter()
    samples = 0
    for batch in loader:
        video = batch["video"]
        if normalization is not None:
            video = normalization.apply(video)
        assert video.dtype == torch.float32 and video.shape[1:] == (3, 96, 112, 112)
        samples += len(video)
    return time.perf_counter() - start, samples


def _same_output(ours: Dataset, theirs: Dataset, normalization, rows: list[int]) -> float:
    """Mean absolute difference between the two loaders' normalized videos (resampling and JPEG differ,
    the windows, crops and flips must not)."""
    diffs = []
    for i in rows:
        a = normalization.apply(ours[i]["video"])
        b = theirs[i]["video"]
        assert a.shape == b.shape and a.dtype == b.dtype
        diffs.append(float((a - b).abs().mean()))
    return max(diffs)


def _per_sample(dataset: Dataset, normalization) -> list[float]:
    """Seconds to produce each sample in this process (aqa: with its normalization), one pass."""
    seconds = []
    for i in range(len(dataset)):
        start = time.perf_counter()
        video = dataset[i]["video"]
        if normalization is not None:
            normalization.apply(video)
        seconds.append(time.perf_counter() - start)
    return seconds


def run() -> list[dict]:
    try:
        import PIL  # noqa: F401
    except ImportError:
        return [row("loader vs JPEG folders", "skipped: Pillow missing (pip install -e '.[bench]')", "")]
    from aqa_cli.data.datasets import StoreClips
    from aqa_cli.data.windows import WindowConfig
    from aqa_cli.models.normalization import NORMALIZATIONS
    from aqa_cli.stores.video_store import VideoStore

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in DataLoader workers; see the module docstring
    store_path = store()
    lzf_store = store("--compression", "lzf")
    log("loader: writing the JPEG folders")
    folders = write_jpeg_folders(store_path, work_dir() / "jpeg")
    with VideoStore(store_path) as store_file:
        stored = store_file.config.frames
        scores = store_file.column("score").astype(np.float32)
        real = [is_real(source) for source in store_file.column("source")]
    normalization = NORMALIZATIONS["hara"]
    everything = list(range(len(folders)))
    # StoreClips seeds each sample's draws with its store row; here row == index, so both loaders draw
    # the same windows, crops and flips.
    datasets = {
        "aqa": StoreClips(store_path, everything, WindowConfig(), train=True, seed=0),
        "aqa, --compression lzf": StoreClips(lzf_store, everything, WindowConfig(), train=True, seed=0),
    }
    datasets["reference"] = JpegFolderClips(
        folders, stored, datasets["aqa"].window, normalization, scores, seed=0
    )
    normalizes = {name: None if name == "reference" else normalization for name in datasets}
    difference = _same_output(
        datasets["aqa"], datasets["reference"], normalization, [0, len(folders) // 2, len(folders) - 1]
    )
    sizes = {
        "store_mib": round(store_path.stat().st_size / 2**20, 1),
        "store_lzf_mib": round(lzf_store.stat().st_size / 2**20, 1),
        "jpeg_mib": round(sum(f.stat().st_size for d in folders for f in d.iterdir()) / 2**20, 1),
    }

    results = []
    for workers in WORKERS:
        log(f"loader: {workers} workers, {EPOCHS} alternating epochs each")
        loaders = {
            name: DataLoader(
                dataset, batch_size=BATCH, shuffle=False, num_workers=workers, persistent_workers=workers > 0
            )
            for name, dataset in datasets.items()
        }
        times: dict[str, list[float]] = {name: [] for name in loaders}
        for name, loader in loaders.items():
            _epoch(loader, normalizes[name])  # warm-up
        for epoch in range(EPOCHS):
            names = list(loaders) if epoch % 2 == 0 else list(loaders)[::-1]
            for name in names:
                times[name].append(_epoch(loaders[name], normalizes[name])[0])
        del loaders
        rate = {name: len(folders) / median(values) for name, values in times.items()}
        for name in ("aqa", "aqa, --compression lzf"):
            ratio = rate[name] / rate["reference"]
            default = name == "aqa"
            results.append(
                row(
                    f"training loader vs JPEG folders, {workers} workers"
                    + ("" if default else " (store written with --compression lzf)"),
                    f"samples/s, median of {EPOCHS} epochs",
                    f"{rate[name]:.1f}",
                    f"{rate['reference']:.1f}",
                    f"{ratio:.1f}x",
                    ">= 20x" if default else "(info)",
                    ok=ratio >= 20 if default else None,
                    aqa_epoch_s=[round(x, 3) for x in times[name]],
                    reference_epoch_s=[round(x, 3) for x in times["reference"]],
                    samples=len(folders),
                    batch=BATCH,
                    max_mean_abs_difference=round(difference, 4),
                    **sizes,
                )
            )

    log("loader: per-sample cost, real and synthetic videos apart")
    cost = {name: _per_sample(datasets[name], normalizes[name]) for name in ("aqa", "reference")}
    for label, keep in (("real", True), ("synthetic", False)):
        picked = [i for i in everything if real[i] == keep]
        ours = sum(cost["aqa"][i] for i in picked) / len(picked)
        theirs = sum(cost["reference"][i] for i in picked) / len(picked)
        results.append(
            row(
                f"one sample, 0 workers, {label} videos only ({len(picked)})",
                "ms per sample (one pass)",
                f"{ours * 1000:.1f}",
                f"{theirs * 1000:.1f}",
                f"{theirs / ours:.1f}x",
                "(info)",
            )
        )
    torch.set_num_threads(threads)
    return results
