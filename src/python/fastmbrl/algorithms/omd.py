"""OMD (Nikishin et al. 2022, "Control-Oriented Model-Based RL with Implicit Differentiation")
on CartPole and MuJoCo, with its MLE and VEP baselines, read top to bottom.

The model θ is trained so that the Q-function φ*(θ) obtained on *model* data does well on *real*
data (a bilevel problem):

    φ*(θ) ≈ argmin_φ L_in(φ, θ)   (one inner step on the TD loss with model data (r̂_θ, ŝ'_θ))
    θ ← θ − lr · ∇_θ L_out(φ*(θ))  (L_out: the same TD loss on the real (r, s') at φ*)
    ∇_θ L_out = −(∂²L_in/∂θ∂φ) [∂²L_in/∂φ²]⁻¹ ∇_φ L_out          (fastmbrl.implicit)

with the inverse replaced by the identity (the original's default) or solved by CG
(``overrides.with_inv_jac`` on CartPole, ``algorithm.inverse=cg`` anywhere).

Two variants (``overrides.variant``), one loop each below:

``cartpole``  (overrides/omd_cartpole.yaml; the original's cartpole/) soft double-Q with a
              Boltzmann policy (agents/soft_q.py), ε-exploration, float64 parameters; agents
              ``omd``, ``mle`` (model by MSE, Q on model data) and ``vep`` (model by the value
              equivalence loss of 5 random frozen value functions).
``mujoco``    (overrides/omd_halfcheetah.yaml; the original's mujoco/) SAC (agents/sac.py): the
              inner step is a whole SAC update on model data (critic, actor on real
              observations, temperature, Polyak); algos ``omd`` and ``mle``.

Every difference from the original and its switch is listed in docs/omd.md.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .. import envs
from ..agents import SAC, SACConfig
from ..agents.soft_q import SoftDoubleQ
from ..buffers import ReplayBuffer
from ..implicit import INVERSES, minimizer_vjp
from ..models.omd_models import DynamicsModel, init_mlp, leaf_params, mlp
from ..ops.mlp import ensemble_mlp_reference
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
from .common import evaluate as evaluate_sac


# ---- configuration ------------------------------------------------------------------------------
@dataclass
class OMDAlgorithm:
    """``algorithm`` group (conf/algorithm/omd.yaml)."""

    name: str = spec("omd", choices=("omd",))
    inverse: str | None = spec(None, nullable=True, choices=INVERSES,
                               help="null: the original's (identity; cartpole with_inv_jac: cg)")
    cg_maxiter: int = spec(100, ge=1)
    cg_damping: float = spec(1e-5, ge=0.0)
    cg_tol: float = spec(1e-5, gt=0.0)
    neumann_step: float = spec(0.01, gt=0.0)
    neumann_maxiter: int = spec(20, ge=1)


@dataclass
class OMDCartPoleOverrides:
    """``overrides`` of the cartpole variant (flags of the original cartpole/train.py)."""

    variant: str = spec("cartpole", choices=("cartpole",))
    env: str = spec("cartpole")
    agent_type: str = spec("omd", choices=("omd", "mle", "vep"))
    num_steps: int = spec(200_000, ge=1)
    hidden_dim: int = spec(32, ge=1)
    model_hidden_dim: int = spec(32, ge=1)
    batch_size: int = spec(256, ge=1)
    init_steps: int = spec(1000, ge=0)
    eval_frequency: int = spec(1000, ge=1)
    log_frequency: int = spec(1000, ge=1)
    num_Q_steps: int = spec(1, ge=1)
    num_T_steps: int = spec(1, ge=1)
    num_ensemble_vep: int = spec(5, ge=1)
    eps: float = spec(0.1, ge=0.0, le=1.0)
    discount: float = spec(0.99, ge=0.0, le=1.0)
    lr: float = spec(1e-3, gt=0.0)
    inner_lr: float = spec(3e-4, gt=0.0)
    alpha: float = spec(0.01, gt=0.0)
    tau: float = spec(0.01, gt=0.0, le=1.0)
    hard: bool = spec(False)
    no_learn_reward: bool = spec(False)
    prob_model: bool = spec(False)
    no_warm: bool = spec(False)
    warm_opt: bool = spec(False)
    no_double: bool = spec(False)
    with_inv_jac: bool = spec(False)
    num_eval_episodes: int = spec(10, ge=1)
    eval_greedy: bool = spec(False)
    sample_without_replacement: bool = spec(True)
    float64: bool = spec(True)


@dataclass
class OMDMujocoOverrides:
    """``overrides`` of the mujoco variant (flags and ``--config.*`` of mujoco/train.py)."""

    variant: str = spec("mujoco", choices=("mujoco",))
    env: str = spec("halfcheetah")
    algo: str = spec("omd", choices=("omd", "mle"))
    num_steps: int = spec(1_000_000, ge=1)
    start_training: int = spec(10_000, ge=0)
    batch_size: int = spec(256, ge=1)
    eval_interval: int = spec(5000, ge=1)
    eval_episodes: int = spec(10, ge=1)
    log_interval: int = spec(1000, ge=1)
    dim_distract: int = spec(0, ge=0)
    model_lr: float = spec(3e-4, gt=0.0)
    actor_lr: float = spec(3e-4, gt=0.0)
    critic_lr: float = spec(3e-4, gt=0.0)
    temp_lr: float = spec(3e-4, gt=0.0)
    hidden_dims: list[int] = spec([256, 256], ge=1)
    model_hidden_dim: int = spec(64, ge=1)
    discount: float = spec(0.99, ge=0.0, le=1.0)
    outer_steps: int = spec(1, ge=1)
    inner_steps: int = spec(1, ge=1)
    tau: float = spec(0.005, gt=0.0, le=1.0)
    target_update_period: int = spec(1, ge=1)
    init_temperature: float = spec(1.0, gt=0.0)
    target_entropy: float | None = spec(None, nullable=True)
    replay_buffer_size: int | None = spec(None, nullable=True, ge=1)


def validate(cfg: DictConfig) -> None:
    """OMD's config groups; raises ConfigError naming the key, the value and what is allowed."""
    check(cfg.algorithm, OMDAlgorithm, "algorithm")
    o = cfg.overrides
    variant = o.get("variant")
    schemas = {"cartpole": OMDCartPoleOverrides, "mujoco": OMDMujocoOverrides}
    if variant not in schemas:
        raise ConfigError(f"overrides.variant={variant!r}: allowed values are cartpole, mujoco "
                          "(use overrides=omd_cartpole or overrides=omd_halfcheetah)")
    check(o, schemas[variant], "overrides")
    try:
        task = envs.get_task(o.env)
    except ValueError as exc:
        raise ConfigError(f"overrides.env={o.env!r}: {exc}") from None
    if variant == "cartpole" and not task.discrete:
        raise ConfigError(f"overrides.env={o.env!r}: the cartpole variant needs a discrete-action"
                          " task (cartpole)")
    if variant == "mujoco" and task.discrete:
        raise ConfigError(f"overrides.env={o.env!r}: the mujoco variant needs a continuous-action"
                          " task (halfcheetah, hopper, ...)")
    if variant == "mujoco" and len(set(o.hidden_dims)) != 1:
        raise ConfigError(f"overrides.hidden_dims={list(o.hidden_dims)}: agents/sac.py builds "
                          "equal hidden layers; give one size repeated, e.g. [256,256]")
    if variant == "cartpole" and o.agent_type == "vep" and o.prob_model:
        raise ConfigError("overrides.prob_model=true: not available with overrides.agent_type=vep"
                          " (the original asserts the same)")


