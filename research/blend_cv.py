"""Two questions by 5-fold cross-validation inside the 400 official training videos of Fis-V (the folds of
`aqa experiment --folds 5`; the test split is not used): does bf16 autocast cost `attn` (issue 12's
defaults) rho, and does averaging `attn` with a ridge regression on mean-pooled features add rho over
either alone? Ridge's penalty is chosen inside each fold's training rows (5 inner folds), as
`ridge_baseline` chooses it. Usage: python research/blend_cv.py (results: research/precision/blend_cv.json).
"""
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from aqa_cli.checkpoints.io import LAST, load_checkpoint
from aqa_cli.data.splits import SplitPlan, labelled_splits
from aqa_cli.evaluation.evaluate import predict_heads
from aqa_cli.evaluation.metrics import score_span
from aqa_cli.evaluation.ridge import fit_ridge
from aqa_cli.stores.feature_store import FeatureStore
from aqa_cli.training.config import TrainConfig, resolve_head_defaults
from aqa_cli.training.dispatch import train
from aqa_cli.training.heads import with_target

STORE, FOLDS, OUT = "data/fis-v.features.h5", 5, Path("research/precision")


def rho(predicted, true):
    return float(spearmanr(predicted, true).statistic)


results = []
with FeatureStore(STORE) as store:
    pooled = np.stack([store.features(row).mean(axis=0) for row in range(len(store))])
for target in ("TES", "PCS"):
    with FeatureStore(STORE) as store:
        scores = store.scores(target)
        span = score_span(scores, store.path, target)
    for fold in range(FOLDS):
        with FeatureStore(STORE) as store:
            rows = labelled_splits(store, target, SplitPlan(folds=FOLDS, fold=fold))
        fit_rows, val_rows = np.array(rows["train"]), np.array(rows["val"])
        ridge = fit_ridge(pooled, scores, np.ones(len(scores)), rows["train"], [], span).quality(pooled[val_rows])
        row = {"target": target, "fold": fold, "ridge": rho(ridge, scores[val_rows])}
        for precision in ("fp32", "bf16"):
            out = OUT / "cv-attn" / f"{target}-fold{fold}-{precision}"
            config = with_target(TrainConfig(features=STORE, target=target, agg="attn", folds=FOLDS, fold=fold,
                                             precision=precision, test_curve=False, seed=0, device="cpu",
                                             out=str(out)))
            if not (out / LAST).is_file() or load_checkpoint(out / LAST)["epoch"] < resolve_head_defaults(config).epochs:
                train(resolve_head_defaults(config), resume=(out / LAST).is_file())
            found, _, _ = predict_heads(load_checkpoint(out / LAST), None, "val", "cpu", 32)
            assert list(found.rows) == list(val_rows)
            row[precision] = rho(found.score, scores[val_rows])
            row[f"blend-{precision}"] = rho((found.score + ridge) / 2, scores[val_rows])
        print(json.dumps(row), flush=True)
        results.append(row)
summary = {target: {key: [float(np.mean(v := [r[key] for r in results if r["target"] == target])),
                          float(np.std(v, ddof=1))]
                    for key in ("ridge", "fp32", "bf16", "blend-fp32", "blend-bf16")}
           for target in ("TES", "PCS")}
(OUT / "blend_cv.json").write_text(json.dumps({"folds": results, "mean_std": summary}, indent=1) + "\n")
print(json.dumps(summary))
