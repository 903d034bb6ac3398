"""Pieces shared by the model-based algorithms: schedules, the learned-model environment,
model rollouts into a replay buffer, evaluation, and the model dataset."""

from __future__ import annotations

import gymnasium as gym
import torch

from ..buffers import ReplayBuffer
from ..models import GaussianEnsemble
from ..ops import ensemble_rollout_step
from ..ops.termination import TerminationRule


def truncated_linear(min_x: float, max_x: float, min_y: float, max_y: float, x: float) -> float:
    """``min_y`` for ``x <= min_x``, a linear ramp to ``max_y`` at ``max_x``, then ``max_y``
    (mbrl-lib ``util/math.py::truncated_linear``; MBPO's rollout-length schedule)."""
    if x <= min_x:
        return float(min_y)
    if x >= max_x:
        return float(max_y)
    return float(min_y + (x - min_x) / (max_x - min_x) * (max_y - min_y))


def model_dataset(buffer: ReplayBuffer, learned_rewards: bool = True, target_is_delta: bool = True):
    """Inputs ``[obs, act]`` and targets ``[next_obs − obs, reward]`` of every stored transition
    (mbrl-lib's one-dimensional transition model with ``target_is_delta`` and learned rewards)."""
    batch = buffer.get_all()
    obs, act, next_obs = batch.obs, batch.act, batch.next_obs
    inputs = torch.cat([obs, act.to(obs.dtype)], dim=-1)
    target = next_obs - obs if target_is_delta else next_obs
    if learned_rewards:
        target = torch.cat([target, batch.reward.to(obs.dtype).unsqueeze(-1)], dim=-1)
    return inputs, target


class ModelEnv:
    """The learned model as a batched environment: ``step(obs [N, O], act [N, A])`` ->
    ``(next_obs [N, O], reward [N], done [N] bool)``.

    Runs ``fastmbrl.ops.ensemble_rollout_step`` (one member evaluated per row, chosen by the
    model's propagation method; sampling with a counter-based RNG; the task's termination rule
    evaluated in the kernel where it is a box rule, else ``term_fn`` applied after it).
    """

    def __init__(self, model: GaussianEnsemble, termination: TerminationRule | None,
                 term_fn=None, generator: torch.Generator | None = None):
        self.model = model
        self.termination = termination if termination is not None else term_fn
        self.generator = generator

    def reset(self, n: int) -> None:
        self.model.reset_propagation(n, self.generator)

    @torch.no_grad()
    def step(self, obs: torch.Tensor, act: torch.Tensor, sample: bool = True):
        model = self.model
        params = model.rollout_params()
        members = model.propagation_indices(obs.shape[0], self.generator)
        if members is not None:
            params["members"] = members
        dtype = params["weights"][0].dtype
        next_obs, reward, done = ensemble_rollout_step(
            obs.to(dtype),
            act.to(dtype),
            params["weights"],
            params["biases"],
            members=params["members"],
            elites=params["elites"] if params["members"] is None else None,
            input_mean=params["input_mean"],
            input_std=params["input_std"],
            min_logvar=params["min_logvar"],
            max_logvar=params["max_logvar"],
            activation=params["activation"],
            termination=self.termination,
            sample=sample,
            generator=self.generator,
        )
        return next_obs, reward, done


@torch.no_grad()
def rollout_model_and_populate_buffer(model_env: ModelEnv, real_buffer: ReplayBuffer, agent,
                                      model_buffer: ReplayBuffer, horizon: int, batch_size: int,
                                      sample_actions: bool = True,
                                      generator: torch.Generator | None = None) -> int:
    """MBPO's branched rollouts: ``batch_size`` start states from the real data, ``horizon``
    model steps with the current policy; every transition of a not-yet-terminated trajectory is
    added to ``model_buffer``. Returns the number of transitions added."""
    obs = real_buffer.sample(batch_size, generator).obs
    model_env.reset(obs.shape[0])
    alive = torch.ones(obs.shape[0], dtype=torch.bool, device=obs.device)
    added = 0
    for _ in range(horizon):
        act = agent.act(obs, sample=sample_actions)
        next_obs, reward, done = model_env.step(obs, act, sample=True)
        keep = alive.nonzero().squeeze(-1)  # the only host sync of a step
        n = keep.numel()
        if n:
            model_buffer.add_batch(obs[keep], act[keep], next_obs[keep], reward[keep],
                                   done[keep], torch.zeros_like(done[keep]))
        added += n
        alive &= ~done
        obs = next_obs
    return added


@torch.no_grad()
def evaluate(env: gym.Env, agent, num_episodes: int, device) -> float:
    """Average undiscounted return of ``num_episodes`` episodes with the mean action."""
    total = 0.0
    for _ in range(num_episodes):
        obs, _ = env.reset()
        done = False
        while not done:
            act = agent.act(torch.as_tensor(obs, dtype=torch.float32, device=device))
            obs, reward, terminated, truncated, _ = env.step(act.cpu().numpy())
            total += float(reward)
            done = terminated or truncated
    return total / num_episodes
