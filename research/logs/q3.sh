set -x
P=".venv/bin/python research/fisv_cv.py cv"
$P --name gdlt-small --head gdlt --set '{"bf16": true}' --options '{"width": 128, "proj_hidden": null}'
$P --name attn-full --head attn --set '{"bf16": true, "crop": null}'
