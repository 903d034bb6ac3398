"""Helpers shared by the algorithm tests (imported as ``from helpers import ...``; pytest puts
tests/ on the path): composing a config, reading a CSV, killing a run at its N-th call of a
function (the kill-and-resume tests)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from fastmbrl.train import run


def compose_main(*overrides: str):
    """``fastmbrl train``'s config with ``overrides`` (as Hydra composes it)."""
    with initialize_config_module("fastmbrl.conf", version_base="1.3"):
        return compose("main", overrides=list(overrides))


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def run_killed_at(cfg, run_dir, monkeypatch, module, name: str, call: int = 3) -> None:
    """Run ``cfg`` in ``run_dir`` and kill it (KeyboardInterrupt) at the ``call``-th call of
    ``module.name`` (e.g. the algorithm's evaluate), then restore the function."""
    real = getattr(module, name)
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, dying)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, run_dir)
    monkeypatch.setattr(module, name, real)
