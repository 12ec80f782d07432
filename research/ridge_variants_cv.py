"""Looked at after the preset's mean-max ridge was chosen and tested: other ridge inputs (the mean beside the
mean of the 3 or 8 largest values per channel, or beside the maximum and the minimum), the mean-max ridge fitted
to training ranks (mapped back through the training scores' quantiles), and an RBF kernel ridge on the mean-max
input (penalty and width by 5-fold CV inside each fold's training videos); alone and averaged with the fold's
fp32 attn run, on research/blend_cv.py's 5 folds inside train (run that first). The test split is not used.
Usage: python research/ridge_variants_cv.py TES|PCS (results: research/precision/ridge_variants_cv.json)"""
import json, sys, numpy as np
from scipy.stats import spearmanr, rankdata
from pathlib import Path
from aqa_cli.checkpoints.io import LAST, load_checkpoint
from aqa_cli.data.splits import SplitPlan, labelled_splits
from aqa_cli.evaluation.evaluate import predict_heads
from aqa_cli.evaluation.ridge import fit_ridge, _train_folds
from aqa_cli.evaluation.metrics import score_span
from aqa_cli.stores.feature_store import FeatureStore
STORE="data/fis-v.features.h5"
with FeatureStore(STORE) as store:
    feats = [store.features(r) for r in range(len(store))]
def topk(f,k): return np.sort(f,0)[-k:].mean(0)
pools = {
 "mean+max": np.stack([np.concatenate([f.mean(0), f.max(0)]) for f in feats]),
 "mean+top3": np.stack([np.concatenate([f.mean(0), topk(f,3)]) for f in feats]),
 "mean+top8": np.stack([np.concatenate([f.mean(0), topk(f,8)]) for f in feats]),
 "mean+max+min": np.stack([np.concatenate([f.mean(0), f.max(0), f.min(0)]) for f in feats]),
}
def krr(X, y, tr, lam, gamma):
    m, s = X[tr].mean(0), X[tr].std(0)+1e-8
    Z = (X-m)/s
    d = Z.shape[1]
    sq = (Z**2).sum(1)
    K = np.exp(-gamma/d*(sq[:,None]+sq[None,:]-2*Z@Z.T))
    yt = y[tr]; mu = yt.mean()
    a = np.linalg.solve(K[np.ix_(tr,tr)] + lam*np.eye(len(tr)), yt-mu)
    return K[:, tr]@a + mu
out = {}
for target in (sys.argv[1],):
    with FeatureStore(STORE) as store:
        scores = store.scores(target); span = score_span(scores, store.path, target)
    res = {}
    for fold in range(5):
        with FeatureStore(STORE) as store:
            rows = labelled_splits(store, target, SplitPlan(folds=5, fold=fold))
        val = np.array(rows["val"]); tr = np.array(rows["train"])
        found, _, _ = predict_heads(load_checkpoint(Path(f"research/precision/cv-attn/{target}-fold{fold}-fp32")/LAST), None, "val", "cpu", 32)
        def rec(name, r):
            res.setdefault(name, []).append(spearmanr(r, scores[val]).statistic)
            res.setdefault(name + " blend", []).append(spearmanr((found.score + r)/2, scores[val]).statistic)
        for name, pooled in pools.items():
            fit = fit_ridge(pooled, scores, np.ones(len(scores)), rows["train"], [], span)
            rec(name, fit.quality(pooled[val]))
        # rank targets, linear mean+max: mapped back through train's score quantiles
        X = pools["mean+max"]
        q = rankdata(scores[tr])/len(tr)
        fake = scores.copy(); fake[tr] = q
        fit = fit_ridge(X, fake, np.ones(len(scores)), rows["train"], [], span)
        rec("mean+max rank-target", np.interp(fit.quality(X[val]), np.sort(q), np.sort(scores[tr])))
        # kernel ridge: lambda and gamma by inner 5-fold inside train
        best=None
        for gamma in (0.25, 0.5, 1.0, 2.0):
            for lam in (0.01, 0.1, 1.0, 10.0):
                inner=[]
                for held in _train_folds(tr):
                    fit_rows = np.setdiff1d(tr, held)
                    inner.append(spearmanr(krr(X, scores, fit_rows, lam, gamma)[held], scores[held]).statistic)
                m=np.mean(inner)
                if best is None or m>best[0]: best=(m,gamma,lam)
        rec(f"mean+max rbf", krr(X, scores, tr, best[2], best[1])[val])
        print(target, fold, best, flush=True)
    out[target] = {k: [round(float(np.mean(v)), 4)] + [round(float(x), 3) for x in v] for k, v in res.items()}
path = Path("research/precision/ridge_variants_cv.json")
saved = json.loads(path.read_text()) if path.exists() else {}
saved.update(out)
path.write_text(json.dumps(saved, indent=1) + "\n")
print(json.dumps(out))
