set -x
P=".venv/bin/python research/fisv_cv.py cv"
$P --name attn-base-fp32 --head attn --targets TES
$P --name attn-mean --head attn --set '{"bf16": true}' --options '{"mean_path": true}'
$P --name attn-drop0.3-wd0.05 --head attn --set '{"bf16": true, "weight_decay": 0.05}' --options '{"dropout": 0.3}'
$P --name gdlt-small --head gdlt --set '{"bf16": true}' --options '{"width": 128, "proj_hidden": null}'
$P --name attn-crop32 --head attn --set '{"bf16": true, "crop": 32}'
$P --name gdlt-small-triplet --head gdlt --set '{"bf16": true, "triplet": 1.0}' --options '{"width": 128, "proj_hidden": null}'
