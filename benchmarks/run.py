"""`make bench`: run every benchmark, print a table, write benchmarks/results.json.

Each benchmark measures the toolkit and a reference in the same run, alternating the two, so the ratio
holds on a noisy machine. Benchmarks are not tests: `make test` never runs them.

    python benchmarks/run.py                    # all of them
    python benchmarks/run.py --only loader      # some (preprocess, loader, model, heads, stream, inference, gpu)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from common import log, machine  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

BENCHMARKS = ("preprocess", "loader", "model", "heads", "stream", "inference", "gpu")
RESULTS = Path(__file__).parent / "results.json"
COLUMNS = ("name", "measure", "aqa", "reference", "ratio", "target", "met")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args()

    results = {
        "command": "make bench",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "benchmarks": {},
        "seconds": {},
    }
    table = Table(title="aqa benchmarks (aqa = this toolkit; reference measured in the same run)")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for name in args.only:
        module = __import__(f"bench_{name}" if name != "gpu" else "gpu_step")
        log(f"{name}: start")
        started = time.perf_counter()
        rows = module.run()
        results["seconds"][name] = round(time.perf_counter() - started, 1)
        results["benchmarks"][name] = rows
        log(f"{name}: done in {results['seconds'][name]:.0f} s")
        for item in rows:
            table.add_row(*(str(item.get(key, "")) for key in COLUMNS))
        # Written after every benchmark: a run stopped half way keeps what it measured.
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    Console(width=200).print(table)
    print(f"wrote {args.out} (load average now {results_load()})")


def results_load() -> str:
    import os

    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
