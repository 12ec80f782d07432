"""Precision and the CUDA-only branches, on the CPU: how `auto` resolves, fp32 where scores are formed,
the fp16 scaler, the PyAV-less `aqa score` line, and the GPU device check's smoke run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aqa_cli.models.heads import AQAHead
from aqa_cli.training.loop import optimizer_step
from aqa_cli.util.errors import AqaError
from aqa_cli.util.runtime import (
    FP16_INIT_SCALE,
    autocast,
    grad_scaler,
    inference,
    load_scaler_state,
    resolve_precision,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("capability", "expected"), [((7, 0), "fp32"), ((7, 5), "fp32"), ((8, 0), "bf16")])
def test_auto_picks_bf16_only_on_gpus_that_have_it_natively(monkeypatch, capability, expected) -> None:
    """V100 (7.0) and T4 (7.5) emulate bf16 (torch.cuda.is_bf16_supported() says yes); A100 on do not."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", CUDA) == expected
    assert resolve_precision("bf16", CUDA) == "bf16"  # asked for: emulated bf16 still runs


def test_precision_is_honoured_on_the_cpu_and_auto_is_resolved(monkeypatch) -> None:
    for name in ("fp32", "bf16", "fp16"):
        assert resolve_precision(name, CPU) == name
    assert resolve_precision("auto", CPU) == "fp32"  # training: bf16 does not pay on CPUs
    monkeypatch.setenv("AQA_CPU_BF16", "1")
    assert resolve_precision("auto", CPU) == "fp32"
    assert inference("cpu", "auto") == inference("cpu", "bf16")
    assert inference("cpu", "auto").channels_last
    monkeypatch.setenv("AQA_CPU_BF16", "0")
    run = inference("cpu", "auto")
    assert (run.precision, run.channels_last) == ("fp32", False)


@pytest.mark.parametrize(
    ("name", "device", "message"),
    [
        ("fp64", CPU, "unknown --precision 'fp64'; choose one of auto, fp32, bf16, fp16"),
        ("bf16", torch.device("meta"), "--precision bf16 runs on cpu or cuda only, not on meta; use fp32"),
    ],
)
def test_an_impossible_precision_is_one_clear_line(name, device, message) -> None:
    with pytest.raises(AqaError) as error:
        resolve_precision(name, device)
    assert str(error.value) == message


def test_bf16_without_any_support_on_the_gpu_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla P100")
    with pytest.raises(AqaError, match="Tesla P100 has no bf16; use fp16 or fp32"):
        resolve_precision("bf16", CUDA)


@pytest.mark.parametrize("agg", ["avg", "wd"])
def test_the_regressor_and_the_difficulty_product_stay_fp32_under_bf16_autocast(agg) -> None:
    """bf16 keeps 8 significant bits: the quality 3.3 would come out as 3.296875, and the score of a
    3.4-difficulty dive rounded to steps of 0.25 points."""
    torch.manual_seed(0)
    head = AQAHead(64, agg).eval()
    with torch.no_grad():
        head.regressor.weight.zero_()
        head.regressor.bias.fill_(3.3)
    features, difficulty = torch.randn(3, 4, 64), torch.tensor([3.4, 2.0, float("nan")])
    with torch.no_grad(), autocast(CPU, "bf16"):
        out = head(features, difficulty)
    assert out.quality.dtype == out.score.dtype == torch.float32
    assert torch.equal(out.quality, torch.full((3,), 3.3))
    assert torch.equal(out.score, torch.tensor([3.3 * 3.4, 6.6, 3.3], dtype=torch.float32))
    assert torch.tensor(3.3).bfloat16().item() == 3.296875  # what it would have been


def test_fp16_starts_a_fresh_unscaled_scaler_when_a_checkpoint_has_none() -> None:
    scaler = grad_scaler(CPU, "fp16")
    load_scaler_state(scaler, {})  # what a bf16 or fp32 run saves: torch would raise "state dict is empty"
    assert scaler.is_enabled() and scaler.get_scale() == FP16_INIT_SCALE == 1.0
    saved = grad_scaler(CPU, "fp16")
    saved._lazy_init_scale_growth_tracker(CPU)
    saved.update(256.0)
    load_scaler_state(scaler, saved.state_dict())
    assert scaler.get_scale() == 256.0
    disabled = grad_scaler(CPU, "bf16")
    load_scaler_state(disabled, saved.state_dict())  # an fp16 run resumed in bf16: nothing to scale
    assert not disabled.is_enabled()


def test_a_step_the_fp16_scaler_skips_does_not_advance_the_schedule() -> None:
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    scaler = grad_scaler(CPU, "fp16")
    for gradient, moved in ((float("inf"), False), (1.0, True)):
        scaler.scale((weight * gradient).sum()).backward()
        before = weight.detach().clone()
        steps = scheduler.last_epoch
        optimizer_step(optimizer, scaler, scheduler)
        assert (not torch.equal(before, weight.detach())) is moved
        assert scheduler.last_epoch == steps + moved
    assert scaler.get_scale() == FP16_INIT_SCALE / 2  # the overflow halved it


def test_score_without_pyav_says_so_in_one_line(tmp_path: Path) -> None:
    """A torch-only machine (e.g. a GPU node without PyAV): decoding commands need it, and say so."""
    code = (
        "import sys; sys.modules['av'] = None; sys.argv = ['aqa', *sys.argv[1:]]; "
        "from aqa_cli.cli.main import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "score", str(tmp_path / "dive.mp4"), "--run", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: decoding videos needs PyAV"), result.stderr
    assert "pip install av" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_gpu_device_check_runs_on_the_cpu_without_pyav(tmp_path: Path) -> None:
    """`benchmarks/gpu_check.py --smoke`: every section of the prepared device check, tiny, on the CPU,
    with PyAV hidden (the GPU machine may not have it); its JSON report and the table at the end. This is
    also the CPU test of bf16 training, its resume, the fp16 resume of a bf16 run (a fresh scaler) and of
    an fp16 run (its scaler loaded), `aqa eval --split val` against metrics.csv, channels-last, gradient
    checkpointing with accumulation, and the DDP branches in a one-process gloo group."""
    hidden = tmp_path / "hidden" / "av"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('PyAV hidden by the test')\n")
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden.parent), str(REPO)])},
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    sections = report["sections"]
    assert sections["environment"]["pyav"] is False
    assert all(section["ok"] for section in sections.values()), sections
    names = ("train-fp32", "train-bf16", "resume-bf16", "train-fp16-resume", "resume-fp16")
    assert [sections[name]["precision"] for name in names] == ["fp32", "bf16", "bf16", "fp16", "fp16"]
    fresh, carried = (sections[name]["scaler"] for name in ("train-fp16-resume", "resume-fp16"))
    assert fresh["scale"] == FP16_INIT_SCALE and fresh["_growth_tracker"] >= 1  # fresh: the bf16 run had none
    assert carried["_growth_tracker"] == 2 * fresh["_growth_tracker"]  # loaded: clean steps counted on
    assert sections["eval"]["val_rho_matches_metrics"] and sections["eval"]["precision"] == "fp16"
    assert sections["ddp-1"]["resumed"]["ranks_with_rng"] == 1
    assert (tmp_path / "out" / "gpu_step.json").is_file()
    assert "every section ok" in result.stdout
