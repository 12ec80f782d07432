"""Markdown tables from research/fisv_cv_results.jsonl (every setting tried) and fisv_final_results.jsonl.

python research/make_tables.py > research/fisv_tables.md
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

FISV = Path(__file__).resolve().parents[2] / "shared" / "data" / "features" / "fis-v"


def _test_truths() -> dict[str, np.ndarray]:
    rows = [line.split() for line in (FISV / "test.txt").read_text().splitlines() if line.strip()]
    return {t: np.array([float(r[c]) for r in rows]) for t, c in (("TES", 1), ("PCS", 2))}


HERE = Path(__file__).parent
DEFAULTS = {
    "optimizer": "adamw",
    "lr": 3e-4,
    "weight_decay": 1e-2,
    "epochs": 60,
    "batch": 16,
    "warmup": 0,
    "schedule": "cosine",
    "crop": 64,
    "loss": "mse",
    "triplet": 0.0,
    "margin": 1.0,
    "standardize": True,
    "bf16": False,
}


def _describe(config: dict) -> str:
    if config.get("head") == "ridge":
        return f"lambda={config['lambda']:g}"
    changed = [f"{k}={v}" for k, v in config.items() if k in DEFAULTS and DEFAULTS[k] != v]
    options = config.get("head_options") or {}
    changed += [f"{k}={v}" for k, v in options.items()]
    return ", ".join(changed) or "(base)"


def cv_table() -> str:
    rows: dict[tuple, dict] = {}
    order = []
    for line in (HERE / "fisv_cv_results.jsonl").read_text().splitlines():
        r = json.loads(line)
        key = (r["name"], r["config"].get("head"))
        if key not in rows:
            rows[key] = {"config": r["config"], "seeds": r.get("seeds", [0])}
            order.append(key)
        rows[key][r["target"]] = r
    out = [
        "| # | name | head | settings (vs. the loop's defaults) | seeds | TES CV rho | PCS CV rho | TES ens. | PCS ens. | s/epoch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, key in enumerate(order, 1):
        row = rows[key]
        cells = []
        for t in ("TES", "PCS"):
            r = row.get(t)
            cells.append(f"{r['cv_mean']:.3f} ± {r['cv_std_over_folds']:.3f}" if r else "")
        for t in ("TES", "PCS"):
            r = row.get(t)
            cells.append(
                f"{r['ensemble_cv_mean']:.3f} ± {r['ensemble_cv_std']:.3f}"
                if r and "ensemble_cv_mean" in r
                else ""
            )
        any_r = row.get("TES") or row.get("PCS")
        epoch_s = any_r.get("epoch_s", "")
        seeds = ",".join(map(str, row["seeds"])) if row["config"].get("head") != "ridge" else "-"
        out.append(
            f"| {i} | {key[0]} | {key[1]} | {_describe(row['config'])} | {seeds} | {' | '.join(cells)} | {epoch_s} |"
        )
    return "\n".join(out)


def final_table() -> str:
    path = HERE / "fisv_final_results.jsonl"
    if not path.exists():
        return "(no final results yet)"
    truths = _test_truths()
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for line in path.read_text().splitlines():
        r = json.loads(line)
        groups[(r["head"], r["mode"], r["target"])].append(r)
    out = [
        "| head | epoch choice | TES test rho (mean ± std over seeds, ddof 0) | PCS test rho | TES seed-ensemble | PCS seed-ensemble | s/run (TES, PCS) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for head, mode in sorted({(h, m) for h, m, _ in groups}, key=lambda k: (k[1], k[0])):
        cells, secs, ens = [], [], []
        for t in ("TES", "PCS"):
            rs = groups.get((head, mode, t), [])
            if len(rs) > 1 and all("test_pred" in r for r in rs):
                truth = truths[t]
                ens.append(f"{spearmanr(np.mean([r['test_pred'] for r in rs], axis=0), truth)[0]:.3f}")
            else:
                ens.append("")
        for t in ("TES", "PCS"):
            rs = groups.get((head, mode, t), [])
            if rs:
                v = np.array([r["test_rho"] for r in rs])
                cells.append(
                    f"{v.mean():.3f} ± {v.std():.3f} (n={len(v)}: {', '.join(f'{x:.3f}' for x in v)})"
                )
                secs.append(f"{np.mean([r['seconds'] for r in rs]):.0f}")
            else:
                cells.append("")
                secs.append("")
        label = {"fixed": "fixed 60 epochs (CV curve flat 20-60), all 400", "val20": "best epoch on 20% val"}[
            mode
        ]
        if head == "ridge":
            label = "closed form, lambda by 5-fold CV"
        elif head in ("avg", "wd") and mode == "fixed":
            label = "fixed 50 epochs (project default), all 400"
        out.append(
            f"| {head} | {label} | {cells[0]} | {cells[1]} | {ens[0]} | {ens[1]} | {', '.join(secs)} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    print("\n## Every setting tried: 5-fold CV inside the 400 training videos\n")
    print(cv_table())
    print("\n## Official test split, frozen settings\n")
    print(final_table())