def inverse_kwargs(cfg: DictConfig) -> tuple[str, dict]:
    """The inverse of the implicit gradient and its options."""
    a, o = cfg.algorithm, cfg.overrides
    inverse = a.inverse
    if inverse is None:
        inverse = "cg" if o.get("with_inv_jac", False) else "identity"
    kw: dict = {}
    if inverse == "cg":
        kw = dict(damping=float(a.cg_damping), maxiter=int(a.cg_maxiter), tol=float(a.cg_tol))
    elif inverse == "neumann":
        kw = dict(step=float(a.neumann_step), maxiter=int(a.neumann_maxiter))
    elif inverse == "exact":
        kw = dict(damping=float(a.cg_damping))
    return inverse, kw


def train(cfg: DictConfig, run_dir: str | Path, device: torch.device) -> float:
    if cfg.overrides.variant == "cartpole":
        return train_cartpole(cfg, Path(run_dir), device)
    return train_mujoco(cfg, Path(run_dir), device)


# ---- shared run plumbing -------------------------------------------------------------------------
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _logger(cfg: DictConfig, run_dir: Path, resume_step: int | None) -> RunLogger:
    return RunLogger(run_dir, use_tensorboard=cfg.use_tensorboard, use_wandb=cfg.use_wandb,
                     wandb_kwargs=dict(project=cfg.wandb_project_name,
                                       group=cfg.wandb_group_name,
                                       config=OmegaConf.to_container(cfg, resolve=True)),
                     resume_step=resume_step)


