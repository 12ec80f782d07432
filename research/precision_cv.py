"""Does bf16 autocast cost the gdlt-fisv preset rho? One fold of the 5-fold split inside the 400 official
training videos of Fis-V (the folds `aqa experiment --folds 5` draws), trained once in fp32 and once in bf16
with the same seed; only the held-out fold's rho and the training loss are read, the test split is not used.
Usage: python research/precision_cv.py TARGET FOLD fp32|bf16 (results: research/precision/)."""
import sys
from aqa_cli.training.config import TrainConfig, resolve_head_defaults
from aqa_cli.training.dispatch import train
from aqa_cli.training.heads import with_target
from pathlib import Path

target, fold, precision = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = Path("research/precision") / f"{target}-fold{fold}-{precision}"
config = with_target(TrainConfig(features="data/fis-v.features.h5", target=target, agg="gdlt", preset="gdlt-fisv",
                                 folds=5, fold=fold, precision=precision, test_curve=False, seed=0, device="cpu",
                                 out=str(out)))
train(resolve_head_defaults(config), resume=(out / "last.pt").is_file())
