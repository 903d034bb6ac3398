"""`fastmbrl info` and `python -m fastmbrl info` run anywhere and explain missing devices."""

from __future__ import annotations

import subprocess
import sys

import torch

from fastmbrl import _native
from fastmbrl.info import collect, format_report


def test_python_m_fastmbrl_info_runs():
    res = subprocess.run([sys.executable, "-m", "fastmbrl", "info"], capture_output=True,
                         text=True, check=True)
    assert res.stdout.startswith("fastmbrl ")
    assert f"torch {torch.__version__}" in res.stdout
    if _native.HAS_NATIVE:
        assert "CPU kernels: compiled" in res.stdout
    if not torch.cuda.is_available():
        # a GPU-less machine says why no device is used
        assert "CUDA devices seen by fastmbrl: none" in res.stdout
        assert ("no NVIDIA driver" in res.stdout or "built without CUDA" in res.stdout
                or "no usable device" in res.stdout or "device nodes" in res.stdout)


def test_info_report_reflects_build():
    info = collect()
    text = format_report(info)
    if _native.HAS_CUDA_KERNELS:
        archs = info["build"]["cuda_architectures"].split(",")
        assert all(f"sm_{a}" in text for a in archs)
    else:
        assert "CUDA kernels: not compiled" in text or "NOT available" in text


def test_cli_without_command_prints_help(capsys):
    from fastmbrl.cli import main

    assert main([]) == 2
    assert "info" in capsys.readouterr().out


def test_demo_loss_falls(capsys):
    from fastmbrl.demo import run_demo

    final = run_demo(steps=150, log_every=150, hidden=32)
    out = capsys.readouterr().out
    first = float(out.split("step     1   NLL (sum over members)")[1].split()[0])
    assert final < first - 3.0, (first, final)


def test_train_help_lists_the_config_groups():
    res = subprocess.run([sys.executable, "-m", "fastmbrl", "train", "--help"],
                         capture_output=True, text=True, check=True)
    assert "overrides: mbpo_ant, mbpo_halfcheetah, mbpo_hopper" in res.stdout
    assert "mbpo_inv_pendulum" in res.stdout  # mbrl-lib's names port unchanged
