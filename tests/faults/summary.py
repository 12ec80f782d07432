"""Tabulate a fault log (`AQA_FAULT_LOG`, JSON lines) as the Markdown table docs/RELIABILITY.md quotes.

python -m tests.faults.summary faults-log.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import Counter


def summarize(lines: list[str]) -> str:
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in lines:
        entry = json.loads(line)
        counts[entry["stage"], entry["fault"], entry["outcome"]] += entry["count"]
    rows = ["| stage | fault | injected | outcome |", "|---|---|---:|---|"]
    for (stage, fault, outcome), count in sorted(counts.items()):
        rows.append(f"| {stage} | {fault} | {count} | {outcome} |")
    per_stage = Counter()
    for (stage, _, _), count in counts.items():
        per_stage[stage] += count
    totals = ", ".join(f"{stage} {count}" for stage, count in sorted(per_stage.items()))
    return "\n".join(rows) + f"\n\nFaults injected per stage: {totals}; {sum(per_stage.values())} in all.\n"


if __name__ == "__main__":
    with open(sys.argv[1]) as log:
        print(summarize(log.read().splitlines()))
