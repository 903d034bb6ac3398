"""Game-theoretic model-based NPG (Rajeswaran, Mordatch & Kumar, ICML 2020) as mjrl v2 runs it
(``projects/model_based_npg/run_model_based_npg.py``), read top to bottom.

    every iteration:  collect init_samples (first) / iter_samples real samples with the
                      stochastic policy (whole episodes, act_repeat) → FIFO buffer of whole
                      trajectories (≤ buffer_size samples), start-state buffer (grows forever)
                      → warm-started fit of every ensemble member (and the learned reward)
                      → inner_steps × [update_paths start states rolled through every member
                         (E × N paths, ≤ horizon steps) → GAE → one NPG step → baseline fit]
                      → evaluate the mean policy (eval_rollouts real episodes), log, checkpoint

PAL (policy-as-leader: few NPG steps, small buffer) and MAL (model-as-leader: many NPG steps,
large buffer) are two settings of the same loop (``overrides=npg_hopper_pal`` /
``npg_hopper_mal``). Config keys are mjrl's (docs/npg.md lists each one).

Differences from mjrl, each with its switch (``algorithm.*``) where results depend on it:

- discount: mjrl's run script never passes the config's gamma / gae_lambda, so PAL and MAL run
  with γ = 0.995, λ = 0.97; ``algorithm.discount_from_config=true`` uses the config's values.
- disagreement truncation (MOReL, ``overrides.pessimism_coef``): a truncated path ends
  ``terminated=true`` (bootstrap 0, the paper's absorbing HALT state); mjrl's code leaves every
  path ``terminated=false`` once truncation is on (``algorithm.original_truncation_bug=true``).
- the NPG step runs in float64 (``algorithm.npg_dtype=float32`` for mjrl's float32).
- every real transition is used for the model, including each path's last one (mjrl drops it).
- rewards: ``overrides.reward_file=env`` uses fastmbrl's reward function of the task,
  ``mjrl`` the mjrl reward file's formula (Hopper); ``overrides.termination`` likewise
  (``mjrl``: the file's stricter Hopper rule). With either, the file's ``obs_mask`` is applied
  as mjrl's environment applies it: the policy's input scale and the baseline's features.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .. import envs
from ..agents.npg import GaussianMLPPolicy, MLPBaseline, NPGConfig, compute_gae, npg_step
from ..envs import mjrl_fns
from ..models.residual import ResidualEnsemble
from ..ops.disagreement import ensemble_disagreement
from ..ops.mlp import ACTIVATIONS
from ..runs.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_run_checkpoint,
    set_rng_state,
)
from ..runs.logger import RunLogger, say
from ..runs.progress import StepProgress
from ..schema import ConfigError, check, spec

MIN_PATH_LENGTH = 5  # model paths shorter than this (after the termination cut) are dropped


# ---------------------------------------------------------------------------------------------
# Config schemas (checked by validate before anything is written)
# ---------------------------------------------------------------------------------------------
@dataclass
class NPGOverrides:
    """``overrides=npg_*``: mjrl's config keys (docs/npg.md)."""

    env: str = spec(help="fastmbrl task name (mjrl env_name)")
    act_repeat: int = spec(1, ge=1)
    num_iter: int = spec(50, ge=1)
    init_samples: int = spec(4000, ge=1)
    iter_samples: int = spec(1000, ge=1)
    eval_rollouts: int = spec(5, ge=0)
    num_models: int = spec(4, ge=1)
    learn_reward: bool = spec(False)
    reward_file: str = spec("env", choices=("env", "mjrl", "learned"))
    termination: str = spec("env", choices=("env", "mjrl", "none"))
    exp_notes: str | None = spec(None, nullable=True)
    hidden_size: list[int] = spec([512, 512], ge=1)
    activation: str = spec("relu", choices=ACTIVATIONS)
    fit_lr: float = spec(1e-3, gt=0.0)
    fit_wd: float = spec(0.0, ge=0.0)
    buffer_size: int = spec(10_000, ge=1)
    fit_mb_size: int = spec(200, ge=1)
    fit_epochs: int = spec(25, ge=1)
    refresh_fit: bool = spec(False)
    max_steps: int = spec(10_000, ge=1)
    init_log_std: float = spec(0.0, le=1.0)
    min_log_std: float = spec(-2.5, le=1.0)
    policy_size: list[int] = spec([64, 64], ge=1)
    inner_steps: int = spec(5, ge=1)
    step_size: float = spec(0.05, gt=0.0)
    gamma: float = spec(0.999, gt=0.0, le=1.0)
    gae_lambda: float = spec(0.97, ge=0.0, le=1.0)
    update_paths: int = spec(50, ge=1)
    start_state: str = spec("init", choices=("init", "buffer"))
    horizon: int = spec(500, ge=MIN_PATH_LENGTH)
    cg_iters: int = spec(25, ge=1)
    cg_damping: float = spec(1e-3, ge=0.0)
    hvp_frac: float = spec(1.0, gt=0.0, le=1.0)
    pessimism_coef: float | None = spec(None, nullable=True, ge=0.0)
    truncate_lim: float | None = spec(None, nullable=True, gt=0.0)
    truncate_reward: float = spec(0.0)


