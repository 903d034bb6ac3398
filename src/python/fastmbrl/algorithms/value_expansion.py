"""Value expansion on SAC and DDPG (Palenicek et al., ICLR 2023; the ``value_expansion`` seed),
read top to bottom.

    warm-up:   warmup_steps transitions with uniform random actions (num_envs envs at once)
               → network model: pre-train for model_pretrain_epochs · |buffer| / 256 steps
    every vector step (num_envs transitions):
               act (SAC: stochastic; DDPG: tanh(μ + 0.1·N(0,1))) → replay buffer (with the
               behaviour log-probability, the pre-tanh action and, for the oracle, the
               simulator state after the step) → observation normaliser update
               → network model: one epoch every model_train_every steps
               → num_envs · updates_per_step agent updates, each on a batch whose critic
                 target y is built here:
                   none / H=0   y = r + γ(1−d) V(s′)
                   mve          roll H steps from the real s′ with the target policy through
                                the model (network or MuJoCo oracle), prepend the real
                                transition, y = G₀ of the shared recursion
                   retrace      real windows of H+2 consecutive transitions, stored behaviour
                                log-probabilities, traces c = λ·min(1, π/μ)
                   vg           the one-step target; the ACTOR's objective is expanded
                                instead: roll H steps from the real s with the current
                                reparameterised policy through the model with gradients
                                (network: autograd through ensemble_mlp; oracle: MuJoCo with
                                finite-difference Jacobians), J = G₀ − α log π(a₀|s₀) with
                                the online critics, actor loss −mean(J)/(H+1)
               → every eval_every transitions: evaluate, log, checkpoint

V(s) = min_j Q̄_j(s, ã) − α log π(ã|s) with ã fresh from the target policy; the recursion is
``agents.targets.multistep_returns`` (rlax ``general_off_policy_returns_from_q_and_v``); only
(s₀, a₀) is regressed. Termination in model rollouts: the task's true termination function on
the predicted observations (the model never predicts it). Keys, formulas and every difference
from the seed with its switch: docs/value_expansion.md.

Differences from the seed (each documented there):
- gymnasium MuJoCo v5 tasks instead of the brax fork (returns are not comparable); action
  repeat multiplies the env's frame_skip; inverted_pendulum uses action_repeat 1;
- the seed trains the network model for SAC-MVE / DDPG-MVE at H = 0 too, where it is unused:
  ``algorithm.train_model_when_unused=true`` does so too, the default skips it;
- Retrace windows are cut at the first episode end (and at the newest row) instead of running
  across auto-resets: positions after the cut are masked, the trace is 0 there;
- DDPG's stored behaviour log-probability is that of the noise really used;
  ``algorithm.ddpg_original_trace=true`` reproduces the seed's (agents/ve_agents.py);
- evaluation: ``eval_episodes`` episodes on one test env (the seed: 128 envs); SAC evaluates
  the stochastic policy as the seed does, DDPG the mean action.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .. import envs
from ..agents.targets import masked_discounts, multistep_returns, retrace_traces
from ..agents.ve_agents import VEAgent, VEAgentConfig
from ..buffers import ReplayBuffer
from ..models.dynamics import NetworkDynamics
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

# Root keys this algorithm adds to the config (conf/algorithm/value_expansion.yaml sets them at
# the top level, so the seed's `-algo SAC-MVE -H 5 -model_type analytic` reads as
# `agent=sac expansion=mve H=5 model_type=analytic`); config.validate_root lets them through.
ROOT_KEYS = ("agent", "expansion", "H", "model_type")
EXPANSIONS = ("mve", "retrace", "vg", "none")
TASKS = ("inverted_pendulum", "cartpole_swingup", "hopper", "walker2d", "halfcheetah")


# ---------------------------------------------------------------------------------------------
# Config schemas (checked by validate before anything is written)
# ---------------------------------------------------------------------------------------------
@dataclass
class VEOverrides:
    """``overrides=ve_<task>``: the seed's per-task settings (run_experiment.py)."""

    env: str = spec(choices=TASKS)
    num_steps: int = spec(10_000, ge=1, help="transitions, warm-up included")
    num_envs: int = spec(1, ge=1)
    action_repeat: int = spec(1, ge=1)
    gamma: float = spec(0.99, gt=0.0, le=1.0)
    batch_size: int = spec(256, ge=1)
    warmup_steps: int = spec(512, ge=1)
    replay_size: int = spec(1_048_576, ge=1)
    eval_every: int = spec(1000, ge=1)
    eval_episodes: int = spec(10, ge=1)


