"""Run directory: CSV/TensorBoard/wandb logging, checkpoints and resume, RNG states, plots."""

from __future__ import annotations

import csv
import io
import random
import sys
import types

import numpy as np
import pytest
import torch

from fastmbrl.cli import main as cli_main
from fastmbrl.runs import (
    CheckpointError,
    RunLogger,
    StepProgress,
    checkpoint_info,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    save_run_checkpoint,
    set_rng_state,
    write_config,
)
from fastmbrl.runs.plot import PlotError, aggregate, group_runs, plot_runs


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


# --------------------------------------------------------------------------- logger
def test_csv_schema_grows_and_groups_are_separate(tmp_path):
    with RunLogger(tmp_path, use_tensorboard=False) as log:
        log.log(0, episode_return=1.5)
        log.log(1000, episode_return=torch.tensor(2.25), episode_length=np.int64(7))
        log.log(1000, group="train", model_loss=torch.tensor([0.1], dtype=torch.float64))
        log.log(2000, episode_return=3.0)
    assert _rows(tmp_path / "results.csv") == [
        ["env_step", "episode_return", "episode_length"],
        ["0", "1.5", ""],
        ["1000", "2.25", "7"],
        ["2000", "3.0", ""],
    ]
    assert _rows(tmp_path / "train.csv") == [["env_step", "model_loss"], ["1000", "0.1"]]
    # reopening appends under the existing header, new keys still widen it
    with RunLogger(tmp_path, use_tensorboard=False) as log:
        log.log(3000, episode_return=4.0, q=1)
    assert _rows(tmp_path / "results.csv")[0] == ["env_step", "episode_return",
                                                  "episode_length", "q"]
    assert _rows(tmp_path / "results.csv")[-1] == ["3000", "4.0", "", "1"]


def test_log_rejects_non_scalars(tmp_path):
    with RunLogger(tmp_path, use_tensorboard=False) as log:
        with pytest.raises(ValueError, match="loss is a tensor of shape"):
            log.log(0, loss=torch.zeros(3))
        with pytest.raises(TypeError, match="name='x' is not a number"):
            log.log(0, name="x")
        with pytest.raises(ValueError, match="step column"):
            log.log(0, env_step=3)


def test_partial_last_line_is_dropped(tmp_path):
    (tmp_path / "results.csv").write_text("env_step,episode_return\n0,1.0\n1000,2.")
    with RunLogger(tmp_path, use_tensorboard=False) as log:
        log.log(1000, episode_return=2.0)
    assert _rows(tmp_path / "results.csv")[1:] == [["0", "1.0"], ["1000", "2.0"]]


def _train(run_dir, steps, resume_step=None, kill_at=None):
    """A fake run logging eval every 2 steps and train every step."""
    with RunLogger(run_dir, use_tensorboard=False, resume_step=resume_step) as log:
        start = 0 if resume_step is None else resume_step + 1
        for s in range(start, steps):
            log.log(s, group="train", loss=1.0 / (s + 1))
            if s % 2 == 0:
                extra = {"extra": s} if s > 4 else {}  # the header widens mid-run
                log.log(s, episode_return=float(s) ** 0.5, **extra)
            if kill_at is not None and s == kill_at:
                return


def test_truncate_after_makes_resumed_csv_identical(tmp_path):
    _train(tmp_path / "full", 12)
    # killed at step 9; its last checkpoint was at step 5: rows 6..9 are logged again
    _train(tmp_path / "resumed", 12, kill_at=9)
    _train(tmp_path / "resumed", 12, resume_step=5)
    for name in ("results.csv", "train.csv"):
        assert (tmp_path / "full" / name).read_text() == (tmp_path / "resumed" / name).read_text()
    with RunLogger(tmp_path / "resumed", use_tensorboard=False) as log:
        assert log.truncate_after(3) == {"results": 4, "train": 8}
    assert [r[0] for r in _rows(tmp_path / "resumed" / "results.csv")[1:]] == ["0", "2"]


