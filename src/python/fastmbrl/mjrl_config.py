"""``fastmbrl model-based-npg --output DIR --config FILE.txt``: run an mjrl v2 model-based NPG
config file (``projects/model_based_npg/configs/*.txt``) through ``fastmbrl train``.

mjrl reads these files with ``eval``; here they are parsed safely: the file must be one Python
dict literal whose values are numbers, strings, booleans, None, tuples, lists, dicts and
``dict(key=value, ...)`` calls, nothing else (:func:`parse_config`). Each key maps onto a Hydra
override (:func:`to_overrides`; docs/npg.md has the table); an unknown key is an error naming it.
Keys the file leaves out get mjrl's defaults (run script and NPG class), not fastmbrl's:
``act_repeat`` 1, ``eval_rollouts`` 0, ``save_freq`` 10, ``device`` cpu, ``hvp_frac`` 1.0,
``start_state`` init, CG iterations 10 and damping 1e-4.

Rewards and termination follow mjrl: ``reward_file`` naming mjrl's ``gym_hopper.py`` gives its
reward (``learn_reward=False``) and its termination function; without a reward file the reward
is learned and, as in mjrl for gym tasks, no termination function is used.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from . import envs
from .schema import ConfigError

# mjrl key -> overrides key (same name unless given)
OVERRIDE_KEYS = {
    "act_repeat", "num_iter", "iter_samples", "init_samples", "eval_rollouts", "num_models",
    "exp_notes", "hidden_size", "activation", "fit_lr", "fit_wd", "buffer_size", "fit_mb_size",
    "fit_epochs", "refresh_fit", "max_steps", "init_log_std", "min_log_std", "policy_size",
    "inner_steps", "step_size", "gamma", "gae_lambda", "update_paths", "start_state", "horizon",
    "hvp_frac", "pessimism_coef", "truncate_lim", "truncate_reward",
}
INT_KEYS = {"buffer_size", "max_steps", "num_iter", "iter_samples", "init_samples",
            "fit_epochs", "fit_mb_size", "horizon", "update_paths", "inner_steps"}
HANDLED_KEYS = {"env_name", "seed", "device", "debug_mode", "save_freq", "learn_reward",
                "reward_file", "init_policy", "npg_hp", "num_cpu"}
MJRL_DEFAULTS = {"act_repeat": 1, "eval_rollouts": 0, "save_freq": 10, "device": "cpu",
                 "hvp_frac": 1.0, "start_state": "init", "learn_reward": True}
MJRL_CG_DEFAULTS = {"iters": 10, "damping": 1e-4}
MJRL_REWARD_FILES = {"gym_hopper.py": "hopper"}
# base overrides file per task (every key the mjrl file sets is overridden on top of it)
BASE_OVERRIDES = {"hopper": "npg_hopper_pal", "inverted_pendulum": "npg_inverted_pendulum"}


def _literal(node: ast.AST, path: str) -> Any:
    """A value of the allowed literal subset (``ast.literal_eval`` plus ``dict(k=v)``)."""
    if isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id == "dict") or node.args:
            raise ConfigError(f"{path}: only literals and dict(key=value, ...) are allowed, got "
                              f"{ast.unparse(node)!r}")
        return {kw.arg: _literal(kw.value, f"{path}.{kw.arg}") for kw in node.keywords}
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values, strict=True):
            key = _literal(k, path) if k is not None else None
            if not isinstance(key, str):
                raise ConfigError(f"{path}: dictionary keys must be strings, got "
                                  f"{ast.unparse(k) if k is not None else '**'}")
            out[key] = _literal(v, f"{path}.{key}" if path else key)
        return out
    if isinstance(node, (ast.Tuple, ast.List)):
        return [_literal(e, path) for e in node.elts]
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ConfigError(f"{path or 'config'}: not a literal value: {ast.unparse(node)!r} "
                          "(the config is parsed, never executed)") from None


def parse_config(text: str, name: str = "config") -> dict:
    """Parse mjrl's dict-literal config text safely (no ``eval``)."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"{name}: not a Python dict literal (line {exc.lineno}: {exc.msg})") \
            from None
    if not isinstance(tree.body, ast.Dict):
        raise ConfigError(f"{name}: the file must hold one dict literal {{'key': value, ...}}")
    return _literal(tree.body, "")