@dataclass
class VEAlgorithm:
    """``algorithm=value_expansion``: agent and model settings, switches to the seed's code."""

    name: str = spec("value_expansion", choices=("value_expansion",))
    hidden_sizes: list[int] = spec([256, 256], ge=1)
    lr: float = spec(3e-4, gt=0.0)
    alpha_init: float = spec(1.0, gt=0.0)
    alpha_lr: float = spec(5e-5, ge=0.0)
    target_entropy_per_dim: float = spec(-0.5)
    tau_q: float = spec(0.005, gt=0.0, le=1.0)
    tau_pi: float | None = spec(None, nullable=True, gt=0.0, le=1.0)
    ddpg_noise: float = spec(0.1, gt=0.0)
    obs_clip: float = spec(5.0, gt=0.0)
    trace_lambda: float = spec(1.0, ge=0.0, le=1.0)
    ddpg_original_trace: bool = spec(False)
    updates_per_step: int = spec(1, ge=0)
    model_ensemble_size: int = spec(5, ge=1)
    model_num_layers: int = spec(4, ge=1)
    model_hid_size: int = spec(256, ge=1)
    model_lr: float = spec(3e-4, gt=0.0)
    model_batch_size: int = spec(256, ge=1)
    model_pretrain_epochs: int = spec(200, ge=0)
    model_train_every: int = spec(1, ge=1)
    model_epochs: float = spec(1.0, gt=0.0)
    train_model_when_unused: bool = spec(False)
    oracle_fd_eps: float = spec(1e-6, gt=0.0, help="finite-difference step of the oracle's "
                                "Jacobians (expansion=vg, model_type=analytic)")
    oracle_fd_centered: bool = spec(True, help="centred (2K+1 steps per row) or one-sided (K+1)")
    oracle_jac_clip: float | None = spec(None, nullable=True, gt=0.0,
                                         help="clip every Jacobian entry to ±this (contacts)")


@dataclass
class VERootKeys:
    """The root keys of ``algorithm=value_expansion`` (the seed's -algo / -H / -model_type)."""

    agent: str = spec("sac", choices=("sac", "ddpg"))
    expansion: str = spec("mve", choices=EXPANSIONS)
    H: int = spec(0, ge=0, le=1000)
    model_type: str = spec("network", choices=("network", "analytic"))


def validate(cfg: DictConfig) -> None:
    """The root keys, overrides and algorithm groups against their schemas (ConfigError)."""
    o = cfg.overrides
    if o is None or "warmup_steps" not in o:
        raise ConfigError("algorithm=value_expansion needs a value-expansion overrides file: "
                          "overrides=ve_inverted_pendulum, ve_cartpole, ve_hopper, ve_walker2d "
                          "or ve_halfcheetah")
    check({k: cfg.get(k) for k in ROOT_KEYS}, VERootKeys, "")
    check(o, VEOverrides, "overrides")
    check(cfg.algorithm, VEAlgorithm, "algorithm")
    if cfg.expansion == "none" and int(cfg.H) != 0:
        raise ConfigError(f"H={cfg.H} with expansion=none: no expansion has horizon 0 "
                          "(use expansion=mve or retrace, or H=0)")
    if int(o.warmup_steps) >= int(o.num_steps):
        raise ConfigError(f"overrides.warmup_steps={o.warmup_steps} is not below overrides."
                          f"num_steps={o.num_steps}: no transition would be learned from")
    if int(o.batch_size) > min(int(o.replay_size), int(o.num_steps)):
        raise ConfigError(f"overrides.batch_size={o.batch_size} exceeds the replay capacity "
                          f"{min(int(o.replay_size), int(o.num_steps))}")


