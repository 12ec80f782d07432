"""`--json` output is strict JSON: numbers that are NaN or infinite (a rho of constant predictions, the
difficulty baseline of a store without difficulties) become null, which jq and JavaScript accept."""

from __future__ import annotations

import json

import pytest

from aqa_cli.cli.output import print_json


def refuse(constant: str) -> None:
    raise ValueError(f"not JSON: {constant}")


def test_non_finite_numbers_are_written_as_null(capsys: pytest.CaptureFixture) -> None:
    print_json({"rho": float("nan"), "spread": {"max": float("inf")}, "curve": [1.5, float("-inf")], "n": 3})
    found = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert found == {"rho": None, "spread": {"max": None}, "curve": [1.5, None], "n": 3}
