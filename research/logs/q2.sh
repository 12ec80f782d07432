while pgrep -f "bash research/logs/q1.sh" > /dev/null; do sleep 5; done
set -x
P=".venv/bin/python research/fisv_cv.py cv"
$P --name attn-full --head attn --set '{"bf16": true, "crop": null}'
$P --name attn-crop96 --head attn --set '{"bf16": true, "crop": 96}'