@dataclass
class NPGAlgorithm:
    """``algorithm=mbnpg``: switches between mjrl's behaviour and the paper's."""

    name: str = spec("mbnpg", choices=("mbnpg",))
    discount_from_config: bool = spec(False)
    effective_gamma: float = spec(0.995, gt=0.0, le=1.0)
    effective_gae_lambda: float = spec(0.97, ge=0.0, le=1.0)
    npg_dtype: str = spec("float64", choices=("float64", "float32"))
    cg_x0: str = spec("g", choices=("g", "zero"))
    original_truncation_bug: bool = spec(False)
    baseline_hidden_sizes: list[int] = spec([128, 128], ge=1)


def validate(cfg: DictConfig) -> None:
    """The overrides and algorithm groups against their schemas (raises ConfigError)."""
    o = cfg.overrides
    if "num_iter" not in o:
        raise ConfigError("algorithm=mbnpg needs an NPG overrides file: overrides=npg_hopper_pal, "
                          "npg_hopper_mal or npg_inverted_pendulum")
    check(o, NPGOverrides, "overrides")
    check(cfg.algorithm, NPGAlgorithm, "algorithm")
    try:
        task = envs.get_task(o.env)
    except ValueError as exc:
        raise ConfigError(f"overrides.env={o.env!r}: {exc}") from None
    if task.discrete:
        raise ConfigError(f"overrides.env={o.env!r}: NPG needs a continuous action space")
    if o.reward_file == "mjrl" and o.env not in mjrl_fns.REWARD_FNS:
        raise ConfigError(f"overrides.reward_file=mjrl: mjrl reward files exist for "
                          f"{', '.join(mjrl_fns.REWARD_FNS)}, not {o.env!r}")
    if o.termination == "mjrl" and o.env not in mjrl_fns.TERM_FNS:
        raise ConfigError(f"overrides.termination=mjrl: mjrl termination functions exist for "
                          f"{', '.join(mjrl_fns.TERM_FNS)}, not {o.env!r}")
    if (o.reward_file == "learned") != bool(o.learn_reward):
        raise ConfigError(f"overrides.reward_file={o.reward_file!r} with overrides."
                          f"learn_reward={o.learn_reward}: use reward_file=learned exactly when "
                          "learn_reward=true")
    if o.reward_file == "env" and envs.reward_fn(o.env) is None:
        raise ConfigError(f"overrides.reward_file=env: {o.env!r} has no reward function; use "
                          "learn_reward=true reward_file=learned")
    if o.pessimism_coef and o.num_models < 2:
        raise ConfigError(f"overrides.pessimism_coef={o.pessimism_coef}: disagreement needs "
                          f"num_models >= 2, got {o.num_models}")
    if o.min_log_std > o.init_log_std:
        raise ConfigError(f"overrides.min_log_std={o.min_log_std} is above overrides."
                          f"init_log_std={o.init_log_std}")


