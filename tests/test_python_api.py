"""The README's "Python API" section, run as written: every snippet in order, in a fresh folder."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def api_snippets() -> list[str]:
    section = README.read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_python_api_runs_as_written(tmp_path, monkeypatch):
    snippets = api_snippets()
    assert len(snippets) >= 4, "the README's Python API section lost its snippets"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for snippet in snippets:
            exec(compile(snippet, str(README), "exec"), namespace)  # noqa: S102 - our own README
    # what the snippets promise: a store of every video, a trained run, a score, evaluated heads
    assert namespace["report"].stored == 16 and not namespace["report"].failed
    assert namespace["frames"].shape == (24, 128, 171, 3)
    assert (tmp_path / "demo" / "run" / "last.pt").is_file() and namespace["result"].best_epoch in (1, 2)
    assert len(namespace["scored"][0]["clips"]) == 2
    assert abs(sum(clip["weight"] for clip in namespace["scored"][0]["clips"]) - 1) < 1e-6
    assert -1 <= namespace["evaluation"]["rho"] <= 1
    assert "test rho" in printed.getvalue()