# ---------------------------------------------------------------------------------------------
# Models behind one interface: step(obs, act) -> (next_obs, reward, terminated)
# ---------------------------------------------------------------------------------------------
class OracleModel:
    """MuJoCo itself as the model: rows carry their simulator state (stored in the replay
    buffer), ``step`` advances every row from its state (``envs.oracle.MujocoOracle``);
    ``rstep`` does so with gradients (finite-difference Jacobians, ``fd`` options)."""

    def __init__(self, task: str, action_repeat: int, **fd):
        from ..envs.oracle import MujocoOracle

        self.oracle = MujocoOracle(task, action_repeat=action_repeat)
        self.fd = fd                              # eps, centered, jac_clip
        self.states: torch.Tensor | None = None  # [N, S] simulator states of the current rows
        self.x: torch.Tensor | None = None       # [N, nq + nv] their differentiable part (rstep)

    def start(self, states: torch.Tensor) -> None:
        self.states, self.x = states, None

    def rstep(self, obs: torch.Tensor, act: torch.Tensor):
        x = self.oracle.positions(self.states) if self.x is None else self.x
        self.x, next_obs, reward, done, self.states = self.oracle.differentiable_step(
            self.states, x, act, **self.fd)
        return next_obs.to(obs.dtype), reward.to(obs.dtype), done

    @torch.no_grad()
    def step(self, obs: torch.Tensor, act: torch.Tensor):
        out = self.oracle.step(self.states, act)
        self.states = out.next_states
        return (out.next_obs.to(obs.dtype), out.reward.to(obs.dtype),
                out.terminated.to(torch.bool))


class NetworkModel:
    """The learned ensemble (models.dynamics.NetworkDynamics) with the oracle's interface."""

    def __init__(self, dynamics: NetworkDynamics):
        self.dynamics = dynamics

    def start(self, states) -> None:  # the network predicts from observations alone
        pass

    def step(self, obs: torch.Tensor, act: torch.Tensor):
        return self.dynamics.step(obs, act)

    def rstep(self, obs: torch.Tensor, act: torch.Tensor):
        return self.dynamics.rsample_step(obs, act)


# ---------------------------------------------------------------------------------------------
# Critic targets
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def one_step_target(agent: VEAgent, b, gamma: float) -> torch.Tensor:
    """``y = r + γ(1 − d) V(s′)`` ``[B]`` (the default critic target, MVE/Retrace at H = 0)."""
    v = agent.value(b.next_obs.float())
    return b.reward.float() + gamma * (~b.terminated).float() * v


@torch.no_grad()
def mve_target(agent: VEAgent, model, b, next_states, H: int, gamma: float) -> torch.Tensor:
    """MVE: ``y = G₀`` ``[B]`` of the real transition followed by H model steps from the real
    s′ with the target policy. ``next_states`` are the rows' simulator states at s′ (oracle)."""
    obs = [b.next_obs.float()]  # s_1 .. s_{H+1}
    act = []                    # a_1 .. a_H
    rew, term = [b.reward.float()], [b.terminated]
    model.start(next_states)
    for _ in range(H):
        a, _ = agent.sample(obs[-1], target=True)
        nxt, r, d = model.step(obs[-1], a)
        act.append(a)
        obs.append(nxt)
        rew.append(r)
        term.append(d)
    B = b.reward.shape[0]
    s_next = torch.stack(obs, 1)                    # [B, H+1, O]
    v_next = agent.value(s_next.reshape(B * (H + 1), -1)).view(B, H + 1)
    # Q̄(s_{k+1}, a_{k+1}) for k < H; the recursion never reads the last column (the seed's
    # appended final action only fills it)
    q_next = torch.zeros_like(v_next)
    if H > 0:
        s_q = s_next[:, :H].reshape(B * H, -1)
        a_q = torch.stack(act, 1).reshape(B * H, -1)
        q_next[:, :H] = agent.q(s_q, a_q, target=True).min(0).values.view(B, H)
    rewards, terminated = torch.stack(rew, 1), torch.stack(term, 1)
    discounts = masked_discounts(gamma, terminated)
    c_next = torch.ones_like(v_next)                # the policy's own actions: π/μ = 1
    c_next[:, 0] = (~b.truncated).float()           # a truncated real transition: one step
    return multistep_returns(rewards, discounts, v_next, q_next, c_next)[:, 0]


