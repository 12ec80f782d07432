"""`aqa train --features F --ensemble N`: N members trained one after the other (seeds seed .. seed+N-1,
or with `--folds K` the K folds of train, N = K), then ONE checkpoint holding all of them
(`models.heads.EnsembleHead`): `eval` and `score` treat it as one model and report the members' spread.

Members live in RUN/members/<seed S | fold F>/ as ordinary runs (each resumable); rerunning the
ensemble with --resume resumes the unfinished members and skips the finished ones. A member with a
validation split contributes its best.pt, else its last.pt.

`--ridge-blend W` adds a ridge regression on the mean-pooled features (`--ridge-pool mean-max`: the mean and
the channel-wise maximum; `models.heads.RidgeMember`), fitted as the experiments' ridge baseline is (on all of train, its penalty chosen on the val videos or by 5-fold
cross-validation inside train), whose score takes the share W of the ensemble's.

`--aux-target COLUMN` (`--aux-weight W`, default 0.5) trains the same ensemble on another score column of
the store (in RUN/auxiliary/, e.g. PCS for TES: a correlated, less noisy label) and maps its quality onto
the target's by the least-squares line between the training videos' two labels; that mapped prediction
takes the share W of the score.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import torch

from aqa_cli.checkpoints.io import BEST, LAST, RUNS_DIR, load_checkpoint, save_checkpoint
from aqa_cli.data.splits import SplitPlan, labelled_splits
from aqa_cli.evaluation.evaluate import evaluate_checkpoint
from aqa_cli.evaluation.metrics import score_span
from aqa_cli.evaluation.ridge import RIDGE_POOLINGS, difficulty_scale, fit_ridge, pooled_features
from aqa_cli.stores.feature_store import FeatureStore
from aqa_cli.training.config import TrainConfig, resolve_head_defaults
from aqa_cli.training.heads import train_heads, with_target
from aqa_cli.training.loop import TrainingProgress, TrainResult, open_run
from aqa_cli.util.errors import AqaError
from aqa_cli.util.safe_output import atomic_write

TRAINING_STATE = ("model", "optimizer", "scaler", "scheduler", "rng", "metrics", "best")


def member_configs(config: TrainConfig, run_dir: Path) -> list[TrainConfig]:
    """One config per member: the seeds from config.seed on, or every fold of `config.folds`."""
    if config.folds and config.ensemble != config.folds:
        raise AqaError(
            f"--ensemble {config.ensemble} with --folds {config.folds}: the members are the folds, give both the same"
        )
    single = dataclasses.replace(config, ensemble=0)
    if config.folds:
        return [
            dataclasses.replace(single, fold=fold, out=str(run_dir / "members" / f"fold{fold}"))
            for fold in range(config.folds)
        ]
    seeds = range(config.seed, config.seed + config.ensemble)
    return [
        dataclasses.replace(single, seed=seed, out=str(run_dir / "members" / f"seed{seed}")) for seed in seeds
    ]


def train_ensemble(
    config: TrainConfig, resume: bool = False, progress: TrainingProgress | None = None
) -> TrainResult:
    """Train (or resume) every member, then write RUN/last.pt: the ensemble as one checkpoint."""
    if not config.features or config.ensemble < 2:
        raise AqaError("--ensemble N trains N >= 2 heads on --features")
    if not 0 <= config.ridge_blend <= 1:
        raise AqaError(
            f"--ridge-blend {config.ridge_blend}: give the ridge's share of the score, from 0 to 1"
        )
    if config.ridge_pool not in RIDGE_POOLINGS:
        raise AqaError(f"--ridge-pool {config.ridge_pool!r}: choose one of {', '.join(RIDGE_POOLINGS)}")
    if not 0 <= config.aux_weight <= 1:
        raise AqaError(
            f"--aux-weight {config.aux_weight}: give the auxiliary's share of the score, from 0 to 1"
        )
    config = resolve_head_defaults(with_target(config))  # its config.toml repeats it exactly
    if config.aux_target:
        check_aux_target(config)
    default = RUNS_DIR / f"ensemble-{Path(config.features).stem}-{config.agg}-seed{config.seed}"
    run_dir, _ = open_run(config, resume, default)
    if resume and not (run_dir / "config.toml").is_file():
        raise AqaError(f"nothing to resume: {run_dir} holds no ensemble; start it without --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "config.toml", dataclasses.replace(config, out=str(run_dir)).to_toml())
    payloads, chosen = [], []
    for member in member_configs(config, run_dir):
        out = Path(member.out)
        train_heads(member, resume=(out / LAST).is_file(), progress=progress)
        path = out / BEST if (out / BEST).is_file() else out / LAST
        payloads.append(load_checkpoint(path))
        chosen.append(str(path))
    ridge = ridge_member(config) if config.ridge_blend else None
    auxiliary = auxiliary_member(config, run_dir, progress) if config.aux_target else None
    save_checkpoint(run_dir / LAST, ensemble_payload(config, run_dir, payloads, chosen, ridge, auxiliary))
    row = {"epoch": payloads[0]["epoch"]}
    if config.test_curve and not config.folds:
        with contextlib.suppress(AqaError):  # no labelled test split: nothing to report
            row["test_rho"] = evaluate_checkpoint(None, run_dir / LAST, None, "test", config.device, 32)[
                "rho"
            ]
    return TrainResult(run_dir, [row], None)


def ridge_member(config: TrainConfig) -> tuple[dict, dict[str, torch.Tensor]]:
    """The blended ridge's record ({"weight", "penalty"}) and state, fitted on the training split (all of
    it for an ensemble of folds; without --val-fraction's videos, which choose its penalty)."""
    plan = SplitPlan.of(dataclasses.replace(config, folds=0, fold=0))
    with FeatureStore(config.features) as store:
        rows = labelled_splits(store, config.target, plan)
        pooled = pooled_features(store, config.ridge_pool)
        scores = store.scores(config.target)
        scale = quality_scale(store, config)
        span = score_span(scores, store.path, config.target)
    fit = fit_ridge(pooled, scores, scale, rows["train"], rows["val"], span)
    state = {
        f"ridge.{name}": torch.as_tensor(np.asarray(getattr(fit, name)), dtype=torch.float32)
        for name in ("mean", "std", "weights", "bias")
    }
    return {"weight": config.ridge_blend, "penalty": fit.penalty, "pooling": config.ridge_pool}, state


