"""--aux-target by the same 5-fold CV inside train as research/blend_cv.py (run that first: this reads its fp32
attn runs of both targets): each target's attn run averaged with its mean-max ridge (the attn-ridge-ensemble
preset's blend, one head per fold), then the other target's blend, mapped onto this target by the line
through the fold's training labels, averaged in with weights 0 / 0.25 / 0.4 / 0.5 / 0.6. The test split is
not used. Usage: python research/aux_target_cv.py (results: research/precision/aux_target_cv.json)"""
import json
import numpy as np
from pathlib import Path
from scipy.stats import spearmanr
from aqa_cli.checkpoints.io import LAST, load_checkpoint
from aqa_cli.data.splits import SplitPlan, labelled_splits
from aqa_cli.evaluation.evaluate import predict_heads
from aqa_cli.evaluation.ridge import fit_ridge, pooled_features
from aqa_cli.evaluation.metrics import score_span
from aqa_cli.stores.feature_store import FeatureStore
STORE="data/fis-v.features.h5"
with FeatureStore(STORE) as store:
    X = pooled_features(store, "mean-max"); sc = {t: store.scores(t) for t in ("TES","PCS")}
    span = {t: score_span(sc[t], store.path, t) for t in sc}
    folds = {t: [labelled_splits(store, t, SplitPlan(folds=5, fold=f)) for f in range(5)] for t in sc}
res = {}
for target, other in (("TES","PCS"),("PCS","TES")):
  for f in range(5):
    rows = folds[target][f]; val = np.array(rows["val"]); tr = np.array(rows["train"])
    pred = {}
    for t in (target, other):
        found, _, _ = predict_heads(load_checkpoint(Path(f"research/precision/cv-attn/{t}-fold{f}-fp32")/LAST), None, "val", "cpu", 32)
        r = fit_ridge(X, sc[t], np.ones(len(X)), rows["train"], [], span[t]).quality(X[val])
        pred[t] = (found.score + r) / 2
    b, a = np.polyfit(sc[other][tr], sc[target][tr], 1)
    for w in (0, 0.25, 0.4, 0.5, 0.6):
        res.setdefault((target, w), []).append(spearmanr((1-w)*pred[target] + w*(a + b*pred[other]), sc[target][val]).statistic)
out = {f"{target} w={w}": [round(float(np.mean(v)), 4)] + [round(float(x), 3) for x in v] for (target, w), v in res.items()}
Path("research/precision/aux_target_cv.json").write_text(json.dumps(out, indent=1) + "\n")
print(json.dumps(out, indent=1))
