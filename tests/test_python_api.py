"""The README's "Python API" section, run as a user runs it: every snippet in order, pasted into one plain
script (no `if __name__ == "__main__":` guard) and started with `python api.py` in a fresh folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

CHECKS = """
import json as _json
_json.dump({
    "stored": report.stored, "failed": len(report.failed), "frames": list(frames.shape),
    "best_epoch": result.best_epoch, "clips": len(scored[0]["clips"]),
    "weights": sum(clip["weight"] for clip in scored[0]["clips"]), "rho": evaluation["rho"],
}, open("checks.json", "w"))
"""


def api_snippets() -> list[str]:
    section = README.read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_python_api_runs_as_a_plain_script(tmp_path):
    snippets = api_snippets()
    assert len(snippets) >= 4, "the README's Python API section lost its snippets"
    (tmp_path / "api.py").write_text("\n".join(snippets) + CHECKS)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    run = subprocess.run(
        [sys.executable, "api.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    # the decode workers did not run the script again (each would have printed its own report line)
    assert run.stdout.count("stored,") == 1 and "Traceback" not in run.stderr, run.stdout + run.stderr
    checks = json.loads((tmp_path / "checks.json").read_text())
    # what the snippets promise: a store of every video, a trained run, a score, evaluated heads
    assert checks["stored"] == 16 and checks["failed"] == 0
    assert checks["frames"] == [24, 128, 171, 3]
    assert (tmp_path / "demo" / "run" / "last.pt").is_file() and checks["best_epoch"] in (1, 2)
    assert checks["clips"] == 2 and abs(checks["weights"] - 1) < 1e-6
    assert -1 <= checks["rho"] <= 1
    assert "test rho" in run.stdout
