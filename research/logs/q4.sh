while kill -0 30764 2>/dev/null; do sleep 5; done
set -x
P=".venv/bin/python research/fisv_cv.py final"
$P --heads ridge attn --modes fixed val20
$P --heads gdlt --modes fixed val20
$P --heads avg wd --modes fixed --seeds 0
$P --heads avg wd --modes val20 --seeds 0
$P --heads avg wd --modes fixed --seeds 1 2