def _progress(cfg: DictConfig, total: int, initial: int) -> StepProgress:
    show = {"auto": None, True: True, False: False}.get(cfg.progress, None)
    return StepProgress(total, initial=initial, disable=None if show is None else not show)


def _sample_idx(n: int, batch: int, without_replacement: bool, gen: torch.Generator):
    if without_replacement and batch <= n:
        return torch.randperm(n, generator=gen)[:batch]
    return torch.randint(0, n, (batch,), generator=gen)


@torch.no_grad()
def evaluate_q(env, agent: SoftDoubleQ, episodes: int, greedy: bool, gen) -> float:
    """Average return of the Boltzmann policy (the original samples it) or its argmax."""
    total = 0.0
    for _ in range(episodes):
        obs, _ = env.reset()
        done = False
        while not done:
            obs_t = torch.as_tensor(obs, dtype=agent.dtype)
            if greedy:
                q = agent.q_values(agent.params, obs_t.view(1, -1))
                q = 0.5 * (q[0] + q[1]) if agent.double else q[0]
                a = int(q.argmax(-1))
            else:
                a = agent.act(obs_t, gen)
            obs, r, term, trunc, _ = env.step(a)
            total += float(r)
            done = term or trunc
    return total / episodes


# ==== CartPole ====================================================================================
def train_cartpole(cfg: DictConfig, run_dir: Path, device: torch.device) -> float:
    """The original's cartpole/train.py + omd.py. Returns the best evaluation return."""
    o = cfg.overrides
    seed = int(cfg.seed)
    _seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)  # batches, Boltzmann actions, model noise
    rng = np.random.default_rng(seed)  # ε-exploration
    dtype = torch.float64 if o.float64 else torch.float32
    inverse, inv_kw = inverse_kwargs(cfg)

    # ---- environments, agent, model, buffer ------------------------------------------------------
    env = envs.make_env(o.env, seed=seed)
    eval_env = envs.make_env(o.env, seed=seed)  # the original seeds both with --seed
    obs_dim, n_act = env.observation_space.shape[0], int(env.action_space.n)
    agent = SoftDoubleQ(obs_dim, n_act, o.hidden_dim, alpha=o.alpha, gamma=o.discount,
                        tau=o.tau, lr=o.inner_lr, double=not o.no_double, hard=o.hard, gen=gen,
                        dtype=dtype)
    model = DynamicsModel(obs_dim, obs_dim + n_act, o.model_hidden_dim, split=True,
                          gaussian=o.prob_model, learn_reward=not o.no_learn_reward,
                          final_gain=0.01, gen=gen, dtype=dtype)
    theta = leaf_params(model.init, "cpu")
    model_optim = torch.optim.Adam(list(theta.values()), lr=o.lr)
    # VEP: random value functions, never trained (orthogonal init, last layer 0.01)
    v_params = init_mlp(o.num_ensemble_vep, [obs_dim, o.hidden_dim, o.hidden_dim, 1], 0.01,
                        gen, dtype) if o.agent_type == "vep" else None
    buffer = ReplayBuffer(int(o.num_steps), (obs_dim,), (), dtype=torch.float32,
                          act_dtype=torch.long)

    def batch():
        idx = _sample_idx(len(buffer), int(o.batch_size), o.sample_without_replacement, gen)
        d = buffer.get_all()
        s, s2 = d.obs[idx].to(dtype), d.next_obs[idx].to(dtype)
        return s, d.act[idx], d.reward[idx].to(dtype), s2, (~d.terminated[idx]).to(dtype)

    def model_input(s, a):
        return torch.cat([s, torch.nn.functional.one_hot(a, n_act).to(dtype)], -1)

    def predict(params, s, a, noise):
        nxt, mean, log_std, r_hat = model(params, model_input(s, a), noise)
        return nxt, mean, log_std, r_hat

    def noise_for(s):
        return torch.randn(s.shape, generator=gen, dtype=dtype) if o.prob_model else None

    def mle_loss(params, s, a, r, s2, noise):
        nxt, mean, log_std, r_hat = predict(params, s, a, noise)
        if o.prob_model:  # Gaussian NLL of the next state
            nll = (0.5 * ((s2 - mean) / log_std.exp()) ** 2 + log_std
                   + 0.5 * math.log(2 * math.pi)).sum(-1).mean()
        else:
            nll = ((nxt - s2) ** 2).sum(-1).mean()
        if o.agent_type == "vep":
            v_real, v_pred = mlp(v_params, s2), mlp(v_params, nxt)  # [K, B, 1]
            loss = ((v_real - v_pred) ** 2).mean((1, 2)).sum()
        else:
            loss = nll
        if r_hat is not None:
            loss = loss + ((r_hat - r) ** 2).mean()
        return loss, nll

    # ---- one update per env step (after init_steps) ---------------------------------------------
    def update_omd() -> dict[str, float]:
        s, a, r, s2, nd = batch()
        noise = noise_for(s)
        if o.no_warm:  # fresh Q, target = Q
            agent.reinitialise(gen)
        if not o.warm_opt:  # the original: a fresh Adam state per inner solve
            agent.reset_optimizer()
        with torch.no_grad():
            nxt, _, _, r_hat = predict(theta, s, a, noise)
            r_model = r if r_hat is None else r_hat
        nll = float(((nxt - s2) ** 2).sum(-1).mean())
        info: dict[str, float] = {}
        for _ in range(int(o.num_Q_steps)):  # forward solve: φ* ≈ Adam steps on model data
            info = agent.step(s, a, r_model, nxt, nd)
        target = {k: v.clone() for k, v in agent.target.items()}  # after Polyak
        phi = {k: v.detach() for k, v in agent.params.items()}
        # outer loss on the real data at φ*
        phi_g = {k: v.clone().requires_grad_(True) for k, v in phi.items()}
        loss_out = agent.loss(phi_g, target, s, a, r, s2, nd)
        ubar = torch.autograd.grad(loss_out, list(phi_g.values()))
        ubar = dict(zip(phi_g, ubar, strict=True))

        def inner_loss(q_params, model_params):
            nxt_, _, _, r_hat_ = predict(model_params, s, a, noise)
            return agent.loss(q_params, target, s, a, r if r_hat_ is None else r_hat_, nxt_, nd)

        grads, inv_info = minimizer_vjp(inner_loss, phi, {k: v.detach() for k, v in
                                                          theta.items()}, ubar, inverse,
                                        **inv_kw)
        model_optim.zero_grad(set_to_none=True)
        for k, p in theta.items():
            p.grad = grads[k]
        model_optim.step()
        with torch.no_grad():
            q = agent.q_values(agent.params, s)
        return {"loss_T": float(loss_out.detach()), "loss_Q": info["loss_Q"],
                "grad_norm_Q": info["grad_norm_Q"], "vals_Q": float(q.mean()),
                "next_obs_nll": nll, "inverse_iterations": inv_info["iterations"]}

    def update_mle_vep() -> dict[str, float]:
        for _ in range(int(o.num_T_steps)):
            s, a, r, s2, _ = batch()
            loss_t, nll = mle_loss(theta, s, a, r, s2, noise_for(s))
            model_optim.zero_grad(set_to_none=True)
            loss_t.backward()
            model_optim.step()
        info: dict[str, float] = {}
        for _ in range(int(o.num_Q_steps)):
            s, a, r, s2, nd = batch()
            with torch.no_grad():
                nxt, _, _, r_hat = predict(theta, s, a, noise_for(s))
            info = agent.step(s, a, r if r_hat is None else r_hat, nxt, nd)
        return {"loss_T": float(loss_t.detach()), "loss_Q": info["loss_Q"],
                "grad_norm_Q": info["grad_norm_Q"], "next_obs_nll": float(nll.detach())}

    update = update_omd if o.agent_type == "omd" else update_mle_vep

    # ---- state: fresh, or restored from the last checkpoint --------------------------------------
    step = episode = 0
    best_eval, wall_before, skip_eval = -math.inf, 0.0, False
    env_rngs = [rng, env.unwrapped.np_random, eval_env.unwrapped.np_random,
                env.action_space.np_random]
    ckpt = latest_checkpoint(run_dir) if cfg.resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, weights_only=False)
        agent.load_state_dict(state["agent"])
        with torch.no_grad():
            for k, p in theta.items():
                p.copy_(state["model"][k])
        model_optim.load_state_dict(state["model_optim"])
        buffer.load_state_dict(state["buffer"])
        step, episode, best_eval = state["step"], state["episode"], state["best_eval"]
        wall_before, skip_eval = state["wall_time_s"], True
        set_rng_state(state["rng"], generators=[gen], numpy_generators=env_rngs)
        say(f"resumed from {ckpt}: env step {step} (a new episode starts)")
    logger = _logger(cfg, run_dir, step if ckpt is not None else None)
    t0 = time.perf_counter()
    evals_done = 0

    def checkpoint() -> None:
        logger.flush()
        save_run_checkpoint(run_dir, step, {
            "step": step, "episode": episode, "best_eval": best_eval,
            "wall_time_s": wall_before + time.perf_counter() - t0,
            "agent": agent.state_dict(), "model": {k: v.detach() for k, v in theta.items()},
            "model_optim": model_optim.state_dict(), "buffer": buffer.state_dict(),
            "rng": rng_state(generators=[gen], numpy_generators=env_rngs),
            "config": OmegaConf.to_container(cfg, resolve=True),
        }, keep_last=cfg.keep_checkpoints)

    def eval_and_log(last: dict) -> None:
        nonlocal best_eval, evals_done
        ret = evaluate_q(eval_env, agent, int(o.num_eval_episodes), o.eval_greedy, gen)
        best_eval = max(best_eval, ret)
        logger.log(step, episode=episode, episode_return=ret,
                   wall_time_s=wall_before + time.perf_counter() - t0, **last)
        progress.write(f"env step {step}: eval return {ret:.1f}")
        evals_done += 1
        every = int(cfg.checkpoint_every_epochs)
        if (every and evals_done % every == 0) or step >= o.num_steps:
            checkpoint()

    # ---- main loop (the original's train.py) -----------------------------------------------------
    progress = _progress(cfg, int(o.num_steps), step)
    obs, _ = env.reset()
    episode_return, last = 0.0, {}
    while step < o.num_steps:
        if step % o.eval_frequency == 0 and not skip_eval:
            eval_and_log(last)
        skip_eval = False
        if rng.random() < o.eps or step < o.init_steps:
            action = int(env.action_space.sample())
        else:
            action = agent.act(torch.as_tensor(obs), gen)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, next_obs, reward, terminated, truncated)
        episode_return += float(reward)
        obs = next_obs
        step += 1
        progress.update(1)
        if terminated or truncated:
            logger.log(step, group="train", episode=episode, episode_return=episode_return)
            progress.set_return(episode_return)
            obs, _ = env.reset()
            episode_return = 0.0
            episode += 1
        if step >= o.init_steps:
            last = update()
            if step % o.log_frequency == 0:
                logger.log(step, group="updates", **last)
    eval_and_log(last)  # final evaluation, as the original
    progress.close()
    logger.close()
    return best_eval


