"""PNG plots: training curves (like the paper's Fig. 4), prediction scatter, and per-clip explanations.

Plots need matplotlib (`pip install 'aqa-cli[plots]'`, installed by `make setup`); without it the
commands still run and say that the plot was skipped.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from aqa_cli.util.errors import AqaError
from aqa_cli.util.safe_output import atomic_write


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(figure, path: Path) -> Path:
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, image.getvalue(), "make that folder writable or choose another path")
    return path


def plot_training_curves(rows: list[dict], path: Path) -> Path | None:
    """Train loss, and val/test Spearman rho per epoch."""
    plt = _pyplot()
    if plt is None or not rows:
        return None
    epochs = [row["epoch"] for row in rows]
    figure, (loss_axis, rho_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    loss_axis.plot(epochs, [row["train_loss"] for row in rows], marker=".", label="train loss (L1 + L2)")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    loss_axis.set_yscale("log")
    loss_axis.legend()
    for split, style in (("val", "-"), ("test", "--")):
        values = [row.get(f"{split}_rho", np.nan) for row in rows]
        if np.isfinite(values).any():
            rho_axis.plot(epochs, values, style, marker=".", label=f"{split} Spearman rho")
    rho_axis.set_xlabel("epoch")
    rho_axis.set_ylabel("Spearman rho")
    rho_axis.grid(alpha=0.3)
    if rho_axis.lines:
        rho_axis.legend()
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return path


def plot_scatter(true: np.ndarray, pred: np.ndarray, title: str, path: Path) -> Path | None:
    """Predicted vs judges' scores with the identity line."""
    plt = _pyplot()
    if plt is None:
        return None
    figure, axis = plt.subplots(figsize=(4.8, 4.6))
    axis.scatter(true, pred, s=14, alpha=0.7)
    low, high = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    axis.plot([low, high], [low, high], color="gray", linewidth=1)
    axis.set_xlabel("judges' score")
    axis.set_ylabel("predicted score")
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return path


def plot_clip_explanation(frames: list[np.ndarray], weights: list[float], title: str, path: Path) -> Path:
    """One frame per clip with that clip's weight under it (the mean Weight-Decider weight)."""
    plt = _pyplot()
    if plt is None:
        raise AqaError("--explain needs matplotlib: pip install 'aqa-cli[plots]' (or matplotlib)")
    figure, axes = plt.subplots(1, len(frames), figsize=(2.2 * len(frames), 2.4), squeeze=False)
    top = max(weights)
    for axis, frame, weight in zip(axes[0], frames, weights, strict=True):
        axis.imshow(frame)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_xlabel(f"weight {weight:.3f}", fontweight="bold" if weight == top else "normal")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return path


def plot_experiment(summary: list[dict], aggregations: list[str], title: str, path: Path) -> Path | None:
    """`aqa experiment`: test rho per cell (mean over seeds, std as error bars), one bar per aggregation."""
    plt = _pyplot()
    if plt is None or not summary:
        return None
    names = [row["cell"].name for row in summary]
    width = 0.8 / len(aggregations)
    figure, axis = plt.subplots(figsize=(max(5.0, 1.2 * len(names) * len(aggregations)), 3.8))
    for k, agg in enumerate(aggregations):
        means = [row[agg]["rho"][0] for row in summary]
        stds = [row[agg]["rho"][1] for row in summary]
        positions = np.arange(len(names)) + (k - (len(aggregations) - 1) / 2) * width
        axis.bar(positions, means, width, yerr=stds, capsize=3, label=agg)
    axis.set_xticks(np.arange(len(names)), names, rotation=20, ha="right")
    axis.set_ylabel("test Spearman rho")
    axis.set_title(title, fontsize=9)
    axis.grid(axis="y", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return path


def plot_timeline(
    clips: list[dict], thumbnails: list[tuple[int, np.ndarray]], title: str, path: Path
) -> Path:
    """Each clip's weight as a bar over its [start, end] seconds, and below the axis the middle frames of
    the most weighted clips (`thumbnails`: (clip, frame)), each linked to its bar by its time."""
    plt = _pyplot()
    if plt is None:
        raise AqaError("--explain needs matplotlib: pip install 'aqa-cli[plots]' (or matplotlib)")
    shown = max(1, len(thumbnails))
    figure = plt.figure(figsize=(max(7.0, 2.2 * shown), 4.6))
    grid = figure.add_gridspec(2, shown, height_ratios=[1.4, 1])
    axis = figure.add_subplot(grid[0, :])
    starts = np.array([clip["start"] for clip in clips])
    ends = np.array([clip["end"] for clip in clips])
    weights = np.array([clip["weight"] for clip in clips])
    top = {k for k, _ in thumbnails}
    colours = ["tab:orange" if k in top else "tab:blue" for k in range(len(clips))]
    axis.bar(starts, weights, width=np.maximum(ends - starts, 1e-3), align="edge", color=colours)
    axis.set_xlabel("time (s)")
    axis.set_ylabel("clip weight")
    axis.set_xlim(float(starts.min()), float(ends.max()))
    axis.set_title(title, fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    for column, (k, frame) in enumerate(thumbnails):
        picture = figure.add_subplot(grid[1, column])
        picture.imshow(frame)
        picture.set_xticks([])
        picture.set_yticks([])
        picture.set_xlabel(
            f"{clips[k]['start']:.1f}-{clips[k]['end']:.1f} s, weight {clips[k]['weight']:.3f}"
        )
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return path