def _sgd_run(run_dir, total, kill_at=None, ckpt_every=4):
    """A tiny training loop following docs/runs.md's resume recipe; returns final weights."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    gen = torch.Generator().manual_seed(1)
    env_rng = np.random.default_rng(2)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        start, log = 0, RunLogger(run_dir, use_tensorboard=False)
    else:
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        set_rng_state(state["rng"], [gen], [env_rng])
        start, log = state["step"] + 1, RunLogger(run_dir, use_tensorboard=False,
                                                  resume_step=state["step"])
    for step in range(start, total):
        x = torch.randn(16, 3, generator=gen) + torch.rand(1) + random.random()
        y = x.sum(-1, keepdim=True) + float(np.random.randn()) + env_rng.normal()
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        log.log(step, group="train", loss=loss.detach())
        if step % 3 == 0:
            log.log(step, episode_return=-loss.detach())
        if step % ckpt_every == 0:
            log.flush()
            save_run_checkpoint(run_dir, step, {
                "step": step, "model": model.state_dict(), "opt": opt.state_dict(),
                "rng": rng_state([gen], [env_rng])}, keep_last=2)
        if step == kill_at:
            break  # killed: rows after the last checkpoint (step 8) are already in the CSVs
    log.close()
    return model.weight.detach().clone()


def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    full = _sgd_run(tmp_path / "full", 20)
    _sgd_run(tmp_path / "resumed", 20, kill_at=10)
    assert latest_checkpoint(tmp_path / "resumed") == checkpoint_path(tmp_path / "resumed", 8)
    resumed = _sgd_run(tmp_path / "resumed", 20)
    assert torch.equal(full, resumed)
    for name in ("results.csv", "train.csv"):
        assert (tmp_path / "full" / name).read_text() == (tmp_path / "resumed" / name).read_text()


def test_tensorboard_event_file_written(tmp_path):
    pytest.importorskip("tensorboard")
    with RunLogger(tmp_path) as log:
        log.log(10, episode_return=1.0)
        log.log(10, group="train", loss=0.5)
        log.flush()
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"results/episode_return", "train/loss"}
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(10, 0.5)]


def test_resume_purges_later_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboard")
    with RunLogger(tmp_path) as log:
        for s in range(6):
            log.log(s, episode_return=float(s))
    with RunLogger(tmp_path, resume_step=2) as log:
        log.log(3, episode_return=30.0)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    got = [(e.step, e.value) for e in acc.Scalars("results/episode_return")]
    assert got == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0)]
    assert _rows(tmp_path / "results.csv")[1:] == [["0", "0.0"], ["1", "1.0"], ["2", "2.0"],
                                                  ["3", "30.0"]]


def test_wandb_missing_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(ImportError, match="pip install wandb"):
        RunLogger(tmp_path, use_tensorboard=False, use_wandb=True)


def test_wandb_gets_group_metrics(tmp_path, monkeypatch):
    calls = []

    class FakeRun:
        def define_metric(self, name, **kw):
            calls.append(("define", name, kw))

        def log(self, data):
            calls.append(("log", data))

        def finish(self):
            calls.append(("finish",))

    fake = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw)) or FakeRun())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    with RunLogger(tmp_path, use_tensorboard=False, use_wandb=True,
                   wandb_kwargs={"project": "p"}) as log:
        log.log(5, group="train", loss=torch.tensor(0.25))
    assert calls[0] == ("init", {"project": "p", "dir": str(tmp_path)})
    assert ("define", "train/*", {"step_metric": "env_step"}) in calls
    assert ("log", {"train/loss": 0.25, "env_step": 5}) in calls
    assert calls[-1] == ("finish",)


def test_write_config(tmp_path):
    path = write_config(tmp_path, {"seed": 1, "algo": {"lr": "${oc.env:NOPE,3}"}})
    assert "lr: '3'" in path.read_text() or "lr: 3" in path.read_text()


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path):
    state = {"w": torch.randn(3, 4), "step": 7, "opt": {"lr": 1e-3}, "rng": rng_state()}
    path = save_checkpoint(tmp_path / "a" / "c.pt", state, meta={"step": 7})
    assert checkpoint_info(path)["meta"] == {"step": 7}
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["w"], state["w"]) and loaded["opt"] == {"lr": 1e-3}
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temporary file left


@pytest.mark.parametrize("damage", ["truncate", "truncate_header", "bitflip", "garbage",
                                    "empty", "missing"])
def test_corrupt_checkpoint_raises_naming_file(tmp_path, damage):
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.arange(1000.0)})
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) - 100])
    elif damage == "truncate_header":
        path.write_bytes(data[:20])
    elif damage == "bitflip":
        i = len(data) - 500
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:])
    elif damage == "garbage":
        path.write_bytes(b"PK\x03\x04 not a checkpoint")
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_newer_format_version_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"v": 1})
    path.write_bytes(path.read_bytes().replace(b'"version": 1', b'"version": 9', 1))
    with pytest.raises(CheckpointError, match="format version 9"):
        load_checkpoint(path)


def test_save_failure_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", {"v": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("fastmbrl.runs.checkpoint.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"v": 2})
    monkeypatch.undo()
    assert load_checkpoint(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_latest_checkpoint_and_keep_last(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for step in (5, 100, 20, 3000):  # numeric, not lexical, order
        save_run_checkpoint(tmp_path, step, {"step": step})
    (tmp_path / "checkpoints" / "notes.txt").write_text("x")
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 3000)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5, 20, 100, 3000]
    (tmp_path / "checkpoints" / ".tmp-ckpt_000000004000.pt-x").write_bytes(b"partial")
    save_run_checkpoint(tmp_path, 4000, {"step": 4000}, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3000, 4000]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "ckpt_000000003000.pt", "ckpt_000000004000.pt", "notes.txt"]
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 4000


def _draws(g, ng):
    return (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(),
            torch.randn(2, generator=g).tolist(), ng.normal(size=2).tolist(),
            np.random.randn())


def test_rng_round_trip_through_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(4)
    ng = np.random.default_rng(5)
    np.random.randn()  # leave a cached gaussian in numpy's legacy state
    _draws(g, ng)
    save_checkpoint(tmp_path / "r.pt", {"rng": rng_state([g], [ng])})
    expected = _draws(g, ng)
    # scramble everything, then restore from the file
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    g.manual_seed(99)
    ng2 = np.random.default_rng(99)
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"], [g], [ng2])
    assert _draws(g, ng2) == expected
    with pytest.raises(ValueError, match="1 torch generators, 0 given"):
        set_rng_state(rng_state([g], [ng]), [], [ng])


# --------------------------------------------------------------------------- progress
def test_progress_bar_disabled_off_tty_and_forced_on():
    buf = io.StringIO()
    with StepProgress(total=10, file=buf) as bar:
        bar.update(4)
        bar.set_return(torch.tensor(12.5).item())
    assert bar.disabled and buf.getvalue() == "" and bar.n == 4
    buf = io.StringIO()
    with StepProgress(total=10, file=buf, disable=False, mininterval=0) as bar:
        bar.update(4)
        bar.set_return(12.5)
        bar.update(1)
    out = buf.getvalue()
    assert "return=12.5" in out and "step/s" in out and "50%" in out and bar.n == 5


# --------------------------------------------------------------------------- plot
def _fake_run(run_dir, config, steps, returns):
    with RunLogger(run_dir, use_tensorboard=False) as log:
        for s, r in zip(steps, returns, strict=True):
            log.log(s, episode_return=r)
    if config is not None:
        (run_dir / ".hydra").mkdir()
        write_config(run_dir / ".hydra", config)


@pytest.fixture
def two_groups(tmp_path):
    root = tmp_path / "multirun"
    _fake_run(root / "0", {"seed": 0, "algo": {"name": "mbpo"}}, [0, 10, 20], [0.0, 1.0, 2.0])
    _fake_run(root / "1", {"seed": 1, "algo": {"name": "mbpo"}}, [0, 10, 20, 30],
              [2.0, 3.0, 4.0, 5.0])
    _fake_run(root / "2", {"seed": 0, "algo": {"name": "sac"}}, [0, 5, 20], [0.0, 0.0, 10.0])
    _fake_run(root / "3", {"seed": 1, "algo": {"name": "sac"}}, [0, 20], [0.0, 20.0])
    return root


def test_aggregate_groups_by_config_ignoring_seed(two_groups):
    curves = {c.label: c for c in aggregate([two_groups])}
    assert set(curves) == {"algo.name=mbpo", "algo.name=sac"}
    mbpo, sac = curves["algo.name=mbpo"], curves["algo.name=sac"]
    assert mbpo.n == 2 and sac.n == 2
    np.testing.assert_array_equal(mbpo.x, [0, 10, 20])  # common range: run 0 stops at 20
    np.testing.assert_allclose(mbpo.mean, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(mbpo.std, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(mbpo.min, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(sac.x, [0, 5, 20])  # union of x, interpolated
    np.testing.assert_allclose(sac.values, [[0.0, 0.0, 10.0], [0.0, 5.0, 20.0]])
    np.testing.assert_allclose(sac.mean, [0.0, 2.5, 15.0])
    np.testing.assert_allclose(sac.max, [0.0, 5.0, 20.0])


def test_resumed_run_is_a_seed_of_the_same_curve(tmp_path):
    # a run continued with resume=true differs from its siblings only in run-management keys
    _fake_run(tmp_path / "a", {"seed": 0, "resume": False, "lr": 1}, [0, 10], [0.0, 1.0])
    _fake_run(tmp_path / "b", {"seed": 1, "resume": True, "progress": False, "lr": 1},
              [0, 10], [1.0, 3.0])
    _fake_run(tmp_path / "c", {"seed": 0, "resume": False, "lr": 2}, [0, 10], [5.0, 5.0])
    curves = {c.label: c for c in aggregate([tmp_path])}
    assert set(curves) == {"lr=1", "lr=2"}
    assert curves["lr=1"].n == 2
    np.testing.assert_allclose(curves["lr=1"].mean, [0.5, 2.0])


def test_group_by_parent_dir_and_labels(tmp_path):
    for algo in ("a", "b"):
        for seed in range(2):
            _fake_run(tmp_path / algo / f"s{seed}", None, [0, 1], [seed, seed + 1.0])
    groups = group_runs([[tmp_path / "a" / "s0", tmp_path / "a" / "s1", tmp_path / "b" / "s0"]])
    assert {k: len(v) for k, v in groups.items()} == {"a": 2, "b": 1}
    curves = aggregate([tmp_path / "a", tmp_path / "b"], labels=["x", "x"])
    assert len(curves) == 1 and curves[0].n == 4 and curves[0].label == "x"


def test_plot_writes_png(two_groups, tmp_path, capsys):
    out = tmp_path / "figs" / "curve.png"
    assert plot_runs([two_groups], out=out, spread="minmax") == out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000
    out2 = tmp_path / "cli.png"
    assert cli_main(["plot", str(two_groups / "0"), str(two_groups / "1"),
                     "--out", str(out2)]) == 0
    assert capsys.readouterr().out.strip() == str(out2)
    assert out2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_cli_errors(two_groups, tmp_path, capsys):
    assert cli_main(["plot", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["plot", str(tmp_path / "empty")]) == 2
    assert "no results.csv in" in capsys.readouterr().err
    assert cli_main(["plot", str(two_groups), "--y", "nope", "--out",
                     str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "no column 'nope'" in err and "available columns: env_step, episode_return" in err
    assert cli_main(["plot", str(two_groups / "0"), "--label", "a", "--label", "b"]) == 2
    assert "2 labels for 1 run directories" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(PlotError, match="spread must be one of"):
        plot_runs([two_groups], spread="iqr")