# ==== MuJoCo ======================================================================================
def train_mujoco(cfg: DictConfig, run_dir: Path, device: torch.device) -> float:
    """The original's mujoco/train.py + agents/omd. Returns the best evaluation return."""
    o = cfg.overrides
    seed = int(cfg.seed)
    _seed_everything(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    inverse, inv_kw = inverse_kwargs(cfg)

    # ---- environments, agent, model, buffer ------------------------------------------------------
    env_kw = dict(distraction_dimensions=int(o.dim_distract),
                  pure_noise_distraction=int(o.dim_distract) > 0)
    env = envs.make_env(o.env, seed=seed, **env_kw)
    eval_env = envs.make_env(o.env, seed=seed + 42, **env_kw)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    hidden = list(o.hidden_dims)
    sac_cfg = SACConfig(gamma=o.discount, tau=o.tau, alpha=o.init_temperature, lr=o.critic_lr,
                        hidden_size=hidden[0], num_layers=len(hidden),
                        target_update_interval=o.target_update_period,
                        automatic_entropy_tuning=True,
                        target_entropy=(-act_dim / 2 if o.target_entropy is None
                                        else float(o.target_entropy)),
                        batch_size=o.batch_size)
    agent = SAC(obs_dim, act_dim, env.action_space.low, env.action_space.high, sac_cfg,
                device=device, seed=seed)
    for opt, lr in ((agent.policy_optim, o.actor_lr), (agent.alpha_optim, o.temp_lr)):
        for group in opt.param_groups:
            group["lr"] = float(lr)
    model = DynamicsModel(obs_dim, obs_dim + act_dim, o.model_hidden_dim, len(hidden),
                          split=False, final_gain=math.sqrt(2.0),
                          gen=torch.Generator().manual_seed(seed + 1))
    theta = leaf_params(model.init, device)
    model_optim = torch.optim.Adam(list(theta.values()), lr=o.model_lr)
    capacity = int(o.replay_buffer_size or o.num_steps)
    buffer = ReplayBuffer(capacity, (obs_dim,), (act_dim,), device=device)
    critic_keys = [k for k, _ in agent.critic.named_parameters()]

    def twin_q(params: dict, obs, act):
        n = len(params) // 2
        return ensemble_mlp_reference(torch.cat([obs, act], -1),
                                      [params[f"weights.{i}"] for i in range(n)],
                                      [params[f"biases.{i}"] for i in range(n)], "relu")[..., 0]

    def predict(params, s, a):
        nxt, _, _, r_hat = model(params, torch.cat([s, a], -1))
        return nxt, r_hat

    # ---- one update (the original's OMDLearner.update) ----------------------------------------
    def update_omd(b) -> dict[str, float]:
        s, a, r, s2, term = b.obs, b.act, b.reward, b.next_obs, b.terminated.float()
        with torch.no_grad():
            nxt, r_hat = predict(theta, s, a)
        info: dict = {}
        for _ in range(int(o.inner_steps)):  # forward: SAC update(s) on model data
            info = agent.update(s, a, r_hat, nxt, term, generator=gen)
        # outer loss: the critic loss on the real batch at φ*, gradient through the critic only
        noise = torch.randn(s.shape[0], act_dim, generator=gen, device=device)
        loss_out, _ = agent.critic_loss(s, a, r, s2, term, noise)
        ubar = torch.autograd.grad(loss_out, list(agent.critic.parameters()))
        ubar = dict(zip(critic_keys, ubar, strict=True))
        phi = {k: v.detach() for k, v in agent.critic.named_parameters()}
        target = {k: v.detach() for k, v in agent.critic_target.named_parameters()}
        alpha = agent.alpha.detach()
        # the constraint at the post-step state, with fresh policy noise (as the original)
        noise_in = torch.randn(s.shape[0], act_dim, generator=gen, device=device)

        def inner_loss(q_params, model_params):
            nxt_, r_hat_ = predict(model_params, s, a)
            with torch.no_grad():
                a2, logp2, _ = agent.policy.sample(nxt_.detach(), noise=noise_in)
            q_next = twin_q(target, nxt_, a2).min(0).values  # ŝ' not stop-gradient
            y = r_hat_ + (1 - term) * sac_cfg.gamma * (q_next - alpha * logp2.squeeze(-1))
            return ((twin_q(q_params, s, a) - y) ** 2).mean(-1).sum()

        grads, inv_info = minimizer_vjp(inner_loss, phi, {k: v.detach() for k, v in
                                                          theta.items()}, ubar, inverse,
                                        **inv_kw)
        model_optim.zero_grad(set_to_none=True)
        for k, p in theta.items():
            p.grad = grads[k]
        model_optim.step()
        return {"model_loss": float(loss_out.detach()), "r_pred": float(r_hat.mean()),
                "inverse_iterations": inv_info["iterations"],
                **{k: float(v) for k, v in info.items()}}

    def update_mle(b) -> dict[str, float]:
        s, a, r, s2, term = b.obs, b.act, b.reward, b.next_obs, b.terminated.float()
        nxt, r_hat = predict(theta, s, a)
        loss = ((nxt - s2) ** 2).sum(-1).mean() + ((r_hat - r) ** 2).mean()
        model_optim.zero_grad(set_to_none=True)
        loss.backward()
        model_optim.step()
        info: dict = {}
        with torch.no_grad():  # the same batch (the original reuses it)
            nxt, r_hat = predict(theta, s, a)
        for _ in range(int(o.inner_steps)):
            info = agent.update(s, a, r_hat, nxt, term, generator=gen)
        return {"model_loss": float(loss.detach()), **{k: float(v) for k, v in info.items()}}

    update = update_omd if o.algo == "omd" else update_mle

    # ---- state: fresh, or restored from the last checkpoint --------------------------------------
    step, best_eval, wall_before = 0, -math.inf, 0.0
    env_rngs = [env.unwrapped.np_random, eval_env.unwrapped.np_random,
                env.action_space.np_random]
    ckpt = latest_checkpoint(run_dir) if cfg.resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, map_location=device, weights_only=False)
        agent.load_full_state_dict(state["agent"])
        with torch.no_grad():
            for k, p in theta.items():
                p.copy_(state["model"][k])
        model_optim.load_state_dict(state["model_optim"])
        buffer.load_state_dict(state["buffer"])
        step, best_eval, wall_before = state["step"], state["best_eval"], state["wall_time_s"]
        set_rng_state(state["rng"], generators=[gen], numpy_generators=env_rngs)
        say(f"resumed from {ckpt}: env step {step} (a new episode starts)")
    logger = _logger(cfg, run_dir, step if ckpt is not None else None)
    t0 = time.perf_counter()
    evals_done = 0

    def checkpoint() -> None:
        logger.flush()
        save_run_checkpoint(run_dir, step, {
            "step": step, "best_eval": best_eval,
            "wall_time_s": wall_before + time.perf_counter() - t0,
            "agent": agent.full_state_dict(), "model": {k: v.detach() for k, v in theta.items()},
            "model_optim": model_optim.state_dict(), "buffer": buffer.state_dict(),
            "rng": rng_state(generators=[gen], numpy_generators=env_rngs),
            "config": OmegaConf.to_container(cfg, resolve=True),
        }, keep_last=cfg.keep_checkpoints)

    # ---- main loop (the original's train.py; steps counted from 1) ----------------------------
    progress = _progress(cfg, int(o.num_steps), step)
    obs, _ = env.reset()
    episode_return, last = 0.0, {}
    while step < o.num_steps:
        step += 1
        if step < o.start_training:
            action = env.action_space.sample()
        else:
            action = np.clip(agent.act(torch.as_tensor(obs, device=device), sample=True,
                                       generator=gen).cpu().numpy(), -1.0, 1.0)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, next_obs, reward, terminated, truncated)
        episode_return += float(reward)
        obs = next_obs
        progress.update(1)
        if terminated or truncated:
            logger.log(step, group="train", episode_return=episode_return)
            progress.set_return(episode_return)
            obs, _ = env.reset()
            episode_return = 0.0
        if step >= o.start_training:
            for _ in range(int(o.outer_steps)):
                last = update(buffer.sample(int(o.batch_size), gen))
            if step % o.log_interval == 0:
                logger.log(step, group="updates", **last)
        if step % o.eval_interval == 0 or step >= o.num_steps:
            ret = evaluate_sac(eval_env, agent, int(o.eval_episodes), device)
            best_eval = max(best_eval, ret)
            logger.log(step, episode_return=ret,
                       wall_time_s=wall_before + time.perf_counter() - t0, **last)
            progress.write(f"env step {step}: eval return {ret:.1f}")
            evals_done += 1
            every = int(cfg.checkpoint_every_epochs)
            if (every and evals_done % every == 0) or step >= o.num_steps:
                checkpoint()
    progress.close()
    logger.close()
    return best_eval
