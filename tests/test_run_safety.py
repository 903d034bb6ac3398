"""Runs that never lose or garble data (issue 10): kills and restarts, the run-directory lock,
the corrupt-checkpoint fallback, every config key checked before anything is written, and
``num_steps`` bounding a run. These rules live in runs/rundir.py and train.run, so they hold
for every algorithm in train.ALGORITHMS; MBPO on tiny settings exercises them here."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastmbrl import train
from fastmbrl.algorithms import mbpo
from fastmbrl.config import ConfigError
from fastmbrl.runs.checkpoint import list_checkpoints, load_checkpoint
from fastmbrl.runs.rundir import RunDirError, RunLock
from fastmbrl.train import run

sys.path.insert(0, str(Path(__file__).parent))
from test_mbpo import TINY, tiny_cfg  # noqa: E402

CSVS = ("results.csv", "train.csv", "model.csv", "sac.csv")
# reset_env_each_epoch + checkpoint_model_buffer: a resumed run continues exactly as the
# uninterrupted one (no in-progress episode to lose, no model buffer to regenerate), so every
# CSV must match value for value; log_frequency_agent=8 leaves SAC sums open at checkpoints.
EXACT = ["overrides=mbpo_inverted_pendulum", "overrides.num_steps=120",
         "algorithm.reset_env_each_epoch=true", "checkpoint_model_buffer=true",
         "log_frequency_agent=8"]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.pop("wall_time_s", None)
    return rows


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file below ``root`` (the lock file left out)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def kill_at(monkeypatch, name: str, call: int) -> None:
    """Make the ``call``-th call of ``mbpo.<name>`` raise KeyboardInterrupt (the kill)."""
    real = getattr(mbpo, name)
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt(f"killed at {name} call {call}")
        return real(*args, **kwargs)

    monkeypatch.setattr(mbpo, name, dying)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("full")
    run(tiny_cfg(*EXACT), d)
    return d


# --------------------------------------------------------------------------- kill and restart
@pytest.mark.parametrize("where", ["before_first_checkpoint", "between_eval_row_and_checkpoint"])
def test_kill_and_restart_gives_the_csvs_of_an_uninterrupted_run(where, uninterrupted,
                                                                 tmp_path, monkeypatch):
    d = tmp_path / "run"
    with monkeypatch.context() as m:
        if where == "before_first_checkpoint":  # during epoch 0: train/model/sac rows exist
            kill_at(m, "evaluate", 1)
        else:  # epoch 1's results row is written, its checkpoint is not
            kill_at(m, "save_run_checkpoint", 2)
        with pytest.raises(KeyboardInterrupt):
            run(tiny_cfg(*EXACT), d)
    assert read_rows(d / "sac.csv")  # the killed attempt did log rows
    if where == "before_first_checkpoint":
        assert not list_checkpoints(d)
        # without resume=true the directory of the unfinished run is refused, untouched
        before = tree_digest(d)
        with pytest.raises(RunDirError, match="stopped before its first checkpoint.*"
                           "resume=true to delete them"):
            run(tiny_cfg(*EXACT), d)
        assert tree_digest(d) == before
    else:
        assert [int(r["env_step"]) for r in read_rows(d / "results.csv")] == [40, 80]
        assert [s for s, _ in list_checkpoints(d)] == [40]
        assert load_checkpoint(list_checkpoints(d)[-1][1], weights_only=False)["sac_sums"]
    run(tiny_cfg(*EXACT, "resume=true"), d)
    for name in CSVS:
        a, b = read_rows(uninterrupted / name), read_rows(d / name)
        assert a == b, name  # same rows, same order, same values (wall time aside)
        steps = [int(r["env_step"]) for r in b]
        assert steps == sorted(steps), name


def test_a_second_kill_and_restart_still_matches(uninterrupted, tmp_path, monkeypatch):
    """Killed twice (between a row and its checkpoint, then in the resumed run's next epoch)."""
    d = tmp_path / "run"
    with monkeypatch.context() as m:
        kill_at(m, "save_run_checkpoint", 2)
        with pytest.raises(KeyboardInterrupt):
            run(tiny_cfg(*EXACT), d)
    with monkeypatch.context() as m:
        kill_at(m, "evaluate", 2)  # resumed at 40: killed in epoch 2, after epoch 1's rows
        with pytest.raises(KeyboardInterrupt):
            run(tiny_cfg(*EXACT, "resume=true"), d)
    run(tiny_cfg(*EXACT, "resume=true"), d)
    for name in CSVS:
        assert read_rows(uninterrupted / name) == read_rows(d / name), name


def test_killed_by_sigkill_and_restarted(uninterrupted, tmp_path):
    """A real SIGKILL of `fastmbrl train` mid-run (after its first checkpoint), then a
    restart with `resume=true`: every CSV equals that of an uninterrupted run."""
    proc = subprocess.Popen([sys.executable, "-m", "fastmbrl", "train", *TINY, *EXACT,
                             f"root_dir={tmp_path}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "mbpo" / "default" / "inverted_pendulum" / "seed0"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill in epoch 1 or 2
        if list_checkpoints(run_dir) and len(read_rows(run_dir / "results.csv")) >= 1:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run(tiny_cfg(*EXACT, "resume=true"), run_dir)
    for name in CSVS:
        assert read_rows(uninterrupted / name) == read_rows(run_dir / name), name


# --------------------------------------------------------------------------- lock
def _hold_lock(run_dir, ready) -> None:
    RunLock(run_dir).acquire()
    ready.set()
    time.sleep(600)


def test_concurrent_start_is_refused_naming_the_holder_and_sigkill_frees_the_lock(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "mbpo" / "default" / "inverted_pendulum" / "seed0"
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(run_dir, ready), daemon=True)
    holder.start()
    try:
        assert ready.wait(60)
        before = tree_digest(tmp_path)
        t0 = time.time()
        with pytest.raises(SystemExit) as exc:  # `fastmbrl train` in this process
            train.main([*TINY, f"root_dir={tmp_path}"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"is in use by another process (pid {holder.pid} on" in err
        assert err.count("\n") == 1  # one line, no traceback
        assert time.time() - t0 < 60  # at once: it does not wait for the holder
        assert tree_digest(tmp_path) == before  # nothing written: no .hydra, no CSV
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
    run(tiny_cfg("overrides.num_steps=40"), run_dir)  # the SIGKILL released the lock
    assert [int(r["env_step"]) for r in read_rows(run_dir / "results.csv")] == [40]
    assert f"pid {os.getpid()} " in (run_dir / ".lock").read_text()


def test_lock_is_exclusive_within_a_process_and_released_on_exit(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunDirError, match=f"pid {os.getpid()} "), RunLock(tmp_path):
            pass
    with RunLock(tmp_path):  # released by the with block
        pass


# --------------------------------------------------------------------------- corrupt checkpoint
def test_corrupt_newest_checkpoint_falls_back_to_the_older_one(uninterrupted, tmp_path):
    d = tmp_path / "run"
    run(tiny_cfg(*EXACT), d)
    (s_old, _), (s_new, newest) = list_checkpoints(d)
    assert (s_old, s_new) == (80, 120)
    data = bytearray(newest.read_bytes())
    data[-100] ^= 0xFF  # a flipped bit in the payload
    newest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=f"{newest.name} is corrupt.*kept aside as "
                      f"{newest.name}.corrupt, resuming from the older ckpt_000000000080.pt"):
        run(tiny_cfg(*EXACT, "resume=true"), d)
    assert (newest.parent / f"{newest.name}.corrupt").read_bytes() == bytes(data)
    assert [s for s, _ in list_checkpoints(d)] == [80, 120]
    load_checkpoint(newest, weights_only=False)  # the redone checkpoint is intact
    for name in CSVS:  # the rows after step 80 were cut and redone: as uninterrupted
        assert read_rows(uninterrupted / name) == read_rows(d / name), name


def test_no_intact_checkpoint_stops_before_rewriting_anything(tmp_path):
    d = tmp_path / "run"
    run(tiny_cfg(*EXACT, "overrides.num_steps=80"), d)
    for _, p in list_checkpoints(d):
        p.write_bytes(p.read_bytes()[:-10])  # truncated
    before = tree_digest(d)
    with pytest.raises(RunDirError, match="no intact checkpoint in .*is truncated.*to start "
                       "this run afresh delete"):
        run(tiny_cfg(*EXACT, "resume=true", "overrides.num_steps=120"), d)
    assert tree_digest(d) == before  # config.yaml, .hydra/, CSVs, checkpoints untouched


def test_resume_without_checkpoint_in_a_fresh_directory_starts(tmp_path, capsys):
    run(tiny_cfg("overrides.num_steps=40", "resume=true"), tmp_path / "run")
    assert "no checkpoint in" in capsys.readouterr().out
    assert [int(r["env_step"]) for r in read_rows(tmp_path / "run" / "results.csv")] == [40]


def test_checkpoint_without_resume_is_refused_untouched(tmp_path):
    d = tmp_path / "run"
    run(tiny_cfg("overrides.num_steps=40"), d)
    before = tree_digest(d)
    with pytest.raises(ConfigError, match="resume=false but run directory .* already holds a "
                       "checkpoint"):
        run(tiny_cfg("overrides.num_steps=40"), d)
    assert tree_digest(d) == before


# --------------------------------------------------------------------------- num_steps
def test_num_steps_bounds_the_run_with_a_short_last_epoch(tmp_path):
    run(tiny_cfg("overrides.num_steps=100"), tmp_path)  # epoch_length 40
    rows = read_rows(tmp_path / "results.csv")
    assert [int(r["env_step"]) for r in rows] == [40, 80, 100]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    state = load_checkpoint(list_checkpoints(tmp_path)[-1][1], weights_only=False)
    assert state["env_steps"] == 100
    assert state["real_buffer"]["num_added"] == 60 + 100  # exploration + num_steps


# --------------------------------------------------------------------------- config table
# (override, fragment the one-line message must hold: key=value and what is allowed)
MALFORMED = [
    # root keys (main.yaml)
    ("seed=-1", "seed=-1: must be >= 0"),
    ("seed=abc", "seed='abc': expected an integer >= 0"),
    ("seed=1.5", "seed=1.5: expected an integer"),
    ("seed=4294967296", "seed=4294967296: must be >= 0 and <= 4294967295"),
    ("device=tpu", "device='tpu' is not a device"),
    ("backend=fast", "backend='fast': allowed values are"),
    ("resume=maybe", "resume='maybe': expected true or false"),
    ("resume=1", "resume=1: expected true or false"),
    ("progress=maybe", "progress='maybe': allowed values are 'auto', true, false"),
    ("progress=1", "progress=1: allowed values are"),
    ("torch_threads=-2", "torch_threads=-2: must be >= 1"),
    ("torch_threads=two", "torch_threads='two': expected an integer >= 1 (or null)"),
    ("checkpoint_every_epochs=-1", "checkpoint_every_epochs=-1: must be >= 0"),
    ("keep_checkpoints=0", "keep_checkpoints=0: must be >= 1"),
    ("log_frequency_agent=0", "log_frequency_agent=0: must be >= 1"),
    ("use_tensorboard=yes", "use_tensorboard='yes': expected true or false"),
    ("checkpoint_model_buffer=2", "checkpoint_model_buffer=2: expected true or false"),
    ("debug_mode=abc", "debug_mode='abc': expected true or false"),
    ("use_wandb=true", "use_wandb=true: wandb is not installed"),
    ("+foo=1", "unknown key foo=1"),
    ("+seeds=3", "unknown key seeds=3 (did you mean seed?)"),
    ("algorithm.name=ppo", "algorithm.name='ppo': available"),
    # overrides
    ("overrides.num_steps=abc", "overrides.num_steps='abc': expected an integer >= 1"),
    ("overrides.num_steps=100.5", "overrides.num_steps=100.5: expected an integer >= 1"),
    ("overrides.num_steps=0", "overrides.num_steps=0: must be >= 1"),
    ("overrides.epoch_length=-3", "overrides.epoch_length=-3: must be >= 1"),
    ("overrides.sac_lr=fast", "overrides.sac_lr='fast': expected a number > 0.0"),
    ("overrides.sac_lr=0", "overrides.sac_lr=0: must be > 0.0"),
    ("overrides.sac_gamma=1.5", "overrides.sac_gamma=1.5: must be >= 0.0 and <= 1.0"),
    ("overrides.sac_tau=-0.1", "overrides.sac_tau=-0.1: must be >= 0.0 and <= 1.0"),
    ("overrides.sac_alpha=-1", "overrides.sac_alpha=-1: must be >= 0.0"),
    ("overrides.sac_policy=Deterministic",
     "overrides.sac_policy='Deterministic': allowed values are 'Gaussian'"),
    ("overrides.rollout_schedule=5", "overrides.rollout_schedule=5: expected a list of 4"),
    ("overrides.rollout_schedule=[1,2,3]", "overrides.rollout_schedule=[1, 2, 3]: expected a "
     "list of 4 integers"),
    ("overrides.rollout_schedule=[1,2,a,3]", "overrides.rollout_schedule[2]='a': expected an "
     "integer"),
    ("overrides.rollout_schedule=[5,2,1,3]", "overrides.rollout_schedule=[5, 2, 1, 3]: "
     "expected [min_epoch, max_epoch"),
    ("overrides.validation_ratio=1.5", "overrides.validation_ratio=1.5: must be >= 0.0 and "
     "< 1.0"),
    ("overrides.model_batch_size=0", "overrides.model_batch_size=0: must be >= 1"),
    ("overrides.patience=-1", "overrides.patience=-1: must be >= 0"),
    ("overrides.num_elites=9", "overrides.num_elites=9 exceeds "
     "dynamics_model.model.ensemble_size=3"),
    ("overrides.env=pogo", "overrides.env='pogo': unknown task 'pogo'; known tasks:"),
    ("overrides.term_fn=hopper", "overrides.term_fn='hopper' does not match overrides.env="),
    ("overrides.distraction_dimensions=-1", "overrides.distraction_dimensions=-1: must be >= 0"),
    ("overrides.pure_noise_distraction=true", "overrides.pure_noise_distraction=true needs "
     "overrides.distraction_dimensions >= 1"),
    ("overrides.sac_automatic_entropy_tuning=sometimes",
     "overrides.sac_automatic_entropy_tuning='sometimes': expected true or false"),
    ("+overrides.num_stpes=5", "unknown key overrides.num_stpes=5 (did you mean "
     "overrides.num_steps?)"),
    ("+overrides.model_loss_type=vaml",
     "overrides.model_loss_type='vaml': allowed values are 'mle', 'va'"),
    ("+overrides.value_update_interval=-1", "overrides.value_update_interval=-1: must be >= 0"),
    ("+overrides.v_update_batch_size=0", "overrides.v_update_batch_size=0: must be >= 1"),
    ("~overrides.sac_gamma", "overrides.sac_gamma is missing: expected a number"),
    # algorithm, algorithm.agent
    ("+algorithm.num_eval_episode=3", "unknown key algorithm.num_eval_episode=3 (did you mean "
     "algorithm.num_eval_episodes?)"),
    ("algorithm.num_eval_episodes=0", "algorithm.num_eval_episodes=0: must be >= 1"),
    ("algorithm.real_data_ratio=2", "algorithm.real_data_ratio=2: must be >= 0.0 and <= 1.0"),
    ("algorithm.initial_exploration_steps=-5",
     "algorithm.initial_exploration_steps=-5: must be >= 0"),
    ("algorithm.normalize=perhaps", "algorithm.normalize='perhaps': expected true or false"),
    ("algorithm.freq_train_model=0", "algorithm.freq_train_model=0: must be >= 1"),
    ("algorithm.agent.num_layers=0", "algorithm.agent.num_layers=0: must be >= 1"),
    ("algorithm.agent.grad_clip_norm=-1", "algorithm.agent.grad_clip_norm=-1: must be > 0.0"),
    ("algorithm.agent.gamma=2", "algorithm.agent.gamma=2: must be >= 0.0 and <= 1.0"),
    ("algorithm.agent.compile=fast", "algorithm.agent.compile='fast': expected true or false"),
    ("+algorithm.agent.hidden=5", "unknown key algorithm.agent.hidden=5"),
    # dynamics_model, dynamics_model.model
    ("dynamics_model.model.hid_size=abc", "dynamics_model.model.hid_size='abc': expected an "
     "integer >= 1"),
    ("dynamics_model.model.num_layers=0", "dynamics_model.model.num_layers=0: must be >= 1"),
    ("dynamics_model.model.ensemble_size=1.5", "dynamics_model.model.ensemble_size=1.5: "
     "expected an integer"),
    ("dynamics_model.model.activation=gelu", "dynamics_model.model.activation='gelu': allowed "
     "values are 'silu', 'relu', 'tanh'"),
    ("dynamics_model.model.propagation_method=mean",
     "dynamics_model.model.propagation_method='mean': allowed values are 'random_model'"),
    ("dynamics_model.model.deterministic=2", "dynamics_model.model.deterministic=2: expected "
     "true or false"),
    ("+dynamics_model.model.hid_sz=3", "unknown key dynamics_model.model.hid_sz=3 (did you "
     "mean dynamics_model.model.hid_size?)"),
    ("+dynamics_model.model.use_vaml=true", "unknown key dynamics_model.model.use_vaml=true"),
    ("dynamics_model.va_norm=l3", "dynamics_model.va_norm='l3': allowed values are 'l1', 'l2'"),
    ("dynamics_model.va_loss_coeff=-1", "dynamics_model.va_loss_coeff=-1: must be >= 0.0"),
    ("dynamics_model.name=mlp", "dynamics_model.name='mlp': MBPO runs gaussian_mlp_ensemble"),
    ("dynamics_model=vaml_ensemble dynamics_model.model.use_vaml=true "
     "dynamics_model.model.use_itervaml=true", "dynamics_model.model.use_vaml=true and "
     "dynamics_model.model.use_itervaml=true: choose one"),
    ("dynamics_model=vaml_ensemble dynamics_model.model.bound_clipping_quantile=1.5",
     "dynamics_model.model.bound_clipping_quantile=1.5: must be > 0.0 and <= 1.0"),
    ("dynamics_model=vaml_ensemble dynamics_model.model.use_scaling=false",
     "dynamics_model.model.use_scaling=false with use_vaml=false and use_itervaml=false"),
    ("dynamics_model=vaml_ensemble dynamics_model.head_clip_rule=1",
     "dynamics_model.head_clip_rule=1: expected true or false"),
    ("dynamics_model=vaml_ensemble +overrides.model_loss_type=va",
     "overrides.model_loss_type=va (VA-MBPO) needs dynamics_model=gaussian_mlp_ensemble"),
    # action_optimizer
    ("action_optimizer.num_iters=0", "action_optimizer.num_iters=0: must be >= 1"),
    ("action_optimizer.elite_ratio=2", "action_optimizer.elite_ratio=2: must be > 0.0 and "
     "<= 1.0"),
    ("action_optimizer.population_size=big", "action_optimizer.population_size='big': "
     "expected an integer >= 1"),
    ("+action_optimizer.iters=3", "unknown key action_optimizer.iters=3"),
]


@pytest.mark.parametrize("override, fragment", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_invocation_exits_2_naming_the_key_and_writes_nothing(
        override, fragment, tmp_path, monkeypatch, capsys):
    if override == "use_wandb=true" and importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        train.main([*TINY, f"root_dir={tmp_path / 'exp'}", *override.split()])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("fastmbrl train: configuration error: ")
    assert err.count("\n") == 1, err  # one line
    assert fragment in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the run directory


def test_the_table_covers_every_config_group():
    assert len(MALFORMED) >= 50
    for group in ("overrides.", "algorithm.", "algorithm.agent.", "dynamics_model.",
                  "dynamics_model.model.", "action_optimizer.", "seed", "+foo"):
        assert any(o.startswith(group) or f" {group}" in o or o.startswith("~" + group)
                   for o, _ in MALFORMED), group


def test_a_bad_sweep_job_stops_the_multirun_before_any_directory(tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        train.main(["-m", *TINY, f"root_dir={tmp_path / 'exp'}", "seed=0,-1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert ("configuration error: seed=-1: must be >= 0 and <= 4294967295 (in the sweep job "
            "seed=-1)") in err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- any algorithm
def _toy_module():
    """A minimal algorithm module, registered like any other: logs one row per step to two
    CSVs, checkpoints every 3 steps, resumes from latest_checkpoint. It has no restart, lock or
    truncation code of its own."""
    import types
    from dataclasses import dataclass

    from fastmbrl.runs import RunLogger, latest_checkpoint, save_run_checkpoint
    from fastmbrl.schema import check, spec

    @dataclass(kw_only=True)
    class ToyAlgorithm:
        name: str = spec(choices=("toy",))
        steps: int = spec(ge=1)
        die_at: int | None = spec(None, ge=1, nullable=True)
        sleep_s: float = spec(0.0, ge=0.0)

    def validate(cfg):
        check(cfg.algorithm, ToyAlgorithm, "algorithm")

    def train(cfg, run_dir, device):
        start = 0
        ckpt = latest_checkpoint(run_dir) if cfg.resume else None
        if ckpt is not None:
            start = load_checkpoint(ckpt)["step"]
        logger = RunLogger(run_dir, use_tensorboard=False)  # no resume_step: run() cut the CSVs
        for step in range(start + 1, cfg.algorithm.steps + 1):
            logger.log(step, value=step * step)
            logger.log(step, group="train", loss=1.0 / step)
            if step == cfg.algorithm.get("die_at"):
                raise KeyboardInterrupt("killed")
            time.sleep(cfg.algorithm.get("sleep_s", 0.0))
            if step % 3 == 0:
                logger.flush()
                save_run_checkpoint(run_dir, step, {"step": step}, keep_last=2)
        logger.close()
        return 0.0

    return types.SimpleNamespace(validate=validate, train=train)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(sys.modules, "toy_algorithm", _toy_module())
    monkeypatch.setitem(train.ALGORITHMS, "toy", "toy_algorithm")

    def cfg(*extra):
        from omegaconf import OmegaConf

        from fastmbrl.config import RootConfig
        from fastmbrl.schema import defaults

        root = {k: v for k, v in defaults(RootConfig).items() if v is not None}
        c = OmegaConf.create({**root, "device": "cpu", "algorithm": {"name": "toy", "steps": 10}})
        return OmegaConf.merge(c, OmegaConf.from_dotlist(list(extra)))

    return cfg


def test_any_registered_algorithm_gets_the_restart_rules_and_the_lock(toy, tmp_path):
    full, d = tmp_path / "full", tmp_path / "run"
    run(toy(), full)
    with pytest.raises(KeyboardInterrupt):  # between the rows of step 8 and no checkpoint
        run(toy("algorithm.die_at=8"), d)
    with pytest.raises(ConfigError, match="resume=false but run directory"):
        run(toy(), d)
    with pytest.raises(KeyboardInterrupt):  # before its first checkpoint, in a second run dir
        run(toy("algorithm.die_at=2"), tmp_path / "early")
    with pytest.raises(RunDirError, match="stopped before its first checkpoint"):
        run(toy(), tmp_path / "early")
    run(toy("resume=true"), tmp_path / "early")
    run(toy("resume=true"), d)
    for name in ("results.csv", "train.csv"):
        a, b, c = (read_rows(x / name) for x in (full, d, tmp_path / "early"))
        assert a == b == c and [int(r["env_step"]) for r in a] == list(range(1, 11)), name
    # train.log: every attempt, in order, appended (the refusal above added nothing)
    log = (d / "train.log").read_text()
    marks = ["] start toy in ", "] stopped by KeyboardInterrupt: killed", "] resume toy in ",
             "] resume: dropped the rows logged after ckpt_000000000006.pt", "] finished: "]
    at = [log.find(m) for m in marks]
    assert -1 not in at and at == sorted(at) and log.count("] start ") == 1, log
    assert "Traceback" not in log  # a kill is a one-line note
    with RunLock(d), pytest.raises(RunDirError, match="in use by another process"):
        run(toy("resume=true"), d)
    with pytest.raises(ConfigError, match=r"algorithm.steps=0: must be >= 1"):
        run(toy("algorithm.steps=0"), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_time_limit_stops_the_run_cleanly_and_resume_continues_it(toy, tmp_path):
    """time_limit_min: the run stops itself (returns, no exception), keeps its checkpoint and
    rows, says so in train.log, leaves no timer or handler behind; resume=true finishes it with
    the CSVs of an uninterrupted run."""
    full, d = tmp_path / "full", tmp_path / "run"
    run(toy(), full)
    handler = signal.getsignal(signal.SIGALRM)
    t = time.monotonic()
    best = run(toy("algorithm.sleep_s=0.25", "time_limit_min=0.02"), d)  # 1.2 s: ~5 steps
    assert 1.0 < time.monotonic() - t < 5.0
    assert best != best  # nan: the run did not finish
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is handler
    rows = read_rows(d / "results.csv")
    assert 3 <= len(rows) < 10 and [s for s, _ in list_checkpoints(d)] == [3]
    log = (d / "train.log").read_text()
    assert "] stopped: time_limit_min=0.02 reached after" in log and "Traceback" not in log
    assert "resume=true" in log.splitlines()[-1]
    run(toy("resume=true"), d)
    for name in ("results.csv", "train.csv"):
        assert read_rows(full / name) == read_rows(d / name), name


def test_time_limit_outside_the_main_thread_is_refused_before_writing(toy, tmp_path):
    import threading

    errors = []

    def job():
        try:
            run(toy("time_limit_min=1"), tmp_path / "run")
        except ConfigError as exc:
            errors.append(str(exc))

    th = threading.Thread(target=job)
    th.start()
    th.join()
    assert errors and "time_limit_min=1" in errors[0] and "main thread" in errors[0]
    assert not (tmp_path / "run").exists()