def vg_return(agent: VEAgent, model, obs: torch.Tensor, a0: torch.Tensor, states, H: int,
              gamma: float) -> torch.Tensor:
    """The value-gradient actor's ``G₀`` ``[B]`` of the action ``a0`` at the real ``obs``, with
    gradients to ``a0`` (and through it to the actor): H model steps with the current
    reparameterised policy (``model.rstep``: gradients through the model and its rewards, its
    parameters untouched), then the shared recursion with the online critics, ``c ≡ 1`` and
    ``V(s) = min_j Q_j(s, ã) − α log π(ã|s)`` with a fresh ã (``agent.soft_value``); the
    termination masks the discounts without gradient. ``states``: the rows' simulator states
    at ``obs`` (oracle). H = 0: ``min_j Q_j(s, a0)``, the usual actor objective."""
    if H == 0:
        return agent.q_pi(obs, a0)
    model.start(states)
    s, a = obs, a0
    rew, term, v_next, q_next = [], [], [], []
    for h in range(H):
        s, r, d = model.rstep(s, a)
        rew.append(r)
        term.append(d)
        v_next.append(agent.soft_value(s))
        if h < H - 1:                     # the last Q̄ is never read by the recursion
            a, _ = agent.sample(s)
            q_next.append(agent.q_pi(s, a))
    q_next.append(torch.zeros_like(v_next[-1]))
    rewards, values = torch.stack(rew, 1), torch.stack(v_next, 1)
    discounts = masked_discounts(gamma, torch.stack(term, 1), dtype=values.dtype)
    return multistep_returns(rewards, discounts, values, torch.stack(q_next, 1),
                             torch.ones_like(values))[:, 0]


@torch.no_grad()
def retrace_target(agent: VEAgent, buffer: ReplayBuffer, H: int, batch_size: int,
                   gamma: float, lam: float, stride: int, gen: torch.Generator):
    """Retrace: windows of ``H + 2`` consecutive real transitions; returns the batch of the
    windows' first transitions and ``y = G₀`` ``[B]``. Window positions after the first episode
    end (or past the newest row) are masked: their trace is 0."""
    K = H + 1
    idx, valid = buffer.sample_windows(batch_size, H + 2, generator=gen, stride=stride)
    w = buffer.gather(idx)                           # fields [B, H+2, ...]
    B = idx.shape[0]
    s1 = w.next_obs[:, :K].float()                   # s_{k+1}, k = 0..H
    a1 = w.act[:, 1:].float()                        # a_{k+1} (the next transition's action)
    flat_s, flat_a = s1.reshape(B * K, -1), a1.reshape(B * K, -1)
    v_next = agent.value(flat_s).view(B, K)
    q_next = agent.q(flat_s, flat_a, target=True).min(0).values.view(B, K)
    u1 = buffer.extras["u"][idx[:, 1:]].float().reshape(B * K, -1)
    log_pi = agent.log_prob_u(flat_s, u1, target=True).view(B, K)
    log_mu = buffer.extras["log_mu"][idx[:, 1:]].float()
    # the trace to step k+1 needs transition k+1 in the window and transition k not ended
    cut = ~valid[:, 1:] | w.truncated[:, :K]
    c_next = retrace_traces(log_pi, log_mu, lam, cut)
    discounts = masked_discounts(gamma, w.terminated[:, :K])
    G = multistep_returns(w.reward[:, :K].float(), discounts, v_next, q_next, c_next)
    first = buffer.gather(idx[:, 0])
    return first, G[:, 0]


