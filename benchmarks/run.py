"""`make bench`: run every benchmark, print a table, write benchmarks/results.json.

Each benchmark measures the toolkit and a reference in the same run, so the ratio holds on a noisy
machine. Benchmarks are not tests: they are never run by `make test`.
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))

import bench_preprocess  # noqa: E402

BENCHMARKS = [bench_preprocess]
RESULTS = Path(__file__).parent / "results.json"


def main() -> None:
    results = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": _cpus()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "benchmarks": {},
    }
    table = Table(title="aqa benchmarks")
    for column in ("benchmark", "measure", "aqa", "reference", "ratio", "target"):
        table.add_column(column)
    for module in BENCHMARKS:
        rows = module.run()
        results["benchmarks"][module.__name__] = rows
        for row in rows:
            table.add_row(
                *(str(row.get(k, "")) for k in ("name", "measure", "aqa", "reference", "ratio", "target"))
            )
    Console().print(table)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
