"""The blend weight by the same 5-fold CV inside train as research/blend_cv.py (run that first: this reads
its fp32 attn runs): held-out rho of (1 - W) x attn + W x ridge for W in 0, 0.25, 0.5, 0.75, 1. Looked at
after the preset fixed W = 0.5; the test split is not used. Usage: python research/blend_weights_cv.py"""
import json, numpy as np
from scipy.stats import spearmanr
from pathlib import Path
from aqa_cli.checkpoints.io import LAST, load_checkpoint
from aqa_cli.data.splits import SplitPlan, labelled_splits
from aqa_cli.evaluation.evaluate import predict_heads
from aqa_cli.evaluation.ridge import fit_ridge, pooled_features
from aqa_cli.evaluation.metrics import score_span
from aqa_cli.stores.feature_store import FeatureStore
STORE="data/fis-v.features.h5"
with FeatureStore(STORE) as store:
    pooled = pooled_features(store)
out = {}
for target in ("TES","PCS"):
    with FeatureStore(STORE) as store:
        scores = store.scores(target); span = score_span(scores, store.path, target)
    res = {w: [] for w in (0, .25, .5, .75, 1)}
    for fold in range(5):
        with FeatureStore(STORE) as store:
            rows = labelled_splits(store, target, SplitPlan(folds=5, fold=fold))
        val = np.array(rows["val"])
        fit = fit_ridge(pooled, scores, np.ones(len(scores)), rows["train"], [], span)
        ridge = fit.quality(pooled[val])
        found, _, _ = predict_heads(load_checkpoint(Path(f"research/precision/cv-attn/{target}-fold{fold}-fp32")/LAST), None, "val", "cpu", 32)
        for w in res:
            res[w].append(spearmanr((1-w)*found.score + w*ridge, scores[val]).statistic)
    out[target] = {w: (round(float(np.mean(v)),4), round(float(np.std(v, ddof=1)),3)) for w, v in res.items()}
Path("research/precision/blend_weights_cv.json").write_text(json.dumps(out, indent=1) + "\n")
print(json.dumps(out))