# ---------------------------------------------------------------------------------------------
# Acting and evaluation
# ---------------------------------------------------------------------------------------------
def uniform_actions(n: int, low: np.ndarray, high: np.ndarray, gen: torch.Generator, device):
    """Warm-up actions: uniform in the box ``[low, high]``; returns ``(act [n, A], log_mu [n],
    u [n, A])``: the uniform density of the tanh action in [−1, 1]^A (``−|A| log 2``, the
    seed's; log-probabilities are densities in that space, agents/ve_agents.py) and the
    pre-tanh value of each action."""
    lo = torch.as_tensor(low, dtype=torch.float32, device=device)
    hi = torch.as_tensor(high, dtype=torch.float32, device=device)
    z = torch.rand((n, lo.shape[0]), generator=gen, device=device) * 2 - 1      # [-1, 1]
    act = (hi + lo) / 2 + (hi - lo) / 2 * z
    log_mu = torch.full((n,), -lo.shape[0] * math.log(2.0), device=device)
    u = torch.atanh(z.clamp(-1 + 1e-6, 1 - 1e-6))
    return act, log_mu, u


@torch.no_grad()
def evaluate(env: gym.Env, agent: VEAgent, num_episodes: int, deterministic: bool,
             gen: torch.Generator, device) -> float:
    """Average undiscounted return of ``num_episodes`` episodes on ``env``."""
    total = 0.0
    for _ in range(num_episodes):
        obs, _ = env.reset()
        done = False
        while not done:
            o = torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0)
            a, _, _ = agent.act(o, deterministic=deterministic, generator=gen)
            obs, reward, terminated, truncated, _ = env.step(a[0].cpu().numpy())
            total += float(reward)
            done = terminated or truncated
    return total / num_episodes


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
def agent_config(cfg: DictConfig) -> VEAgentConfig:
    a = cfg.algorithm
    return VEAgentConfig(
        kind=cfg.agent, hidden=list(a.hidden_sizes), lr=float(a.lr),
        alpha_init=float(a.alpha_init), alpha_lr=float(a.alpha_lr),
        target_entropy_per_dim=float(a.target_entropy_per_dim), tau_q=float(a.tau_q),
        tau_pi=None if a.tau_pi is None else float(a.tau_pi), ddpg_noise=float(a.ddpg_noise),
        obs_clip=float(a.obs_clip), gamma=float(cfg.overrides.gamma),
        ddpg_original_trace=bool(a.ddpg_original_trace))


