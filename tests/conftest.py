import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_aqa(*args, cwd=None, check=None, timeout=300) -> subprocess.CompletedProcess:
    """Run the real `aqa` command line in a subprocess, as a user would."""
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "aqa_cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check is not None and result.returncode != check:
        raise AssertionError(
            f"exit {result.returncode} != {check}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


@pytest.fixture
def aqa():
    return run_aqa


from mtl_aqa_trees import small_annotations  # noqa: E402, F401 - a fixture shared by the MTL-AQA tests