def quality_scale(store: FeatureStore, config: TrainConfig) -> np.ndarray:
    """What each sample's score is divided by to give the quality the heads learn: its difficulty (where it
    has one) with --use-difficulty, else 1."""
    if config.use_difficulty:
        return difficulty_scale(store.column("difficulty"))
    return np.ones(len(store))


def check_aux_target(config: TrainConfig) -> None:
    """--aux-target names another score column of the store (checked before any member trains)."""
    with FeatureStore(config.features) as store:
        others = [name for name in store.score_columns if name != config.target]
    if config.aux_target not in others:
        raise AqaError(
            f"--aux-target {config.aux_target}: name another score column of {config.features} than the "
            f"target {config.target}: {', '.join(others) or 'it has none'}"
        )


def auxiliary_member(
    config: TrainConfig, run_dir: Path, progress: TrainingProgress | None
) -> tuple[dict, dict[str, torch.Tensor]]:
    """The auxiliary ensemble (the same settings on `config.aux_target`, in RUN/auxiliary/, resumed there
    when rerun), its record and state: the line maps its quality onto the target's, fitted on the training
    videos' two labels (without --val-fraction's videos; all of train for an ensemble of folds)."""
    with FeatureStore(config.features) as store:
        rows = labelled_splits(
            store, config.target, SplitPlan.of(dataclasses.replace(config, folds=0, fold=0))
        )
        scale = quality_scale(store, config)
        target, other = (store.scores(name) / scale for name in (config.target, config.aux_target))
    train = [row for row in rows["train"] if np.isfinite(other[row])]
    slope, intercept = np.polyfit(other[train], target[train], 1)
    out = run_dir / "auxiliary"
    aux_config = dataclasses.replace(
        config, target=config.aux_target, aux_target="", out=str(out), test_curve=False
    )
    train_ensemble(aux_config, resume=(out / "config.toml").is_file(), progress=progress)
    payload = load_checkpoint(out / LAST)
    record = {
        "target": config.aux_target,
        "weight": config.aux_weight,
        "line": [float(intercept), float(slope)],
        "model_config": payload["model_config"],
    }
    return record, {f"auxiliary.{name}": tensor for name, tensor in payload["model"].items()}


def ensemble_payload(
    config: TrainConfig,
    run_dir: Path,
    payloads: list[dict],
    paths: list[str],
    ridge: tuple[dict, dict[str, torch.Tensor]] | None = None,
    auxiliary: tuple[dict, dict[str, torch.Tensor]] | None = None,
) -> dict:
    """The members' checkpoints as one: the first member's records, every member's config and weights
    (and the blended ridge's and the auxiliary ensemble's), the training ranges joined, and which members
    it holds."""
    first = {key: value for key, value in payloads[0].items() if key not in TRAINING_STATE}
    state = {
        f"members.{index}.{name}": tensor
        for index, payload in enumerate(payloads)
        for name, tensor in payload["model"].items()
    }
    model_config = {**payloads[0]["model_config"], "members": [p["model_config"] for p in payloads]}
    for name, part in (("ridge", ridge), ("auxiliary", auxiliary)):
        if part is not None:
            model_config[name] = part[0]
            state.update(part[1])
    ranges = [payload["training_range"] for payload in payloads]
    joined = {kind: [min(r[kind][0] for r in ranges), max(r[kind][1] for r in ranges)] for kind in ranges[0]}
    return {
        **first,
        "model_config": model_config,
        "model": state,
        "training_range": joined,
        "train_config": dataclasses.asdict(dataclasses.replace(config, out=str(run_dir))),
        "ensemble": {
            "members": len(payloads),
            "seeds": [p["train_config"]["seed"] for p in payloads],
            "folds": [p["train_config"]["fold"] for p in payloads] if config.folds else None,
            "checkpoints": paths,
        },
    }
