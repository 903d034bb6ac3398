"""``fastmbrl omd ...``: the OMD seed's three entry points.

    fastmbrl omd tabular --out DIR [--quick]          the notebook's three figures (PNG + CSV)
    fastmbrl omd cartpole --agent_type omd|mle|vep [--with_inv_jac] [flags of cartpole/train.py]
    fastmbrl omd mujoco --config.algo=omd|mle [--config.KEY=VALUE] [flags of mujoco/train.py]

``cartpole`` and ``mujoco`` translate the original's absl / ml_collections flags into the
equivalent ``fastmbrl train algorithm=omd overrides=omd_cartpole|omd_halfcheetah ...`` command,
print it and run it (``--dry_run`` only prints it). A flag the original does not have is an error
naming it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["main", "translate_cartpole", "translate_mujoco", "TranslateError"]


class TranslateError(ValueError):
    """A flag of the original command line that cannot be translated (named in the message)."""


# ---- tabular -----------------------------------------------------------------------------------
def _tabular(argv: list[str]) -> int:
    from .algorithms.omd_tabular import StudyGrid, run_studies

    p = argparse.ArgumentParser(prog="fastmbrl omd tabular",
                                description="OMD vs MLE on the 2-state MDP: the notebook's "
                                "misspecification, bound-tightness and IFT-sensitivity figures.")
    p.add_argument("--out", required=True, help="output folder (PNGs, CSVs, summary.json)")
    p.add_argument("--quick", action="store_true",
                   help="reduced grid (6 bounds, 3 seeds, 4 noise levels x 2 seeds, "
                   "60 outer steps)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (1..N)")
    p.add_argument("--max_iter", type=int, default=None, help="outer Adam iterations (at most)")
    p.add_argument("--num_bounds", type=int, default=None,
                   help="norm bounds: linspace(0, 6, N) (default 20; --quick: 6 of them)")
    p.add_argument("--num_sigmas", type=int, default=None,
                   help="noise levels: logspace(-3, 0.5, N) (default 30)")
    a = p.parse_args(argv)
    import json

    import numpy as np

    grid = StudyGrid.quick() if a.quick else StudyGrid.full()
    if a.seeds is not None:
        grid.seeds = grid.ift_seeds = list(range(1, a.seeds + 1))
    if a.max_iter is not None:
        grid.max_iter = a.max_iter
    if a.num_bounds is not None:
        grid.bounds = np.linspace(0, 6, a.num_bounds).tolist()
    if a.num_sigmas is not None:
        grid.sigmas = np.logspace(-3, 0.5, a.num_sigmas).tolist()
    for name in ("seeds", "max_iter", "num_bounds", "num_sigmas"):
        v = getattr(a, name)
        if v is not None and v < 1:
            print(f"fastmbrl omd tabular: error: --{name}={v}: must be >= 1", file=sys.stderr)
            return 2
    summary = run_studies(a.out, grid)
    from pathlib import Path

    Path(a.out, "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {a.out}/misspecification.png, tightness.png, ift.png (+ .csv)")
    return 0


# ---- flag translation ------------------------------------------------------------------------
@dataclass(frozen=True)
class Flag:
    key: str | None  # the fastmbrl key (None: accepted, no effect; see note)
    kind: type  # bool, int, float, str
    note: str = ""


# cartpole/train.py (absl flags) -> overrides of conf/overrides/omd_cartpole.yaml
CARTPOLE_FLAGS: dict[str, Flag] = {
    "exp": Flag("experiment", str),
    "out_dir": Flag("root_dir", str),
    "data_path": Flag(None, str, "the replay buffer is kept in the run's checkpoints"),
    "agent_path": Flag(None, str, "the agent is kept in the run's checkpoints"),
    "env_name": Flag("overrides.env", str),
    "seed": Flag("seed", int),
    "num_train_steps": Flag("overrides.num_steps", int),
    "hidden_dim": Flag("overrides.hidden_dim", int),
    "model_hidden_dim": Flag("overrides.model_hidden_dim", int),
    "batch_size": Flag("overrides.batch_size", int),
    "init_steps": Flag("overrides.init_steps", int),
    "eval_frequency": Flag("overrides.eval_frequency", int),
    "log_frequency": Flag("overrides.log_frequency", int),
    "num_Q_steps": Flag("overrides.num_Q_steps", int),
    "num_T_steps": Flag("overrides.num_T_steps", int),
    "num_ensemble_vep": Flag("overrides.num_ensemble_vep", int),
    "eps": Flag("overrides.eps", float),
    "discount": Flag("overrides.discount", float),
    "lr": Flag("overrides.lr", float),
    "inner_lr": Flag("overrides.inner_lr", float),
    "alpha": Flag("overrides.alpha", float),
    "tau": Flag("overrides.tau", float),
    "save_buf": Flag(None, bool, "the replay buffer is kept in the run's checkpoints"),
    "save_agent": Flag(None, bool, "the agent is kept in the run's checkpoints"),
    "hard": Flag("overrides.hard", bool),
    "no_learn_reward": Flag("overrides.no_learn_reward", bool),
    "prob_model": Flag("overrides.prob_model", bool),
    "no_warm": Flag("overrides.no_warm", bool),
    "warm_opt": Flag("overrides.warm_opt", bool),
    "no_double": Flag("overrides.no_double", bool),
    # the original's help text says this flag "replaces inverse Jacobian in implicit gradient
    # with identity matrix"; its code does the opposite: without it the identity is used, with
    # it CG on (H + 1e-5 I) v = g (maxiter 100). The flag does what the code does.
    "with_inv_jac": Flag("overrides.with_inv_jac", bool,
                         "CG inverse of the Hessian (100 iterations, damping 1e-5); without "
                         "it the identity approximation (the original's help text says the "
                         "opposite of what its code does)"),
    "agent_type": Flag("overrides.agent_type", str),
}
CARTPOLE_ENVS = {"CartPole-v1": "cartpole", "cartpole": "cartpole"}

# mujoco/train.py (absl flags) and configs/omd_default.py (--config.KEY)
MUJOCO_FLAGS: dict[str, Flag] = {
    "exp": Flag("experiment", str),
    "env_name": Flag("overrides.env", str),
    "save_dir": Flag("root_dir", str),
    "seed": Flag("seed", int),
    "eval_episodes": Flag("overrides.eval_episodes", int),
    "log_interval": Flag("overrides.log_interval", int),
    "eval_interval": Flag("overrides.eval_interval", int),
    "dim_distract": Flag("overrides.dim_distract", int),
    "batch_size": Flag("overrides.batch_size", int),
    "max_steps": Flag("overrides.num_steps", int),
    "start_training": Flag("overrides.start_training", int),
    "tqdm": Flag("progress", bool),
    "no_jit": Flag(None, bool, "PyTorch runs eagerly; nothing to disable"),
    "save_video": Flag(None, bool, "video recording is not implemented (ignored)"),
    "config.algo": Flag("overrides.algo", str),
    "config.model_lr": Flag("overrides.model_lr", float),
    "config.actor_lr": Flag("overrides.actor_lr", float),
    "config.critic_lr": Flag("overrides.critic_lr", float),
    "config.temp_lr": Flag("overrides.temp_lr", float),
    "config.hidden_dims": Flag("overrides.hidden_dims", list),
    "config.model_hidden_dim": Flag("overrides.model_hidden_dim", int),
    "config.discount": Flag("overrides.discount", float),
    "config.outer_steps": Flag("overrides.outer_steps", int),
    "config.inner_steps": Flag("overrides.inner_steps", int),
    "config.tau": Flag("overrides.tau", float),
    "config.target_update_period": Flag("overrides.target_update_period", int),
    "config.init_temperature": Flag("overrides.init_temperature", float),
    "config.target_entropy": Flag("overrides.target_entropy", float),
    "config.replay_buffer_size": Flag("overrides.replay_buffer_size", int),
}
# gym v2 names of the original -> fastmbrl task names (any registered task name also works)
MUJOCO_ENVS = {"HalfCheetah-v2": "halfcheetah", "Hopper-v2": "hopper", "Walker2d-v2": "walker2d",
               "Ant-v2": "ant", "Humanoid-v2": "humanoid",
               "InvertedPendulum-v2": "inverted_pendulum"}
# fastmbrl-only options (not in the original) passed through as overrides
EXTRA_CARTPOLE = {"inverse": str, "cg_maxiter": int, "cg_damping": float,
                  "float64": bool, "device": str, "progress": bool}
EXTRA_MUJOCO = {"inverse": str, "cg_maxiter": int, "cg_damping": float, "device": str}


def _parse(argv: list[str], table: dict[str, Flag], prog: str, extra: dict[str, type]):
    """absl-style ``--name=value``, ``--name value``, ``--flag`` / ``--noflag`` parsing."""
    out: list[tuple[str, Flag, Any]] = []
    passthrough: list[str] = []
    dry = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--dry_run":
            dry = True
            continue
        if not arg.startswith("--"):
            if "=" in arg and not arg.startswith("-"):  # a raw Hydra override, passed through
                passthrough.append(arg)
                continue
            raise TranslateError(f"{prog}: unexpected argument {arg!r} (flags are --name=value)")
        body = arg[2:]
        name, has_value, value = body.partition("=")
        if name in extra:
            if not has_value and extra[name] is not bool:
                if i >= len(argv):
                    raise TranslateError(f"{prog}: --{name} needs a value")
                value, has_value = argv[i], True
                i += 1
            key = {"device": "device", "progress": "progress",
                   "float64": "overrides.float64"}.get(name, f"algorithm.{name}")
            passthrough.append(f"{key}={value if has_value else 'true'}")
            continue
        flag = table.get(name)
        negated = False
        if flag is None and name.startswith("no") and table.get(name[2:]) is not None \
                and table[name[2:]].kind is bool:
            flag, name, negated = table[name[2:]], name[2:], True
        if flag is None:
            import difflib

            close = difflib.get_close_matches(name, list(table) + list(extra), n=1)
            hint = f" (did you mean --{close[0]}?)" if close else ""
            raise TranslateError(f"{prog}: unknown flag --{name}{hint}")
        if flag.kind is bool:
            if has_value:
                low = value.lower()
                if low not in ("true", "false", "1", "0"):
                    raise TranslateError(f"{prog}: --{name}={value!r}: expected true or false")
                val = low in ("true", "1")
            else:
                val = True
            val = (not val) if negated else val
        else:
            if not has_value:
                if i >= len(argv):
                    raise TranslateError(f"{prog}: --{name} needs a value")
                value = argv[i]
                i += 1
            try:
                if value.lower() == "none" and flag.kind in (int, float):
                    val = None  # ml_collections' None (target_entropy, replay_buffer_size)
                elif flag.kind is list:
                    val = [int(x) for x in value.strip("()[] ").split(",") if x.strip()]
                elif flag.kind is str:
                    val = value
                else:
                    val = flag.kind(value)
            except ValueError:
                raise TranslateError(f"{prog}: --{name}={value!r}: expected "
                                     f"{flag.kind.__name__}") from None
        out.append((name, flag, val))
    return out, passthrough, dry


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ",".join(str(x) for x in v) + "]"
    if v is None:
        return "null"
    return str(v)


def _overrides(parsed, envs: dict[str, str], prog: str) -> tuple[list[str], list[str]]:
    from . import envs as envmod

    cmd, notes = [], []
    for name, flag, val in parsed:
        if flag.key is None:
            notes.append(f"--{name}: {flag.note}")
            continue
        if flag.key == "overrides.env":
            task = envs.get(val, val)
            try:
                envmod.get_task(task)
            except ValueError as exc:
                raise TranslateError(f"{prog}: --{name}={val!r}: {exc}") from None
            val = task
        if flag.key == "overrides.target_entropy" and str(val).lower() == "none":
            val = None
        cmd.append(f"{flag.key}={_fmt(val)}")
    return cmd, notes


def translate_cartpole(argv: list[str]) -> tuple[list[str], list[str], bool]:
    """``cartpole/train.py`` flags -> (``fastmbrl train`` overrides, notes, dry_run)."""
    parsed, extra, dry = _parse(argv, CARTPOLE_FLAGS, "fastmbrl omd cartpole", EXTRA_CARTPOLE)
    for name, _, val in parsed:
        if name == "agent_type" and val not in ("omd", "mle", "vep"):
            raise TranslateError(f"fastmbrl omd cartpole: --agent_type={val!r}: allowed values "
                                 "are omd, mle, vep")
    cmd, notes = _overrides(parsed, CARTPOLE_ENVS, "fastmbrl omd cartpole")
    return ["algorithm=omd", "overrides=omd_cartpole", *cmd, *extra], notes, dry


def translate_mujoco(argv: list[str]) -> tuple[list[str], list[str], bool]:
    """``mujoco/train.py --config.KEY=...`` flags -> (``fastmbrl train`` overrides, notes,
    dry_run)."""
    parsed, extra, dry = _parse(argv, MUJOCO_FLAGS, "fastmbrl omd mujoco", EXTRA_MUJOCO)
    for name, _, val in parsed:
        if name == "config.algo" and val not in ("omd", "mle"):
            raise TranslateError(f"fastmbrl omd mujoco: --config.algo={val!r}: allowed values "
                                 "are omd, mle")
    cmd, notes = _overrides(parsed, MUJOCO_ENVS, "fastmbrl omd mujoco")
    return ["algorithm=omd", "overrides=omd_halfcheetah", *cmd, *extra], notes, dry


def _run_translated(kind: str, argv: list[str]) -> int:
    fn = translate_cartpole if kind == "cartpole" else translate_mujoco
    if argv[:1] in (["-h"], ["--help"]):
        table = CARTPOLE_FLAGS if kind == "cartpole" else MUJOCO_FLAGS
        print(f"usage: fastmbrl omd {kind} [--FLAG=VALUE ...] [--dry_run]\n\nflags of the "
              f"original {kind}/train.py and what they set:")
        for name, f in table.items():
            what = f.key if f.key else f"(no effect: {f.note})"
            if f.key and f.note:
                what += f": {f.note}"
            print(f"  --{name:<28} {what}")
        return 0
    try:
        overrides, notes, dry = fn(argv)
    except TranslateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for n in notes:
        print(f"note: {n}")
    from .train import run_translated

    return run_translated(overrides, dry)


def main(argv: list[str]) -> int:
    usage = ("usage: fastmbrl omd {tabular,cartpole,mujoco} ...\n"
             "  tabular   --out DIR [--quick]        the tabular figures\n"
             "  cartpole  --agent_type omd|mle|vep   the original cartpole/train.py flags\n"
             "  mujoco    --config.algo=omd|mle      the original mujoco/train.py flags")
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    kind, rest = argv[0], argv[1:]
    if kind == "tabular":
        return _tabular(rest)
    if kind in ("cartpole", "mujoco"):
        return _run_translated(kind, rest)
    print(f"error: fastmbrl omd: unknown command {kind!r}\n{usage}", file=sys.stderr)
    return 2
