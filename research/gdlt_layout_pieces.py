"""Which piece of the faithful code layout keeps the gdlt-fisv preset on its loss plateau: the preset through
`aqa train` itself with its 320-epoch schedule, run in full (TES, official train split; only the training loss is read), with one piece switched back.
Usage: python research/gdlt_layout_pieces.py standardized|no-weight-dropout OUT (results: research/preset/gdlt-layout-pieces)."""
import sys
from aqa_cli.training.config import GDLT_LAYOUTS
variant, out = sys.argv[1], sys.argv[2]
if variant == "standardized":        # attention-weight dropout on, features standardized
    GDLT_LAYOUTS["code"]["standardize"] = True
elif variant == "no-weight-dropout":  # raw features, no dropout on the attention weights
    GDLT_LAYOUTS["code"]["attention_dropout"] = False
import aqa_cli.cli.commands  # noqa: F401
from aqa_cli.cli.app import app
app(["train", "--features", "data/fis-v.features.h5", "--target", "TES", "--preset", "gdlt-fisv",
     "--epochs", "320", "--no-test-curve", "--out", out, "--device", "cpu"], standalone_mode=False)
