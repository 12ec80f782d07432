"""Choosing aggregation-head settings on Fis-V by 5-fold cross-validation inside the 400 training videos.

The official test split is read only by `final`, once per (head, target, seed), with settings frozen in
research/fisv_settings.json beforehand.

    PYTHONPATH=. python research/fisv_cv.py cv --name attn-base --head attn --targets TES PCS \
        --set '{"lr": 3e-4, "epochs": 60}' --options '{"mean_path": true}' [--seeds 0 1 2]
    PYTHONPATH=. python research/fisv_cv.py ridge
    PYTHONPATH=. python research/fisv_cv.py final --heads attn gdlt --targets TES PCS --seeds 0 1 2

`cv` appends one JSON line per (setting, target) to research/fisv_cv_results.jsonl: the validation rho of
every fold (and, with several seeds, of the seed-averaged prediction), checkpoints every `--every`
epochs, and seconds. Folds: a permutation of the 400 training videos by seed 0, cut into 5.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from heads_reference import (  # noqa: E402
    RIDGE_LAMBDAS,
    Config,
    FisV,
    Trainer,
    kfold,
    load_fisv,
    mean_pooled,
    rho,
    ridge_choose_lambda,
    ridge_fit_predict,
)

HERE = Path(__file__).parent
RESULTS = HERE / "fisv_cv_results.jsonl"
FINAL = HERE / "fisv_final_results.jsonl"
SETTINGS = HERE / "fisv_settings.json"
FOLD_SEED = 0
N_FOLDS = 5


def _append(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def run_cv(data: FisV, name: str, config: Config, targets: list[str], seeds: list[int], every: int) -> None:
    folds = kfold(len(data.train_ids), N_FOLDS, FOLD_SEED)
    for target in targets:
        start = time.perf_counter()
        y_all = data.labels[target][data.train_ids]
        single: list[list[float]] = []  # [seed][fold]
        curves: dict[int, list[list[float]]] = {}  # epoch -> [seed][fold]
        ensemble_preds = [np.zeros(len(f)) for f in folds]
        epoch_s = []
        for s_index, seed in enumerate(seeds):
            single.append([])
            for f_index, val in enumerate(folds):
                tr = np.setdiff1d(np.arange(len(data.train_ids)), val)
                cfg = copy.deepcopy(config)
                cfg.seed = seed
                trainer = Trainer(data, cfg, target, data.train_ids[tr])
                for epoch in range(1, cfg.epochs + 1):
                    trainer.train_epoch()
                    if epoch % every == 0 and epoch < cfg.epochs:
                        r = rho(trainer.predict(data.train_ids[val]), y_all[val])
                        curves.setdefault(epoch, [[] for _ in seeds])[s_index].append(r)
                pred = trainer.predict(data.train_ids[val])
                single[-1].append(rho(pred, y_all[val]))
                ensemble_preds[f_index] += pred / len(seeds)
                epoch_s.append(float(np.mean(trainer.epoch_seconds)))
        per_seed_means = [float(np.mean(s)) for s in single]
        record = {
            "name": name,
            "target": target,
            "config": config.to_dict(),
            "seeds": seeds,
            "fold_rho": single,
            "cv_mean": float(np.mean(per_seed_means)),
            "cv_std_over_folds": float(np.mean([np.std(s) for s in single])),
            "seconds": round(time.perf_counter() - start, 1),
            "epoch_s": round(float(np.mean(epoch_s)), 3),
            "curve": {e: float(np.mean([np.mean(x) for x in v if x])) for e, v in sorted(curves.items())},
        }
        if len(seeds) > 1:
            ens = [rho(p, y_all[val]) for p, val in zip(ensemble_preds, folds, strict=True)]
            record["ensemble_fold_rho"] = ens
            record["ensemble_cv_mean"] = float(np.mean(ens))
            record["ensemble_cv_std"] = float(np.std(ens))
        _append(RESULTS, record)
        line = f"{name:28s} {target} cv {record['cv_mean']:.4f} ± {record['cv_std_over_folds']:.4f}"
        if len(seeds) > 1:
            line += f"  ens {record['ensemble_cv_mean']:.4f} ± {record['ensemble_cv_std']:.4f}"
        print(
            line + f"  curve {record['curve']}  {record['seconds']} s ({record['epoch_s']} s/epoch)",
            flush=True,
        )


def run_ridge(data: FisV) -> None:
    folds = kfold(len(data.train_ids), N_FOLDS, FOLD_SEED)
    x = mean_pooled(data, data.train_ids)
    for target in ("TES", "PCS"):
        y = data.labels[target][data.train_ids]
        best, scores = ridge_choose_lambda(x, y, folds)
        for lam in RIDGE_LAMBDAS:
            _append(
                RESULTS,
                {
                    "name": f"ridge-lambda{lam:g}",
                    "target": target,
                    "config": {"head": "ridge", "lambda": lam},
                    "fold_rho": [scores[lam]],
                    "cv_mean": float(np.mean(scores[lam])),
                    "cv_std_over_folds": float(np.std(scores[lam])),
                    "chosen": lam == best,
                },
            )
            print(f"ridge lambda {lam:g} {target} cv {np.mean(scores[lam]):.4f} ± {np.std(scores[lam]):.4f}")
        print(f"ridge {target}: lambda {best:g} chosen by CV")


def _val_split(n: int, seed: int) -> np.ndarray:
    """20% of the training positions, by seed, held out for epoch selection."""
    perm = np.random.default_rng(1000 + seed).permutation(n)
    return np.sort(perm[: n // 5])


def run_final(data: FisV, heads: list[str], targets: list[str], seeds: list[int], modes: list[str]) -> None:
    settings = json.loads(SETTINGS.read_text())
    for head in heads:
        for target in targets:
            for seed in seeds[:1] if head == "ridge" else seeds:  # ridge is deterministic
                if head == "ridge":
                    if "fixed" not in modes:
                        continue
                    start = time.perf_counter()
                    folds = kfold(len(data.train_ids), N_FOLDS, FOLD_SEED)
                    x = mean_pooled(data, data.train_ids)
                    y = data.labels[target][data.train_ids]
                    lam, _ = ridge_choose_lambda(x, y, folds)
                    pred = ridge_fit_predict(x, y, mean_pooled(data, data.test_ids), lam)
                    r = rho(pred, data.labels[target][data.test_ids])
                    rec = {"head": "ridge", "target": target, "seed": seed, "mode": "fixed", "lambda": lam}
                    rec |= {
                        "test_rho": r,
                        "seconds": round(time.perf_counter() - start, 1),
                        "test_pred": pred.tolist(),
                    }
                    _append(FINAL, rec)
                    print(json.dumps(rec), flush=True)
                    continue
                spec = settings[head]
                config = Config(**{**spec["config"], "seed": seed})
                y_test = data.labels[target][data.test_ids]
                if "fixed" in modes:
                    start = time.perf_counter()
                    trainer = Trainer(data, config, target, data.train_ids)
                    for _ in range(config.epochs):
                        trainer.train_epoch()
                    pred = trainer.predict(data.test_ids)
                    rec = {
                        "head": head,
                        "target": target,
                        "seed": seed,
                        "mode": "fixed",
                        "epochs": config.epochs,
                    }
                    rec |= {"test_rho": rho(pred, y_test), "seconds": round(time.perf_counter() - start, 1)}
                    rec |= {
                        "epoch_s": round(float(np.mean(trainer.epoch_seconds)), 3),
                        "test_pred": pred.tolist(),
                    }
                    _append(FINAL, rec)
                    print(json.dumps(rec), flush=True)
                if "val20" in modes:
                    start = time.perf_counter()
                    val = _val_split(len(data.train_ids), seed)
                    tr = np.setdiff1d(np.arange(len(data.train_ids)), val)
                    y_val = data.labels[target][data.train_ids[val]]
                    trainer = Trainer(data, config, target, data.train_ids[tr])
                    best, best_epoch, best_state = -2.0, 0, None
                    for epoch in range(1, config.epochs + 1):
                        trainer.train_epoch()
                        r_val = rho(trainer.predict(data.train_ids[val]), y_val)
                        if r_val > best:
                            best, best_epoch = r_val, epoch
                            best_state = copy.deepcopy(trainer.model.state_dict())
                    trainer.model.load_state_dict(best_state)
                    pred = trainer.predict(data.test_ids)
                    rec = {
                        "head": head,
                        "target": target,
                        "seed": seed,
                        "mode": "val20",
                        "best_epoch": best_epoch,
                    }
                    rec |= {
                        "val_rho": best,
                        "test_rho": rho(pred, y_test),
                        "seconds": round(time.perf_counter() - start, 1),
                    }
                    rec |= {"test_pred": pred.tolist()}
                    _append(FINAL, rec)
                    print(json.dumps(rec), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cv = sub.add_parser("cv")
    cv.add_argument("--name", required=True)
    cv.add_argument("--head", required=True, choices=["avg", "wd", "attn", "gdlt"])
    cv.add_argument("--targets", nargs="+", default=["TES", "PCS"])
    cv.add_argument("--set", default="{}", help="Config fields as JSON")
    cv.add_argument("--options", default="{}", help="head options as JSON")
    cv.add_argument("--seeds", type=int, nargs="+", default=[0])
    cv.add_argument("--every", type=int, default=20)
    sub.add_parser("ridge")
    final = sub.add_parser("final")
    final.add_argument("--heads", nargs="+", default=["ridge", "avg", "wd", "attn", "gdlt"])
    final.add_argument("--targets", nargs="+", default=["TES", "PCS"])
    final.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    final.add_argument("--modes", nargs="+", default=["fixed", "val20"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_fisv()
    if args.command == "cv":
        config = Config(head=args.head, head_options=json.loads(args.options), **json.loads(args.set))
        run_cv(data, args.name, config, args.targets, args.seeds, args.every)
    elif args.command == "ridge":
        run_ridge(data)
    else:
        run_final(data, args.heads, args.targets, args.seeds, args.modes)


if __name__ == "__main__":
    main()