def _task(env_name: str) -> str:
    base = str(env_name).split("-v")[0]
    for task in envs.TASKS.values():
        if task.gym_id.split("-v")[0] == base:
            return task.name
    raise ConfigError(f"env_name={env_name!r}: no fastmbrl task for it (known: "
                      f"{', '.join(t.gym_id for t in envs.TASKS.values())})")


def _value(v: Any) -> str:
    """A Hydra override value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, str):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./-]*", v) and v.lower() not in (
                "true", "false", "null", "none", "inf", "nan"):
            return v
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(v)


def to_overrides(job: dict, output: str | None = None, device: str | None = None) -> list[str]:
    """The ``fastmbrl train`` overrides equivalent to the mjrl config ``job``."""
    unknown = sorted(set(job) - OVERRIDE_KEYS - HANDLED_KEYS)
    if unknown:
        raise ConfigError(f"unknown mjrl config key {unknown[0]!r} (fastmbrl model-based-npg "
                          "maps the keys listed in docs/npg.md)")
    job = {**MJRL_DEFAULTS, **job}
    if "env_name" not in job:
        raise ConfigError("env_name is missing from the config")
    task = _task(job["env_name"])
    if job.get("init_policy") is not None:
        raise ConfigError(f"init_policy={job['init_policy']!r}: loading pickled mjrl policies "
                          "is not supported (use None)")
    out = ["algorithm=mbnpg", f"overrides={BASE_OVERRIDES.get(task, 'npg_hopper_pal')}",
           f"overrides.env={task}"]
    if "seed" in job:
        out.append(f"seed={int(job['seed'])}")
    out.append(f"device={device or job['device']}")
    if "debug_mode" in job:
        out.append(f"debug_mode={_value(bool(job['debug_mode']))}")
    out.append(f"checkpoint_every_epochs={int(job['save_freq'])}")
    for key in sorted(OVERRIDE_KEYS & set(job)):
        v = job[key]
        if key in INT_KEYS and isinstance(v, float) and v.is_integer():
            v = int(v)
        out.append(f"overrides.{key}={_value(v)}")
    rf = job.get("reward_file")
    if rf is not None:
        fname = Path(str(rf)).name
        if MJRL_REWARD_FILES.get(fname) != task:
            raise ConfigError(f"reward_file={rf!r}: fastmbrl has mjrl's reward and termination "
                              f"file for {', '.join(MJRL_REWARD_FILES)} "
                              f"({', '.join(MJRL_REWARD_FILES.values())}) only; use None to "
                              "learn the reward")
        learned = bool(job["learn_reward"])
        out += [f"overrides.learn_reward={_value(learned)}",
                f"overrides.reward_file={'learned' if learned else 'mjrl'}",
                "overrides.termination=mjrl"]
    else:
        out += ["overrides.learn_reward=true", "overrides.reward_file=learned",
                "overrides.termination=none"]
    npg_hp = job.get("npg_hp") or {}
    extra = sorted(set(npg_hp) - {"FIM_invert_args"})
    if extra:
        raise ConfigError(f"npg_hp.{extra[0]}: unknown NPG argument (supported: "
                          "FIM_invert_args={'iters', 'damping'})")
    fim = {**MJRL_CG_DEFAULTS, **(npg_hp.get("FIM_invert_args") or {})}
    bad = sorted(set(fim) - set(MJRL_CG_DEFAULTS))
    if bad:
        raise ConfigError(f"npg_hp.FIM_invert_args.{bad[0]}: unknown key (iters, damping)")
    out += [f"overrides.cg_iters={int(fim['iters'])}", f"overrides.cg_damping={fim['damping']!r}"]
    if output is not None:
        out.append(f"hydra.run.dir={output}")
    return out


def main(output: str, config: str, device: str | None = None, dry_run: bool = False,
         extra: list[str] | None = None) -> int:
    """Translate ``config`` (an mjrl .txt file), print the ``fastmbrl train`` command, run it."""
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"--config {config}: no such file")
    job = parse_config(path.read_text(), name=str(path))
    overrides = to_overrides(job, output=output, device=device) + list(extra or [])
    from .train import run_translated

    return run_translated(overrides, dry_run)