def train(cfg: DictConfig, run_dir: str | Path, device: torch.device) -> float:
    """Run value expansion in ``run_dir`` (resuming from its last checkpoint if
    ``cfg.resume``). Returns the best evaluation return."""
    run_dir = Path(run_dir)
    o, alg = cfg.overrides, cfg.algorithm
    H, expansion, model_type = int(cfg.H), str(cfg.expansion), str(cfg.model_type)
    if expansion == "none":
        H = 0
    seed = int(cfg.seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    gamma, N = float(o.gamma), int(o.num_envs)
    uses_model = expansion in ("mve", "vg") and H > 0
    oracle = model_type == "analytic"

    # ---- environments (gymnasium vector env, reset by hand), agent, model, buffer --------
    repeat = int(o.action_repeat)
    vec = gym.vector.SyncVectorEnv(
        [lambda i=i: envs.make_env(o.env, seed=seed + i, action_repeat=repeat)
         for i in range(N)], autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    test_env = envs.make_env(o.env, seed=seed + 10_000, action_repeat=repeat)
    obs_dim = vec.single_observation_space.shape[0]
    act_dim = vec.single_action_space.shape[0]
    low, high = vec.single_action_space.low, vec.single_action_space.high
    agent = VEAgent(obs_dim, act_dim, low, high, agent_config(cfg), device=device, generator=gen)
    dynamics = None
    if model_type == "network" and expansion in ("mve", "vg") and (
            H > 0 or alg.train_model_when_unused):
        dynamics = NetworkDynamics(
            obs_dim, act_dim, envs.termination_rule(o.env), envs.term_fn(o.env),
            ensemble_size=int(alg.model_ensemble_size), num_layers=int(alg.model_num_layers),
            hid_size=int(alg.model_hid_size), lr=float(alg.model_lr),
            batch_size=int(alg.model_batch_size), device=device, generator=gen)
    model = None
    if uses_model:
        model = (OracleModel(o.env, repeat, eps=float(alg.oracle_fd_eps),
                             centered=bool(alg.oracle_fd_centered), jac_clip=alg.oracle_jac_clip)
                 if oracle else NetworkModel(dynamics))
    extras = {"log_mu": ((), torch.float32), "u": ((act_dim,), torch.float32)}
    if uses_model and oracle:  # MVE starts at s′, VG at s: the simulator state there
        key = "next_state" if expansion == "mve" else "state"
        extras[key] = ((model.oracle.state_size,), torch.float64)
    capacity = min(int(o.replay_size), int(o.num_steps))
    buffer = ReplayBuffer(capacity, (obs_dim,), (act_dim,), device=device, extras=extras)

    # ---- state: fresh, or restored from the last checkpoint ------------------------------
    env_steps = updates = 0
    best_eval, wall_time_before, pretrained = -math.inf, 0.0, False
    env_rngs = [e.unwrapped.np_random for e in vec.envs] + [test_env.unwrapped.np_random]
    ckpt_path = latest_checkpoint(run_dir) if cfg.resume else None
    if ckpt_path is not None:
        state = load_checkpoint(ckpt_path, map_location=device, weights_only=False)
        agent.load_state_dict(state["agent"])
        buffer.load_state_dict(state["buffer"])
        if dynamics is not None:
            dynamics.load_state_dict(state["dynamics"])
        env_steps, updates = state["env_steps"], state["updates"]
        best_eval, wall_time_before = state["best_eval"], state["wall_time_s"]
        pretrained = state["pretrained"]
        set_rng_state(state["rng"], generators=[gen], numpy_generators=env_rngs)
        say(f"resumed from {ckpt_path}: env step {env_steps}")
    logger = RunLogger(run_dir, use_tensorboard=cfg.use_tensorboard, use_wandb=cfg.use_wandb,
                       wandb_kwargs=dict(project=cfg.wandb_project_name,
                                         group=cfg.wandb_group_name,
                                         config=OmegaConf.to_container(cfg, resolve=True)),
                       resume_step=env_steps if ckpt_path is not None else None)

    def checkpoint() -> None:
        logger.flush()
        save_run_checkpoint(run_dir, env_steps, {
            "env_steps": env_steps, "updates": updates, "best_eval": best_eval,
            "pretrained": pretrained,
            "wall_time_s": wall_time_before + time.perf_counter() - t_start,
            "agent": agent.state_dict(), "buffer": buffer.state_dict(),
            "dynamics": None if dynamics is None else dynamics.state_dict(),
            "rng": rng_state(generators=[gen], numpy_generators=env_rngs),
            "config": OmegaConf.to_container(cfg, resolve=True),
        }, keep_last=cfg.keep_checkpoints)

    def update_agent() -> dict[str, torch.Tensor]:
        """One agent update on a fresh batch with this run's critic target."""
        if expansion == "retrace" and H > 0:
            b, y = retrace_target(agent, buffer, H, int(o.batch_size), gamma,
                                  float(alg.trace_lambda), N, gen)
        elif expansion == "vg" and H > 0:   # the critic's default target, the actor expanded
            b, idx = buffer.sample(int(o.batch_size), gen, return_indices=True)
            states = buffer.extras["state"][idx] if oracle else None
            return agent.update(
                b.obs.float(), b.act.float(), one_step_target(agent, b, gamma), generator=gen,
                actor_return=lambda s, a0: vg_return(agent, model, s, a0, states, H, gamma),
                actor_scale=1.0 / (H + 1))
        else:
            b, idx = buffer.sample(int(o.batch_size), gen, return_indices=True)
            if uses_model:
                states = buffer.extras["next_state"][idx] if oracle else None
                y = mve_target(agent, model, b, states, H, gamma)
            else:
                y = one_step_target(agent, b, gamma)
        return agent.update(b.obs.float(), b.act.float(), y, generator=gen)

    # ---- main loop: one vector step (N transitions) per iteration ------------------------
    show = {"auto": None, True: True, False: False}.get(cfg.progress, None)
    progress = StepProgress(int(o.num_steps), initial=env_steps,
                            disable=None if show is None else not show)
    obs, _ = vec.reset()   # a resumed run starts new episodes (docs/runs.md)
    returns = np.zeros(N)
    sums: dict[str, torch.Tensor] = {}
    since_log = evals = 0
    next_eval = (env_steps // int(o.eval_every) + 1) * int(o.eval_every)
    model_loss = torch.full((), math.nan)
    t_start = time.perf_counter()
    while env_steps < int(o.num_steps):
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
        if env_steps < int(o.warmup_steps):
            act, log_mu, u = uniform_actions(N, low, high, gen, device)
        else:
            act, log_mu, u = agent.act(obs_t, generator=gen)
        row_extras = {"log_mu": log_mu, "u": u}
        if "state" in extras:      # before the step
            row_extras["state"] = torch.as_tensor(model.oracle.get_states(vec.envs))
        next_obs, reward, terminated, truncated, _ = vec.step(act.cpu().numpy())
        if "next_state" in extras:
            row_extras["next_state"] = torch.as_tensor(model.oracle.get_states(vec.envs))
        buffer.add_batch(obs_t, act, torch.as_tensor(next_obs, dtype=torch.float32),
                         torch.as_tensor(reward, dtype=torch.float32),
                         torch.as_tensor(terminated), torch.as_tensor(truncated), **row_extras)
        agent.normalizer.update(obs_t)   # the pre-step observations, warm-up included
        returns += reward
        done = terminated | truncated
        for i in np.flatnonzero(done):
            logger.log(env_steps + i + 1, group="train", episode_return=float(returns[i]))
            progress.set_return(float(returns[i]))
        returns[done] = 0.0
        obs = next_obs
        if done.any():
            obs, _ = vec.reset(options={"reset_mask": done})
        env_steps += N
        progress.update(N)
        if env_steps > int(o.warmup_steps):  # learning starts with the first policy step
            # ---- model: pre-training once, then an epoch every model_train_every steps ---
            if dynamics is not None:
                if not pretrained:
                    n = dynamics.epoch_steps(buffer, float(alg.model_pretrain_epochs))
                    say(f"pre-training the model: {n} steps on {len(buffer)} transitions")
                    model_loss = dynamics.train_steps(buffer, n)
                    pretrained = True
                elif (env_steps // N) % int(alg.model_train_every) == 0:
                    model_loss = dynamics.train_steps(
                        buffer, dynamics.epoch_steps(buffer, float(alg.model_epochs)))

            # ---- agent: one update per transition (updates_per_step) ---------------------
            for _ in range(N * int(alg.updates_per_step)):
                for k, v in update_agent().items():
                    sums[k] = sums.get(k, 0.0) + v
                updates += 1
                since_log += 1
            if since_log >= int(cfg.log_frequency_agent):
                logger.log(env_steps, group="agent", updates=updates, model_loss=model_loss,
                           **{k: v / since_log for k, v in sums.items()})
                sums, since_log = {}, 0

        # ---- evaluate, log, checkpoint ---------------------------------------------------
        if env_steps >= next_eval or env_steps >= int(o.num_steps):
            next_eval = (env_steps // int(o.eval_every) + 1) * int(o.eval_every)
            t0 = time.perf_counter()
            eval_return = evaluate(test_env, agent, int(o.eval_episodes),
                                   deterministic=cfg.agent == "ddpg", gen=gen, device=device)
            best_eval = max(best_eval, eval_return)
            logger.log(env_steps, group="results", episode_return=eval_return,
                       updates=updates, eval_time_s=time.perf_counter() - t0,
                       wall_time_s=wall_time_before + time.perf_counter() - t_start)
            progress.set_return(eval_return)
            progress.write(f"env step {env_steps}: eval return {eval_return:.1f}")
            evals += 1
            every = int(cfg.checkpoint_every_epochs)
            if (every and evals % every == 0) or env_steps >= int(o.num_steps):
                checkpoint()
    progress.close()
    logger.close()
    vec.close()
    return best_eval
