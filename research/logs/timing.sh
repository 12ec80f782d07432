R=".venv/bin/python benchmarks/heads_reference.py --epochs 3"
for b in "" --bf16; do
$R --head avg --crop 0 --batch 2 $b
$R --head wd --crop 0 --batch 2 $b
$R --head attn --crop 64 $b
$R --head gdlt --crop 64 --options '{"width": 128, "proj_hidden": null}' $b
done