# ---------------------------------------------------------------------------------------------
# Real data: whole episodes with the stochastic policy, actions repeated act_repeat times
# ---------------------------------------------------------------------------------------------
def env_step_repeat(env, action: np.ndarray, act_repeat: int):
    """mjrl's ``GymEnv.step`` with act_repeat: the clipped action repeated, rewards summed,
    stopping at the end of the episode. Returns ``(obs, reward, terminated, truncated)``."""
    a = np.clip(action, env.action_space.low, env.action_space.high)
    total, terminated, truncated = 0.0, False, False
    for _ in range(act_repeat):
        obs, r, terminated, truncated, _ = env.step(a)
        total += float(r)
        if terminated or truncated:
            break
    return obs, total, terminated, truncated


@torch.no_grad()
def collect_paths(env, policy: GaussianMLPPolicy, num_samples: int, horizon: int,
                  act_repeat: int, sample: bool, gen: torch.Generator, device) -> list[dict]:
    """Whole episodes (≤ ``horizon`` agent steps) until ``num_samples`` agent steps are
    collected (the last episode may overshoot, as mjrl). A path holds ``obs [L+1, O]``,
    ``act [L, A]`` (the policy's unclipped action), ``rew [L]``, ``terminated``."""
    paths, total = [], 0
    while total < num_samples:
        obs, _ = env.reset()
        o, a, r = [obs], [], []
        terminated = False
        for _ in range(horizon):
            act = policy.act(torch.as_tensor(obs, dtype=torch.float32, device=device),
                             sample=sample, generator=gen).cpu().numpy()
            obs, rew, terminated, truncated = env_step_repeat(env, act, act_repeat)
            o.append(obs)
            a.append(act)
            r.append(rew)
            if terminated or truncated:
                break
        paths.append({"obs": torch.as_tensor(np.array(o), dtype=torch.float32),
                      "act": torch.as_tensor(np.array(a), dtype=torch.float32),
                      "rew": torch.as_tensor(np.array(r), dtype=torch.float32),
                      "terminated": bool(terminated)})
        total += len(a)
    return paths


def evaluate(env, policy, num_episodes: int, horizon: int, act_repeat: int, gen, device) -> float:
    """Mean return of ``num_episodes`` real episodes with the mean action (mjrl's eval_score)."""
    paths = [collect_paths(env, policy, 1, horizon, act_repeat, False, gen, device)[0]
             for _ in range(num_episodes)]
    return float(np.mean([float(p["rew"].sum()) for p in paths]))


# ---------------------------------------------------------------------------------------------
# Model rollouts: the same start states through every member, one batched loop on the device
# ---------------------------------------------------------------------------------------------
@dataclass
class PathBatch:
    """Padded model paths: ``obs [P, T, O]``, ``act [P, T, A]``, ``rew [P, T]``,
    ``lengths [P]`` (long), ``terminated [P]`` (bool), ``truncated [P]`` (bool, by
    disagreement). Path ``p = e·N + n`` is start state n through member e (model-major)."""

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    lengths: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        t = torch.arange(self.obs.shape[1], device=self.obs.device)
        return t.unsqueeze(0) < self.lengths.unsqueeze(1)

    def returns(self) -> torch.Tensor:
        return torch.where(self.valid, self.rew, 0.0).sum(1)


