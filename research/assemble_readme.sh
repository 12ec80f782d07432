# research/README.md = the procedure text + the generated tables + findings (run from the repo root)
PYTHONPATH=. ${PYTHON:-python} research/make_tables.py > research/fisv_tables.md
cat research/README_head.md research/fisv_tables.md research/README_tail.md > research/README.md
