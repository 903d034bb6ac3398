"""MBPO (Janner et al. 2019) as mbrl-lib runs it, read top to bottom.

    initial exploration ─► every env step: act, store the transition
                           every freq_train_model steps: retrain the model ensemble, then roll
                           it out from real start states into the model buffer
                           num_sac_updates_per_step SAC updates from the model buffer
                           (real data with probability real_data_ratio)
                           every epoch_length steps: evaluate, log, checkpoint

Facts from mbrl-lib (``algorithms/mbpo.py``, ``conf/algorithm/mbpo.yaml``): rollout batch
``effective_model_rollouts_per_step × freq_train_model``; rollout length
``truncated_linear(*rollout_schedule, epoch + 1)``; model-buffer capacity
``rollout_length × rollout_batch × ceil(epoch_length / freq_train_model) ×
num_epochs_to_retain_sac_buffer``, FIFO, rebuilt (keeping the newest rows) when it changes;
``num_steps`` counts env steps after the initial exploration. ``num_steps`` bounds the run: an
epoch that would pass it is cut short, then evaluated and checkpointed (mbrl-lib always runs the
last epoch to its end).

Deliberate differences (switches in ``algorithm``): the real environment is stepped with a
sampled action (mbrl-lib uses the mean: ``env_step_mean_action=true``), and episodes are not
cut at epoch boundaries (``reset_env_each_epoch=true`` restores mbrl-lib's behaviour).

Value-aware model learning (``value_aware.py``): the model loss is MLE, VA-MBPO's
(``+overrides.model_loss_type=va``), VaGraM's or IterVAML's (``dynamics_model=vaml_ensemble``).
With ``overrides.model_loss_type`` given (the VA-MBPO code path), every
``overrides.value_update_interval`` model steps the model buffer is refilled by rolling out the
partially trained model from ``v_update_batch_size`` real states and the critic takes
``num_v_updates_in_model`` critic-only steps on it; SAC's gradients are clipped at 2.0.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .. import envs
from ..agents import SAC, SACConfig
from ..buffers import ReplayBuffer
from ..models import GaussianEnsemble, ModelTrainer
from ..models.ensemble import PROPAGATION_METHODS
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
from .common import (
    ModelEnv,
    evaluate,
    model_dataset,
    rollout_model_and_populate_buffer,
    truncated_linear,
)
from .value_aware import ModelLoss, refit_critic_on_model, value_aware_config


# ---- config schemas: every key of MBPO's groups, checked before anything is written ---------
@dataclass(kw_only=True)
class MBPOOverrides:
    """``overrides`` (conf/overrides/mbpo_*.yaml, mbrl-lib's keys). The last block holds the keys
    the seeds add with ``+overrides.KEY=...`` (optional, with these defaults)."""

    env: str = spec(help="task (fastmbrl.envs)")
    term_fn: str | None = spec(None, nullable=True, help="must match env (or no_termination)")
    num_steps: int = spec(ge=1, help="env steps after the initial exploration")
    epoch_length: int = spec(ge=1)
    num_elites: int = spec(ge=1)
    patience: int = spec(ge=0)
    model_lr: float = spec(gt=0.0)
    model_wd: float = spec(ge=0.0)
    model_batch_size: int = spec(ge=1)
    validation_ratio: float = spec(ge=0.0, lt=1.0)
    freq_train_model: int = spec(ge=1)
    effective_model_rollouts_per_step: int = spec(ge=1)
    rollout_schedule: list[int] = spec(length=4, ge=0,
                                       help="[min_epoch, max_epoch, min_length, max_length]")
    num_sac_updates_per_step: int = spec(ge=0)
    sac_updates_every_steps: int = spec(ge=1)
    num_epochs_to_retain_sac_buffer: int = spec(ge=1)
    distraction_dimensions: int = spec(0, ge=0)
    pure_noise_distraction: bool = spec(False)
    sac_gamma: float = spec(ge=0.0, le=1.0)
    sac_tau: float = spec(ge=0.0, le=1.0)
    sac_alpha: float = spec(ge=0.0)
    sac_policy: str = spec(choices=("Gaussian",))
    sac_target_update_interval: int = spec(ge=1)
    sac_automatic_entropy_tuning: bool = spec()
    sac_target_entropy: float | None = spec(None, nullable=True)
    sac_hidden_size: int = spec(ge=1)
    sac_lr: float = spec(gt=0.0)
    sac_batch_size: int = spec(ge=1)
    # optional keys (+overrides.KEY=...)
    num_epochs_train_model: int | None = spec(None, ge=1, nullable=True)
    model_loss_type: str | None = spec(None, choices=("mle", "va"), nullable=True)
    value_update_interval: int = spec(5, ge=0)
    num_v_updates_in_model: int = spec(5, ge=0)
    v_update_batch_size: int = spec(50_000, ge=1)


@dataclass(kw_only=True)
class SACAgentGroup:
    """``algorithm.agent`` (interpolated from ``overrides.sac_*`` by default)."""

    gamma: float = spec(ge=0.0, le=1.0)
    tau: float = spec(ge=0.0, le=1.0)
    alpha: float = spec(ge=0.0)
    policy: str = spec(choices=("Gaussian",))
    target_update_interval: int = spec(ge=1)
    automatic_entropy_tuning: bool = spec()
    target_entropy: float | None = spec(None, nullable=True)
    hidden_size: int = spec(ge=1)
    lr: float = spec(gt=0.0)
    batch_size: int = spec(ge=1)
    num_layers: int = spec(2, ge=1)
    grad_clip_norm: float | None = spec(None, gt=0.0, nullable=True)
    compile: bool = spec(False)


@dataclass(kw_only=True)
class MBPOAlgorithm:
    """``algorithm`` (conf/algorithm/mbpo.yaml)."""

    name: str = spec(choices=("mbpo",))
    normalize: bool = spec(True)
    normalize_double_precision: bool = spec(True)
    target_is_delta: bool = spec(True)
    learned_rewards: bool = spec(True)
    freq_train_model: int = spec(ge=1)
    real_data_ratio: float = spec(0.0, ge=0.0, le=1.0)
    sac_samples_action: bool = spec(True)
    initial_exploration_steps: int = spec(ge=0)
    random_initial_explore: bool = spec(False)
    num_eval_episodes: int = spec(1, ge=1)
    env_step_mean_action: bool = spec(False)
    reset_env_each_epoch: bool = spec(False)
    agent: SACAgentGroup = spec()


@dataclass(kw_only=True)
class GaussianModelGroup:
    """``dynamics_model.model`` of ``gaussian_mlp_ensemble``."""

    num_layers: int = spec(ge=1)
    ensemble_size: int = spec(ge=1)
    hid_size: int = spec(ge=1)
    deterministic: bool = spec(False)
    propagation_method: str = spec("random_model", choices=PROPAGATION_METHODS)
    learn_logvar_bounds: bool = spec(False)
    activation: str = spec("silu", choices=ACTIVATIONS)


@dataclass(kw_only=True)
class VamlModelGroup(GaussianModelGroup):
    """``dynamics_model.model`` of ``vaml_ensemble`` (VaGraM's loss switches)."""

    use_scaling: bool = spec(True)
    use_vaml: bool = spec(False)
    use_itervaml: bool = spec(False)
    add_mse: bool = spec(False)
    bound_clipping: bool = spec(True)
    bound_clipping_quantile: float = spec(0.95, gt=0.0, le=1.0)
    use_all_vf: bool = spec(True)


@dataclass(kw_only=True)
class GaussianDynamicsGroup:
    """``dynamics_model=gaussian_mlp_ensemble`` (MLE, or VA-MBPO with model_loss_type=va)."""

    name: str = spec(choices=("gaussian_mlp_ensemble",))
    model: GaussianModelGroup = spec()
    va_norm: str = spec("l1", choices=("l1", "l2"))
    va_loss_coeff: float = spec(0.01, ge=0.0)


@dataclass(kw_only=True)
class VamlDynamicsGroup:
    """``dynamics_model=vaml_ensemble`` (VaGraM, IterVAML)."""

    name: str = spec(choices=("vaml_ensemble",))
    model: VamlModelGroup = spec()
    add_mse_first_epoch: bool = spec(True)
    iclr_grad_at_delta: bool = spec(False)
    head_cumulative_grads: bool = spec(False)
    head_clip_rule: bool = spec(False)


DYNAMICS_MODELS = {"gaussian_mlp_ensemble": GaussianDynamicsGroup,
                   "vaml_ensemble": VamlDynamicsGroup}


def validate(cfg: DictConfig) -> None:
    """MBPO's config groups against their schemas, then the rules that join keys; raises
    ConfigError naming the key, the value and what is allowed."""
    check(cfg.overrides, MBPOOverrides, "overrides")
    name = cfg.dynamics_model.get("name")
    if name not in DYNAMICS_MODELS:
        raise ConfigError(f"dynamics_model.name={name!r}: MBPO runs "
                          f"{', '.join(DYNAMICS_MODELS)}")
    check(cfg.dynamics_model, DYNAMICS_MODELS[name], "dynamics_model")
    check(cfg.algorithm, MBPOAlgorithm, "algorithm")
    o, m = cfg.overrides, cfg.dynamics_model.model
    try:
        envs.get_task(o.env)
    except ValueError as exc:
        raise ConfigError(f"overrides.env={o.env!r}: {exc}") from None
    if o.get("term_fn") not in (None, o.env, "no_termination"):
        raise ConfigError(f"overrides.term_fn={o.term_fn!r} does not match overrides.env="
                          f"{o.env!r}: allowed {o.env}, no_termination or null")
    min_epoch, max_epoch, min_len, max_len = o.rollout_schedule
    if min_epoch > max_epoch or min_len < 1 or max_len < 1:
        raise ConfigError(f"overrides.rollout_schedule={list(o.rollout_schedule)}: expected "
                          "[min_epoch, max_epoch, min_length >= 1, max_length >= 1] with "
                          "min_epoch <= max_epoch")
    if o.num_elites > m.ensemble_size:
        raise ConfigError(f"overrides.num_elites={o.num_elites} exceeds "
                          f"dynamics_model.model.ensemble_size={m.ensemble_size}: allowed "
                          f"1..{m.ensemble_size}")
    if o.get("pure_noise_distraction", False) and o.get("distraction_dimensions", 0) < 1:
        raise ConfigError("overrides.pure_noise_distraction=true needs "
                          "overrides.distraction_dimensions >= 1, got "
                          f"{o.get('distraction_dimensions', 0)}")
    try:
        value_aware_config(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def sac_config(cfg: DictConfig) -> SACConfig:
    a = cfg.algorithm.agent
    return SACConfig(
        gamma=a.gamma, tau=a.tau, alpha=a.alpha, lr=a.lr, hidden_size=a.hidden_size,
        num_layers=a.num_layers, target_update_interval=a.target_update_interval,
        automatic_entropy_tuning=a.automatic_entropy_tuning,
        target_entropy=None if a.target_entropy is None else float(a.target_entropy),
        batch_size=a.batch_size, grad_clip_norm=sac_grad_clip_norm(cfg), compile=a.compile,
    )


def sac_grad_clip_norm(cfg: DictConfig) -> float | None:
    """``algorithm.agent.grad_clip_norm``; VA-MBPO (``overrides.model_loss_type`` given)
    clips critic and actor at 2.0 unless that key is set."""
    clip = cfg.algorithm.agent.grad_clip_norm
    if clip is None and cfg.overrides.get("model_loss_type") is not None:
        return 2.0
    return clip


def build_model(cfg: DictConfig, obs_dim: int, act_dim: int, device) -> GaussianEnsemble:
    m = cfg.dynamics_model.model
    return GaussianEnsemble(
        in_size=obs_dim + act_dim,
        out_size=obs_dim + int(cfg.algorithm.learned_rewards),
        ensemble_size=m.ensemble_size, num_layers=m.num_layers, hid_size=m.hid_size,
        activation=m.activation, deterministic=m.deterministic,
        learn_logvar_bounds=m.learn_logvar_bounds, num_elites=cfg.overrides.num_elites,
        propagation_method=m.propagation_method, normalize=cfg.algorithm.normalize,
        normalize_double_precision=cfg.algorithm.normalize_double_precision, device=device,
    )


def train(cfg: DictConfig, run_dir: str | Path, device: torch.device) -> float:
    """Run MBPO in ``run_dir`` (resuming from its last checkpoint if ``cfg.resume``).
    Returns the best evaluation return."""
    run_dir = Path(run_dir)
    o, alg = cfg.overrides, cfg.algorithm
    seed = int(cfg.seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)

    # ---- environments, model, agent, buffers --------------------------------------------
    env_kwargs = dict(distraction_dimensions=o.get("distraction_dimensions", 0),
                      pure_noise_distraction=o.get("pure_noise_distraction", False))
    env = envs.make_env(o.env, seed=seed, **env_kwargs)
    test_env = envs.make_env(o.env, seed=seed + 10_000, **env_kwargs)
    obs_dim = env.observation_space.shape[0]
    act_dim = env.action_space.shape[0]
    rule = envs.termination_rule(o.env, env_kwargs["distraction_dimensions"])

    model = build_model(cfg, obs_dim, act_dim, device)
    trainer = ModelTrainer(model, lr=o.model_lr, weight_decay=o.model_wd)
    agent = SAC(obs_dim, act_dim, env.action_space.low, env.action_space.high, sac_config(cfg),
                device=device, seed=seed)
    model_env = ModelEnv(model, rule, envs.term_fn(o.env), generator=gen)
    va_cfg = value_aware_config(cfg)
    model_loss = None if va_cfg.kind == "mle" else ModelLoss(va_cfg, model, agent, obs_dim, gen)
    value_update_interval = int(o.get("value_update_interval", 5))
    refit_value = o.get("model_loss_type") is not None and value_update_interval > 0

    dtype = torch.float64 if alg.normalize_double_precision else torch.float32
    capacity = int(o.num_steps) + int(alg.initial_exploration_steps)
    real_buffer = ReplayBuffer(capacity, (obs_dim,), (act_dim,), device=device, dtype=dtype)
    rollout_batch = int(o.effective_model_rollouts_per_step) * int(alg.freq_train_model)
    trains_per_epoch = math.ceil(o.epoch_length / alg.freq_train_model)
    model_buffer: ReplayBuffer | None = None

    def model_buffer_for(rollout_length: int, current: ReplayBuffer | None) -> ReplayBuffer:
        cap = rollout_length * rollout_batch * trains_per_epoch * o.num_epochs_to_retain_sac_buffer
        if current is None:
            return ReplayBuffer(cap, (obs_dim,), (act_dim,), device=device)
        return current if current.capacity == cap else current.resized(cap)

    # ---- state: fresh, or restored from the last checkpoint ------------------------------
    epoch = env_steps = updates_made = 0
    best_eval, wall_time_before = -math.inf, 0.0
    # running sums of the SAC metrics since the last sac.csv row, and the last model stats
    sac_sums: dict[str, torch.Tensor] = {}
    model_stats: dict[str, float] = {}
    explored = regenerate_model_buffer = False
    ckpt_path = latest_checkpoint(run_dir) if cfg.resume else None
    env_rngs = [env.unwrapped.np_random, test_env.unwrapped.np_random]
    if ckpt_path is not None:
        state = load_checkpoint(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["model_optimizer"])
        agent.load_full_state_dict(state["agent"])
        real_buffer.load_state_dict(state["real_buffer"])
        if state.get("model_buffer") is not None:
            model_buffer = model_buffer_for(state["rollout_length"], None)
            model_buffer.load_state_dict(state["model_buffer"])
        epoch, env_steps = state["epoch"], state["env_steps"]
        updates_made, best_eval = state["updates_made"], state["best_eval"]
        wall_time_before = state["wall_time_s"]
        sac_sums = state.get("sac_sums", {})
        model_stats = state.get("model_stats", {})
        explored = True
        # the model buffer is derived data: unless the checkpoint holds it, refill it with the
        # restored model and policy (the rollouts the next model update would make anyway)
        regenerate_model_buffer = state.get("model_buffer") is None and bool(model.elite_models)
        set_rng_state(state["rng"], generators=[gen], numpy_generators=env_rngs)
        say(f"resumed from {ckpt_path}: epoch {epoch}, env step {env_steps}")
    # a resumed run drops the log rows written after its checkpoint: they are redone
    logger = RunLogger(run_dir, use_tensorboard=cfg.use_tensorboard, use_wandb=cfg.use_wandb,
                       wandb_kwargs=dict(project=cfg.wandb_project_name,
                                         group=cfg.wandb_group_name,
                                         config=OmegaConf.to_container(cfg, resolve=True)),
                       resume_step=env_steps if ckpt_path is not None else None)

    def checkpoint(rollout_length: int) -> None:
        logger.flush()
        save_run_checkpoint(run_dir, env_steps, {
            "epoch": epoch, "env_steps": env_steps, "updates_made": updates_made,
            "best_eval": best_eval, "rollout_length": rollout_length,
            "wall_time_s": wall_time_before + time.perf_counter() - t_start,
            "model": model.state_dict(), "model_optimizer": trainer.optimizer.state_dict(),
            "agent": agent.full_state_dict(), "real_buffer": real_buffer.state_dict(),
            "model_buffer": (model_buffer.state_dict()
                             if cfg.get("checkpoint_model_buffer", False) and model_buffer
                             else None),
            "rng": rng_state(generators=[gen], numpy_generators=env_rngs),
            "sac_sums": sac_sums, "model_stats": model_stats,
            "config": OmegaConf.to_container(cfg, resolve=True),
        }, keep_last=cfg.keep_checkpoints)

    # ---- initial exploration (not counted in env_steps, as mbrl-lib) ----------------------
    if not explored:
        obs, _ = env.reset()
        for _ in range(int(alg.initial_exploration_steps)):
            if alg.random_initial_explore:
                act = env.action_space.sample()
            else:
                act = agent.act(torch.as_tensor(obs, device=device), sample=True).cpu().numpy()
            next_obs, reward, terminated, truncated, _ = env.step(act)
            real_buffer.add(obs, act, next_obs, reward, terminated, truncated)
            obs = next_obs
            if terminated or truncated:
                obs, _ = env.reset()

    # ---- main loop -----------------------------------------------------------------------
    show = {"auto": None, True: True, False: False}.get(cfg.progress, None)
    progress = StepProgress(int(o.num_steps), initial=env_steps,
                            disable=None if show is None else not show)
    obs, episode_return = None, 0.0
    t_start = time.perf_counter()
    while env_steps < o.num_steps:
        rollout_length = int(truncated_linear(*o.rollout_schedule, epoch + 1))
        model_buffer = model_buffer_for(rollout_length, model_buffer)
        if regenerate_model_buffer:
            regenerate_model_buffer = False
            rollout_model_and_populate_buffer(model_env, real_buffer, agent, model_buffer,
                                              rollout_length, rollout_batch,
                                              alg.sac_samples_action, gen)
        # num_steps bounds the run: the last epoch is cut short, then evaluated and saved
        for steps_epoch in range(min(int(o.epoch_length), int(o.num_steps) - env_steps)):
            if obs is None or (alg.reset_env_each_epoch and steps_epoch == 0):
                obs, _ = env.reset()
                episode_return = 0.0
            obs_t = torch.as_tensor(obs, device=device)
            act = agent.act(obs_t, sample=not alg.env_step_mean_action).cpu().numpy()
            next_obs, reward, terminated, truncated, _ = env.step(act)
            real_buffer.add(obs, act, next_obs, reward, terminated, truncated)
            episode_return += float(reward)
            obs = next_obs
            if terminated or truncated:
                logger.log(env_steps + 1, group="train", episode_return=episode_return)
                progress.set_return(episode_return)
                obs = None

            # ---- model training and rollouts ---------------------------------------------
            if (env_steps + 1) % alg.freq_train_model == 0:
                inputs, targets = model_dataset(real_buffer, alg.learned_rewards,
                                                alg.target_is_delta)
                if model_loss is not None:
                    data = real_buffer.get_all()  # the rows `inputs` holds, in that order
                    model_loss.set_data(data.obs.float(), data.next_obs.float())
                    model_loss.add_mse = va_cfg.add_mse or (va_cfg.add_mse_first_epoch
                                                            and epoch == 0)

                refit = partial(refit_critic_on_model, interval=value_update_interval,
                                model_env=model_env, real_buffer=real_buffer, agent=agent,
                                model_buffer=model_buffer, horizon=rollout_length,
                                num_rollouts=int(o.get("v_update_batch_size", 50_000)),
                                num_updates=int(o.get("num_v_updates_in_model", 5)),
                                batch_size=int(o.sac_batch_size),
                                sample_actions=alg.sac_samples_action,
                                generator=gen) if refit_value else None
                hist = trainer.train(inputs.to(torch.float32), targets.to(torch.float32),
                                     num_epochs=o.get("num_epochs_train_model"),
                                     patience=o.patience, batch_size=o.model_batch_size,
                                     validation_ratio=o.validation_ratio, generator=gen,
                                     loss_fn=None if model_loss is None else model_loss.loss,
                                     score_fn=None if model_loss is None else model_loss.score,
                                     grad_clip_norm=va_cfg.grad_clip_norm,
                                     step_callback=refit)
                added = rollout_model_and_populate_buffer(
                    model_env, real_buffer, agent, model_buffer, rollout_length, rollout_batch,
                    alg.sac_samples_action, gen)
                model_stats = {
                    "model_train_loss": hist.train_losses[-1] if hist.train_losses else math.nan,
                    "model_val_score": float(np.mean([hist.best_val_score[i]
                                                      for i in hist.elites])),
                    "model_epochs": hist.epochs, "rollout_transitions": added,
                }
                logger.log(env_steps + 1, group="model", **model_stats)

            # ---- agent training -----------------------------------------------------------
            for _ in range(int(o.num_sac_updates_per_step)):
                use_real = alg.real_data_ratio > 0 and bool(
                    torch.rand((), generator=gen, device=device) < alg.real_data_ratio)
                source = real_buffer if use_real else model_buffer
                if (env_steps + 1) % o.sac_updates_every_steps != 0 or \
                        len(source) < o.sac_batch_size:
                    break
                b = source.sample(o.sac_batch_size, gen)
                metrics = agent.update(b.obs.float(), b.act.float(), b.reward.float(),
                                       b.next_obs.float(), b.terminated)
                updates_made += 1
                for k, v in metrics.items():
                    sac_sums[k] = sac_sums.get(k, 0.0) + v
                if updates_made % cfg.log_frequency_agent == 0:
                    logger.log(env_steps + 1, group="sac", sac_updates=updates_made,
                               **{k: v / cfg.log_frequency_agent for k, v in sac_sums.items()})
                    sac_sums = {}

            env_steps += 1
            progress.update(1)

        # ---- epoch ended: evaluate, log, checkpoint --------------------------------------
        eval_return = evaluate(test_env, agent, int(alg.num_eval_episodes), device)
        best_eval = max(best_eval, eval_return)
        logger.log(env_steps, group="results", epoch=epoch,
                   total_env_steps=env_steps + int(alg.initial_exploration_steps),
                   episode_return=eval_return, rollout_length=rollout_length,
                   sac_updates=updates_made, model_buffer_size=len(model_buffer),
                   wall_time_s=wall_time_before + time.perf_counter() - t_start,
                   **model_stats)
        progress.write(f"epoch {epoch}: env step {env_steps}, eval return {eval_return:.1f}")
        epoch += 1
        every = int(cfg.checkpoint_every_epochs)
        if (every and epoch % every == 0) or env_steps >= o.num_steps:
            checkpoint(rollout_length)
    progress.close()
    logger.close()
    return best_eval