def first_true(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the first True of each row of ``mask [P, T]`` and whether there is one."""
    T = mask.shape[1]
    t = torch.arange(T, device=mask.device).expand_as(mask)
    first = torch.where(mask, t, T).amin(1)
    return first, first < T


@torch.no_grad()
def model_rollout(model: ResidualEnsemble, policy: GaussianMLPPolicy, starts: torch.Tensor,
                  horizon: int, reward_fn, term_fn, act_repeat: int, truncate_lim: float | None,
                  truncate_reward: float = 0.0, truncation_terminates: bool = True,
                  gen: torch.Generator | None = None, noise: torch.Tensor | None = None,
                  min_length: int = MIN_PATH_LENGTH) -> PathBatch:
    """Roll ``starts [N, O]`` through every member for ``horizon`` steps (mjrl
    ``sampling.policy_rollout`` + ``model_based_npg.train_step``).

    Per step t, for every path: ``a_t = μ(s_t) + ε_t·exp(log_std)`` (ε from ``gen``, or
    ``noise [horizon, E, N, A]``), actions and states clamped to ±100, ``s_{t+1} = f_e(s_t,
    a_t)``, ``r_t = reward_fn(s_t, a_t, s_{t+1})`` (known: ×act_repeat; ``None``: the learned
    reward). After the loop: cut at the first state ``term_fn`` marks (kept, ``T = t+1``,
    terminated), drop paths shorter than ``min_length``, then with ``truncate_lim`` cut at the
    first ``t < T-1`` where the members' disagreement on ``(s_t, a_t)`` exceeds it
    (``T = max(4, t+1)``, ``truncate_reward`` added to the last reward, terminated unless
    ``truncation_terminates`` is false, which reproduces mjrl: every path then ends
    terminated=false).
    """
    E, (N, O) = model.ensemble_size, starts.shape
    A = policy.act_dim
    dev = starts.device
    s = starts.to(torch.float32).unsqueeze(0).expand(E, N, O).clamp(-100.0, 100.0)
    obs = torch.empty(horizon, E, N, O, device=dev)
    act = torch.empty(horizon, E, N, A, device=dev)
    rew = torch.empty(horizon, E, N, device=dev)
    unc = torch.empty(horizon, E, N, device=dev) if truncate_lim is not None else None
    std = policy.log_std.detach().exp()
    eye = torch.arange(E, device=dev)
    for t in range(horizon):
        eps = (noise[t] if noise is not None
               else torch.randn(E, N, A, generator=gen, device=dev))
        a = (policy.mean(s) + eps * std).clamp(-100.0, 100.0)
        if unc is not None:  # every member on every path: disagreement, own member's step
            preds = model.predict(s.reshape(E * N, O), a.reshape(E * N, A))  # [E, E·N, O]
            unc[t] = ensemble_disagreement(preds).view(E, N)
            sp = preds.view(E, E, N, O)[eye, eye]
        else:
            sp = model.predict(s, a)
        r = model.predict_reward(s, a, sp) if reward_fn is None else \
            reward_fn(s, a, sp) * act_repeat
        obs[t], act[t], rew[t] = s, a, r
        s = sp.clamp(-100.0, 100.0)

    def paths_first(x):  # [H, E, N, ...] -> [E·N, H, ...]
        return x.movedim(0, 2).reshape(E * N, horizon, *x.shape[3:])

    obs, act, rew = paths_first(obs), paths_first(act), paths_first(rew)
    P = E * N
    lengths = torch.full((P,), horizon, dtype=torch.long, device=dev)
    terminated = torch.zeros(P, dtype=torch.bool, device=dev)
    if term_fn is not None:
        first, any_done = first_true(term_fn(obs))
        lengths = torch.where(any_done, first + 1, lengths)
        terminated = any_done
    keep = (lengths >= min_length).nonzero().squeeze(-1)
    obs, act, rew = obs[keep], act[keep], rew[keep]
    lengths, terminated = lengths[keep], terminated[keep]
    truncated = torch.zeros_like(terminated)
    if unc is not None:
        u = paths_first(unc)[keep]
        t_idx = torch.arange(horizon, device=dev).unsqueeze(0)
        over = (u > truncate_lim) & (t_idx < (lengths - 1).unsqueeze(1))
        first, any_over = first_true(over)
        cut = torch.clamp(first + 1, min=4)
        truncated = any_over & (cut < lengths)
        lengths = torch.where(truncated, cut, lengths)
        last = (lengths - 1).unsqueeze(1)
        rew = rew.scatter_add(1, last, torch.where(truncated, truncate_reward, 0.0)
                              .unsqueeze(1).to(rew.dtype))
        terminated = (terminated | truncated) if truncation_terminates \
            else torch.zeros_like(terminated)
    return PathBatch(obs, act, rew, lengths, terminated, truncated)


@torch.no_grad()
def disagreement_threshold(model: ResidualEnsemble, s: torch.Tensor, a: torch.Tensor,
                           chunk: int = 8192) -> float:
    """MOReL's δ_max: the largest member disagreement over the data's ``(s, a)`` pairs."""
    best = 0.0
    for i in range(0, s.shape[0], chunk):
        u = ensemble_disagreement(model.predict(s[i:i + chunk], a[i:i + chunk]))
        best = max(best, float(u.max()))
    return best


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
def known_reward(o: DictConfig):
    """``r(s, a, s')`` of ``overrides.reward_file`` (None: learned)."""
    if o.reward_file == "learned":
        return None
    if o.reward_file == "mjrl":
        fn = mjrl_fns.REWARD_FNS[o.env]
        return lambda s, a, sp: fn(s, a)
    return envs.reward_fn(o.env)


def termination_of(o: DictConfig):
    """``done(s_t)`` of ``overrides.termination`` (None: never)."""
    if o.termination == "none":
        return None
    if o.termination == "mjrl":
        return mjrl_fns.TERM_FNS[o.env]
    return envs.term_fn(o.env)


def build_model(o: DictConfig, obs_dim: int, act_dim: int, seed: int, device) -> ResidualEnsemble:
    return ResidualEnsemble(obs_dim, act_dim, ensemble_size=int(o.num_models),
                            hidden_sizes=tuple(o.hidden_size), activation=o.activation,
                            learn_reward=bool(o.learn_reward), lr=float(o.fit_lr),
                            weight_decay=float(o.fit_wd), seed=seed, device=device)


def train(cfg: DictConfig, run_dir: str | Path, device: torch.device) -> float:
    """Run model-based NPG in ``run_dir`` (resuming from its last checkpoint if ``cfg.resume``).
    Returns the best evaluation score."""
    run_dir = Path(run_dir)
    o, alg = cfg.overrides, cfg.algorithm
    seed = int(cfg.seed)
    torch.manual_seed(seed)
    np.random.seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)

    # ---- environments, model, policy, baseline -----------------------------------------------
    env = envs.make_env(o.env, seed=seed)
    test_env = envs.make_env(o.env, seed=seed + 10_000)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    act_repeat = int(o.act_repeat)
    env_horizon = min(int(o.horizon), envs.get_task(o.env).max_episode_steps // act_repeat)
    model = build_model(o, obs_dim, act_dim, seed, device)
    policy = GaussianMLPPolicy(obs_dim, act_dim, tuple(o.policy_size), o.init_log_std,
                               o.min_log_std, seed=seed).to(device)
    baseline = MLPBaseline(obs_dim, tuple(alg.baseline_hidden_sizes), seed=seed).to(device)
    reward_fn, term_fn = known_reward(o), termination_of(o)
    if "mjrl" in (o.reward_file, o.termination):  # mjrl's file brings its obs_mask
        mask = torch.tensor(mjrl_fns.OBS_MASKS[o.env], device=device)
        policy.in_scale.copy_(1.0 / mask)  # (s - 0)/(1/mask) = mask ⊙ s: the masked obs
        baseline.obs_scale.copy_(mask)
    gamma, lam = ((o.gamma, o.gae_lambda) if alg.discount_from_config
                  else (alg.effective_gamma, alg.effective_gae_lambda))
    npg_cfg = NPGConfig(normalized_step_size=float(o.step_size), cg_iters=int(o.cg_iters),
                        cg_damping=float(o.cg_damping), cg_x0=alg.cg_x0,
                        hvp_sample_frac=float(o.hvp_frac), dtype=alg.npg_dtype)

    # ---- state: fresh, or restored from the last checkpoint ----------------------------------
    paths: list[dict] = []
    init_states: list[torch.Tensor] = []
    iteration = num_samples = 0
    best_eval, wall_time_before = -math.inf, 0.0
    env_rngs = [env.unwrapped.np_random, test_env.unwrapped.np_random]
    ckpt_path = latest_checkpoint(run_dir) if cfg.resume else None
    if ckpt_path is not None:
        state = load_checkpoint(ckpt_path, map_location=device, weights_only=False)
        model.load_full_state_dict(state["model"])
        policy.load_state_dict(state["policy"])
        baseline.load_state_dict(state["baseline"])
        baseline.optimizer.load_state_dict(state["baseline_optimizer"])
        paths, init_states = state["paths"], state["init_states"]
        iteration, num_samples = state["iteration"], state["num_samples"]
        best_eval, wall_time_before = state["best_eval"], state["wall_time_s"]
        set_rng_state(state["rng"], generators=[gen], numpy_generators=env_rngs)
        say(f"resumed from {ckpt_path}: iteration {iteration}, {num_samples} env steps")
    logger = RunLogger(run_dir, use_tensorboard=cfg.use_tensorboard, use_wandb=cfg.use_wandb,
                       wandb_kwargs=dict(project=cfg.wandb_project_name,
                                         group=cfg.wandb_group_name,
                                         config=OmegaConf.to_container(cfg, resolve=True)),
                       resume_step=num_samples if ckpt_path is not None else None)

    def checkpoint() -> None:
        logger.flush()
        save_run_checkpoint(run_dir, num_samples, {
            "iteration": iteration, "num_samples": num_samples, "best_eval": best_eval,
            "wall_time_s": wall_time_before + time.perf_counter() - t_start,
            "model": model.full_state_dict(), "policy": policy.state_dict(),
            "baseline": baseline.state_dict(),
            "baseline_optimizer": baseline.optimizer.state_dict(),
            "paths": paths, "init_states": init_states,
            "rng": rng_state(generators=[gen], numpy_generators=env_rngs),
            "config": OmegaConf.to_container(cfg, resolve=True),
        }, keep_last=cfg.keep_checkpoints)

    show = {"auto": None, True: True, False: False}.get(cfg.progress, None)
    progress = StepProgress(int(o.num_iter), initial=iteration, desc="iterations",
                            disable=None if show is None else not show)
    t_start = time.perf_counter()
    while iteration < int(o.num_iter):
        t0 = time.perf_counter()
        # ---- 1-3. real data, start states, FIFO buffer of whole trajectories ----------------
        n_collect = int(o.init_samples) if iteration == 0 else int(o.iter_samples)
        new_paths = collect_paths(env, policy, n_collect, env_horizon, act_repeat, True, gen,
                                  device)
        paths += new_paths
        init_states += [p["obs"][0] for p in new_paths]
        while sum(len(p["act"]) for p in paths) > int(o.buffer_size) and len(paths) > 1:
            paths.pop(0)
        new_steps = sum(len(p["act"]) for p in new_paths)
        num_samples += new_steps * act_repeat
        train_score = float(np.mean([float(p["rew"].sum()) for p in new_paths]))

        # ---- 4. model fit (warm-started; refresh_fit: a fresh model every iteration) ---------
        t1 = time.perf_counter()
        if o.refresh_fit:
            model = build_model(o, obs_dim, act_dim, seed + 123 * iteration, device)
        s = torch.cat([p["obs"][:-1] for p in paths]).to(device)
        a = torch.cat([p["act"] for p in paths]).to(device)
        sp = torch.cat([p["obs"][1:] for p in paths]).to(device)
        r = torch.cat([p["rew"] for p in paths]).to(device)
        gen_loss = model.mse(s[-new_steps:], a[-new_steps:], sp[-new_steps:]).mean()
        dyn_loss = model.fit(s, a, sp, int(o.fit_epochs), int(o.max_steps), int(o.fit_mb_size),
                             gen)
        rew_loss = (model.fit_reward(s, a, sp, r, int(o.fit_epochs), int(o.max_steps),
                                     int(o.fit_mb_size), gen) if o.learn_reward else math.nan)
        truncate_lim = None
        if o.truncate_lim is not None:
            truncate_lim = float(o.truncate_lim)
        elif o.pessimism_coef:
            truncate_lim = disagreement_threshold(model, s, a) / float(o.pessimism_coef)

        # ---- 5. inner NPG steps on model rollouts ------------------------------------------
        t2 = time.perf_counter()
        starts_all = torch.stack(init_states).to(device)
        stats: dict[str, float] = {}
        for _ in range(int(o.inner_steps)):
            n = int(o.update_paths)
            if o.start_state == "init":
                idx = torch.randint(len(init_states), (n,), generator=gen, device=device)
                starts = starts_all[idx]
            else:  # half start states, half replay states (mjrl's 'buffer' mode)
                i1 = torch.randint(len(init_states), (n // 2,), generator=gen, device=device)
                i2 = torch.randint(s.shape[0], (n - n // 2,), generator=gen, device=device)
                starts = torch.cat([starts_all[i1], s[i2]])
            batch = model_rollout(model, policy, starts, int(o.horizon), reward_fn, term_fn,
                                  act_repeat, truncate_lim, float(o.truncate_reward),
                                  not alg.original_truncation_bug, gen)
            if batch.lengths.numel() == 0:
                stats = {"model_paths": 0.0}
                continue
            values = baseline.predict(batch.obs)
            adv, ret = compute_gae(batch.rew, values, batch.lengths, batch.terminated, gamma, lam)
            valid = batch.valid
            stats = npg_step(policy, batch.obs[valid], batch.act[valid], adv[valid], npg_cfg, gen)
            stats["baseline_loss"] = baseline.fit(batch.obs, ret, valid, gen)
            stats["model_score"] = float(batch.returns().mean())
            stats["model_paths"] = float(batch.lengths.numel())
            stats["model_path_length"] = float(batch.lengths.float().mean())
            stats["truncated_fraction"] = float(batch.truncated.float().mean())

        # ---- 6. evaluation of the mean policy, log, checkpoint ------------------------------
        t3 = time.perf_counter()
        eval_score = (evaluate(test_env, policy, int(o.eval_rollouts), env_horizon, act_repeat,
                               gen, device) if int(o.eval_rollouts) > 0 else math.nan)
        best_eval = max(best_eval, eval_score if not math.isnan(eval_score) else train_score)
        iteration += 1
        t4 = time.perf_counter()
        logger.log(num_samples, num_samples=num_samples, iteration=iteration,
                   train_score=train_score, eval_score=eval_score, episode_return=eval_score,
                   dyn_loss=dyn_loss, dyn_loss_gen=float(gen_loss), rew_loss=rew_loss,
                   truncate_lim=math.nan if truncate_lim is None else truncate_lim,
                   buffer_samples=sum(len(p["act"]) for p in paths),
                   data_collect_time=t1 - t0, model_update_time=t2 - t1,
                   policy_update_time=t3 - t2, eval_time=t4 - t3, iter_time=t4 - t0,
                   wall_time_s=wall_time_before + time.perf_counter() - t_start, **stats)
        progress.update(1)
        progress.set_return(eval_score)
        progress.write(f"iteration {iteration}: {num_samples} env steps, train_score "
                       f"{train_score:.1f}, eval_score {eval_score:.1f}")
        every = int(cfg.checkpoint_every_epochs)
        if (every and iteration % every == 0) or iteration >= int(o.num_iter):
            checkpoint()
    progress.close()
    logger.close()
    return best_eval
