"""A minimal plain-PyTorch reference loop for aggregation heads on cached Fis-V clip features.

All features are loaded once into one padded float32 tensor (500, 302, 1024) plus lengths; batches are
index tensors. Training takes a random contiguous run of `crop` clips per video (or all clips), the
per-clip layers run on the packed real clips only (padded slots cost nothing there), and evaluation runs
on all clips of each video, in batches of similar length. Heads: the paper's `avg` / `wd` (reimplemented
here: per-clip MLP, average or Weight-Decider, Linear(128, 1)) and `attn` / `gdlt` from
aqa_cli.models.long_heads. Optional bf16 autocast on the CPU.

    PYTHONPATH=. python benchmarks/heads_reference.py --head gdlt --target TES --epochs 3 [--bf16]

prints seconds per epoch and the rho of that short run on the last 80 training videos (trained on the
other 320; a sanity check of the timing run, never the test split: results come from research/fisv_cv.py,
with settings chosen by cross-validation inside train).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import Tensor, nn

from aqa_cli.models.long_heads import (
    AttnHead,
    GDLTHead,
    gdlt_hardest_triplet_loss,
    gdlt_triplet_loss,
    per_real_clip,
)

FISV = Path(__file__).resolve().parents[2] / "shared" / "data" / "features" / "fis-v"
FEATURES = "swintx_avg_fps25_clip32_fp16"
TARGETS = {"TES": 1, "PCS": 2}


# ----------------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class FisV:
    features: Tensor  # (V, Kmax, D) float32, zero padded; row i = video id i + 1
    lengths: Tensor  # (V,) int64
    train_ids: np.ndarray  # row indices (video id - 1) of the official train split, file order
    test_ids: np.ndarray
    labels: dict[str, np.ndarray]  # target -> (V,) float64, indexed by row


def load_fisv(root: Path = FISV) -> FisV:
    splits = {}
    labels = {t: np.full(500, np.nan) for t in TARGETS}
    for split in ("train", "test"):
        rows = [line.split() for line in (root / f"{split}.txt").read_text().splitlines() if line.strip()]
        splits[split] = np.array([int(r[0]) - 1 for r in rows])
        for target, column in TARGETS.items():
            labels[target][splits[split]] = [float(r[column]) for r in rows]
    arrays = [np.load(root / FEATURES / f"{i + 1}.npy") for i in range(500)]
    lengths = torch.tensor([len(a) for a in arrays])
    features = torch.zeros(len(arrays), int(lengths.max()), arrays[0].shape[1])
    for i, a in enumerate(arrays):
        features[i, : len(a)] = torch.from_numpy(a.astype(np.float32))
    return FisV(features, lengths, splits["train"], splits["test"], labels)


# ---------------------------------------------------------------------------------------- paper heads


class PaperHead(nn.Module):
    """The paper's head: per-clip MLP with ReLU -> average (`avg`) or Weight-Decider (`wd`) -> Linear."""

    def __init__(self, feature_dim: int, agg: str = "avg", widths: tuple[int, ...] = (256, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in zip((feature_dim, *widths[:-1]), widths, strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.clip_layers = nn.Sequential(*layers)
        self.agg = agg
        if agg == "wd":
            w = (widths[-1], 64, 32, 64, widths[-1])
            decider: list[nn.Module] = []
            for i, (a, b) in enumerate(zip(w[:-1], w[1:], strict=True)):
                decider.append(nn.Linear(a, b))
                if i < len(w) - 2:
                    decider += [nn.ReLU(), nn.Dropout(0.1)]
            self.decider = nn.Sequential(*decider)
        self.regressor = nn.Linear(widths[-1], 1)

    def forward(self, features: Tensor, mask: Tensor, clips: Tensor | None = None):
        if clips is None:
            clips = self.clip_layers(features.masked_fill(~mask[..., None], 0))
        clips = clips.masked_fill(~mask[..., None], 0)
        if self.agg == "wd":
            logits = self.decider(clips).float().masked_fill(~mask[..., None], float("-inf"))
            video = (clips * logits.softmax(dim=1).to(clips.dtype)).sum(1)
        else:
            video = clips.sum(1) / mask.sum(1, keepdim=True).to(clips.dtype)
        return self.regressor(video).squeeze(-1).float(), None, None


# ------------------------------------------------------------------------------------------- training


@dataclasses.dataclass
class Config:
    head: str = "attn"  # avg | wd | attn | gdlt
    head_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    optimizer: str = "adamw"  # adam | adamw | sgd (momentum 0.9)
    lr: float = 3e-4
    weight_decay: float = 1e-2
    epochs: int = 60
    batch: int = 16
    warmup: int = 0  # epochs of linear warm-up
    schedule: str = "cosine"  # cosine | constant
    crop: int | None = 64  # train on a random contiguous run of this many clips; None: all clips
    loss: str = "mse"  # mse | l1l2
    triplet: float = 0.0  # weight of gdlt's triplet term
    margin: float = 1.0
    triplet_mining: str = "rolled"  # rolled | hardest (GDLT's code)
    min_lr: float = 0.0  # where the cosine ends
    standardize: bool = True  # z-score each feature channel with the training videos' clip statistics
    bf16: bool = False
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_head(config: Config, feature_dim: int) -> nn.Module:
    if config.head in ("avg", "wd"):
        return PaperHead(feature_dim, config.head, **config.head_options)
    if config.head == "attn":
        return AttnHead(feature_dim, **config.head_options)
    if config.head == "gdlt":
        return GDLTHead(feature_dim, **config.head_options)
    raise ValueError(config.head)


def _forward(model: nn.Module, x: Tensor, mask: Tensor):
    """The head on padded x (N, K, D), the per-clip layers on the packed real clips only (the long heads
    pack them themselves)."""
    if isinstance(model, PaperHead) and not bool(mask.all()):
        return model(x, mask, clips=per_real_clip(model.clip_layers, x, mask))
    return model(x, mask)


def _outputs(out) -> tuple[Tensor, Tensor | None]:
    if isinstance(out, tuple) and not hasattr(out, "score"):
        return out[0], None
    return out.score, out.embed


class Trainer:
    """Trains one head on rows `train_rows` of `data` for `target`; `predict` gives scores in target units."""

    def __init__(self, data: FisV, config: Config, target: str, train_rows: np.ndarray) -> None:
        self.data, self.config, self.target = data, config, target
        self.train_rows = np.asarray(train_rows)
        y = data.labels[target][self.train_rows]
        self.y_min, self.y_max = float(y.min()), float(y.max())
        self.y = torch.tensor((y - self.y_min) / (self.y_max - self.y_min), dtype=torch.float32)
        lengths = data.lengths[self.train_rows]
        if config.standardize:
            feats = data.features[self.train_rows]
            m = torch.arange(feats.shape[1])[None, :] < lengths[:, None]
            real = feats[m]
            self.mean, self.std = real.mean(0), real.std(0).clamp_min(1e-3)
        else:
            self.mean, self.std = None, None
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.model = build_head(config, data.features.shape[-1])
        params = {"lr": config.lr, "weight_decay": config.weight_decay}
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.model.parameters(), momentum=0.9, **params)
        else:
            opt = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
            self.optimizer = opt(self.model.parameters(), **params)
        self.steps_per_epoch = math.ceil(len(self.train_rows) / config.batch)
        total = self.steps_per_epoch * config.epochs
        warm = self.steps_per_epoch * config.warmup

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if config.schedule == "cosine":
                floor = config.min_lr / config.lr
                return floor + (1 - floor) * 0.5 * (
                    1 + math.cos(math.pi * (step - warm) / max(1, total - warm))
                )
            return 1.0

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.epoch = 0
        self.epoch_seconds: list[float] = []

    def _autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16) if self.config.bf16 else nullcontext()

    def _prep(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x.masked_fill(~mask[..., None], 0)

    def _batch(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        rows = torch.as_tensor(self.train_rows)[positions]
        lengths = self.data.lengths[rows]
        crop = self.config.crop
        if crop is None:
            k = int(lengths.max())
            x = self.data.features[rows, :k]
            mask = torch.arange(k)[None, :] < lengths[:, None]
        else:
            starts = (torch.rand(len(rows), generator=self.generator) * (lengths - crop + 1)).long()
            index = starts[:, None] + torch.arange(crop)[None, :]
            x = self.data.features[rows[:, None], index]
            mask = torch.ones(len(rows), crop, dtype=torch.bool)
        return self._prep(x, mask), mask

    def train_epoch(self) -> float:
        config = self.config
        self.model.train()
        start = time.perf_counter()
        order = torch.randperm(len(self.train_rows), generator=self.generator)
        total = 0.0
        for positions in order.split(config.batch):
            x, mask = self._batch(positions)
            y = self.y[positions]
            with self._autocast():
                score, embed = _outputs(_forward(self.model, x, mask))
            score = score.float()
            if config.loss == "l1l2":
                loss = F.l1_loss(score, y) + F.mse_loss(score, y)
            else:
                loss = F.mse_loss(score, y)
            if config.triplet > 0 and embed is not None:
                triplet = (
                    gdlt_hardest_triplet_loss if config.triplet_mining == "hardest" else gdlt_triplet_loss
                )
                loss = loss + config.triplet * triplet(embed, config.margin)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total += float(loss.detach()) * len(positions)
        self.epoch += 1
        self.epoch_seconds.append(time.perf_counter() - start)
        return total / len(self.train_rows)

    @torch.no_grad()
    def predict(self, rows: np.ndarray, batch: int = 32) -> np.ndarray:
        """Scores in target units for `rows`, on all clips, in batches of similar length."""
        self.model.eval()
        rows = np.asarray(rows)
        lengths = self.data.lengths[rows]
        order = torch.argsort(lengths)
        out = torch.empty(len(rows))
        for chunk in order.split(batch):
            r = torch.as_tensor(rows)[chunk]
            k = int(lengths[chunk].max())
            mask = torch.arange(k)[None, :] < self.data.lengths[r][:, None]
            x = self._prep(self.data.features[r, :k], mask)
            with self._autocast():
                score, _ = _outputs(_forward(self.model, x, mask))
            out[chunk] = score.float()
        return out.numpy() * (self.y_max - self.y_min) + self.y_min


def rho(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(spearmanr(pred, truth)[0])


# ---------------------------------------------------------------------------------------------- ridge


def mean_pooled(data: FisV, rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows)
    feats = data.features[rows]
    return (feats.sum(1) / data.lengths[rows][:, None]).double().numpy()


def ridge_fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, lam: float) -> np.ndarray:
    """Ridge with an (unpenalized) intercept on features standardized with the training statistics."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-8
    a, b = (x_train - mu) / sd, (x_test - mu) / sd
    y_mean = y_train.mean()
    # dual form: (A A^T + lam I) alpha = y, w = A^T alpha (n << d)
    alpha = np.linalg.solve(a @ a.T + lam * np.eye(len(a)), y_train - y_mean)
    return b @ (a.T @ alpha) + y_mean


RIDGE_LAMBDAS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def ridge_choose_lambda(x: np.ndarray, y: np.ndarray, folds: list[np.ndarray]) -> tuple[float, dict]:
    """The penalty with the best mean Spearman rho over `folds` (lists of validation positions)."""
    scores = {}
    for lam in RIDGE_LAMBDAS:
        per_fold = []
        for val in folds:
            tr = np.setdiff1d(np.arange(len(x)), val)
            per_fold.append(rho(ridge_fit_predict(x[tr], y[tr], x[val], lam), y[val]))
        scores[lam] = per_fold
    best = max(scores, key=lambda lam: np.mean(scores[lam]))
    return best, scores


def kfold(n: int, k: int = 5, seed: int = 0) -> list[np.ndarray]:
    """Fixed fold assignment: a seeded permutation of range(n) cut into k validation folds."""
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(f) for f in np.array_split(perm, k)]


# ----------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--head", default="attn", choices=["avg", "wd", "attn", "gdlt"])
    parser.add_argument("--target", default="TES", choices=list(TARGETS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--crop", type=int, default=0, help="0: all clips")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--options", default="{}", help="head options as JSON")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data = load_fisv()
    load_s = time.perf_counter() - start
    config = Config(
        head=args.head,
        head_options=json.loads(args.options),
        epochs=args.epochs,
        crop=args.crop or None,
        batch=args.batch,
        bf16=args.bf16,
    )
    fit_rows, held_rows = data.train_ids[:320], data.train_ids[320:]
    trainer = Trainer(data, config, args.target, fit_rows)
    for _ in range(args.epochs):
        trainer.train_epoch()
    start = time.perf_counter()
    pred = trainer.predict(held_rows)
    eval_s = time.perf_counter() - start
    print(
        json.dumps(
            {
                "config": config.to_dict(),
                "load_s": round(load_s, 2),
                "epoch_s": [round(s, 3) for s in trainer.epoch_seconds],
                "eval_s_80_videos": round(eval_s, 3),
                "held_out_80_train_videos_rho": round(rho(pred, data.labels[args.target][held_rows]), 4),
            }
        )
    )


if __name__ == "__main__":
    main()
