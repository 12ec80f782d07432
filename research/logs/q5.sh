while kill -0 13272 2>/dev/null; do sleep 5; done
uptime
bash research/logs/timing.sh > research/timing.jsonl
uptime
set -x
.venv/bin/python research/fisv_cv.py final --heads avg wd --modes val20 --seeds 1 2
P=".venv/bin/python research/fisv_cv.py cv"
$P --name posthoc-attn-full --head attn --set '{"bf16": true, "crop": null}'
$P --name posthoc-attn-3seeds --head attn --set '{"bf16": true}' --seeds 0 1 2
$P --name posthoc-gdlt-small-triplet --head gdlt --set '{"bf16": true, "triplet": 1.0}' --options '{"width": 128, "proj_hidden": null}'
