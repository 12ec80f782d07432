"""The blended ridge's input by the same 5-fold CV inside train as research/blend_cv.py (run that first: this
reads its fp32 attn runs): ridge alone and averaged with attn, on the clips' mean, mean and std, mean and
maximum, maximum, mean and the two halves' means, mean and clip count; the mean over folds, then each fold. Looked at after the mean-pooled blend's test evaluation; the test
split is not used. Usage: python research/ridge_pooling_cv.py (results: research/precision/ridge_pooling_cv.json)"""
import json, numpy as np
from scipy.stats import spearmanr
from pathlib import Path
from aqa_cli.checkpoints.io import LAST, load_checkpoint
from aqa_cli.data.splits import SplitPlan, labelled_splits
from aqa_cli.evaluation.evaluate import predict_heads
from aqa_cli.evaluation.ridge import fit_ridge
from aqa_cli.evaluation.metrics import score_span
from aqa_cli.stores.feature_store import FeatureStore
STORE="data/fis-v.features.h5"
with FeatureStore(STORE) as store:
    feats = [store.features(r) for r in range(len(store))]
pools = {
 "mean": np.stack([f.mean(0) for f in feats]),
 "mean+std": np.stack([np.concatenate([f.mean(0), f.std(0)]) for f in feats]),
 "mean+max": np.stack([np.concatenate([f.mean(0), f.max(0)]) for f in feats]),
 "max": np.stack([f.max(0) for f in feats]),
 "mean+halves": np.stack([np.concatenate([f.mean(0), f[: len(f)//2].mean(0), f[len(f)//2:].mean(0)]) for f in feats]),
 "mean+len": np.stack([np.concatenate([f.mean(0), [len(f)/100.0]]) for f in feats]),

}
out = {}
for target in ("TES","PCS"):
    with FeatureStore(STORE) as store:
        scores = store.scores(target); span = score_span(scores, store.path, target)
    res = {}
    for fold in range(5):
        with FeatureStore(STORE) as store:
            rows = labelled_splits(store, target, SplitPlan(folds=5, fold=fold))
        val = np.array(rows["val"])
        found, _, _ = predict_heads(load_checkpoint(Path(f"research/precision/cv-attn/{target}-fold{fold}-fp32")/LAST), None, "val", "cpu", 32)
        for name, pooled in pools.items():
            fit = fit_ridge(pooled, scores, np.ones(len(scores)), rows["train"], [], span)
            r = fit.quality(pooled[val])
            res.setdefault(name, []).append(spearmanr(r, scores[val]).statistic)
            res.setdefault(name + " blend", []).append(spearmanr((found.score + r)/2, scores[val]).statistic)
    out[target] = {k: [round(float(np.mean(v)), 4)] + [round(float(x), 3) for x in v] for k, v in res.items()}
Path("research/precision/ridge_pooling_cv.json").write_text(json.dumps(out, indent=1) + "\n")
print(json.dumps(out))
