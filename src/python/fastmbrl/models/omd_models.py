"""OMD's networks as functional parameter dicts: deterministic / Gaussian dynamics models and
frozen random value functions (VEP).

Every network is an ensemble MLP evaluated by :func:`fastmbrl.ops.mlp.ensemble_mlp_reference`
(pure PyTorch, so ``torch.func`` can take Hessian-vector products through it), with its
parameters in a dict ``{"w0": [E, in, h], "b0": [E, h], ...}`` so a loss can be written as a
function of the parameters (``torch.func.vjp``). Initialisation as the original (haiku):
orthogonal weights (gain √2 for hidden layers; the last layer 0.01 in CartPole, √2 in MuJoCo),
zero biases.
"""

from __future__ import annotations

import math

import torch

from ..ops.mlp import ensemble_mlp_reference

Params = dict[str, torch.Tensor]


def init_mlp(ensemble: int, sizes: list[int], final_gain: float, gen: torch.Generator,
             dtype: torch.dtype = torch.float32, hidden_gain: float = math.sqrt(2.0)) -> Params:
    """Parameters of ``ensemble`` MLPs with layer sizes ``sizes`` (in, hidden..., out)."""
    params: Params = {}
    n = len(sizes) - 1
    for i, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        gain = final_gain if i == n - 1 else hidden_gain
        ws = []
        for _ in range(ensemble):
            w = torch.empty(fi, fo, dtype=torch.float64)
            torch.nn.init.orthogonal_(w, gain=gain, generator=gen)
            ws.append(w)
        params[f"w{i}"] = torch.stack(ws).to(dtype)
        params[f"b{i}"] = torch.zeros(ensemble, fo, dtype=dtype)
    return params


def mlp(params: Params, x: torch.Tensor) -> torch.Tensor:
    """ReLU ensemble MLP: ``x [B, in] -> [E, B, out]``."""
    n = len(params) // 2
    return ensemble_mlp_reference(x, [params[f"w{i}"] for i in range(n)],
                                  [params[f"b{i}"] for i in range(n)], activation="relu")


def leaf_params(params: Params, device) -> Params:
    """Trainable leaf copies (``requires_grad``) on ``device``."""
    return {k: v.detach().to(device).clone().requires_grad_(True) for k, v in params.items()}


class DynamicsModel:
    """``(s, a) -> (ŝ', r̂)``, absolute next state (not a delta), as the original.

    * ``split=True`` (CartPole): two MLPs, one for the next state, one for the reward; the
      input is ``[s, onehot(a)]`` for a discrete task.
    * ``split=False`` (MuJoCo): one MLP with ``obs_dim + 1`` outputs ``[ŝ', r̂]``.
    * ``gaussian=True`` (CartPole ``--prob_model``): the state MLP outputs mean and log σ
      (clipped to [-5, 2]); ``ŝ' = mean + σ·ε`` with the given noise ε.
    * ``learn_reward=False`` (``--no_learn_reward``): no reward network; ``r̂`` is None and the
      caller uses the true reward.

    The parameters are one dict (keys ``s.w0``, ``r.w0`` ... or ``sr.w0`` ...).
    """

    def __init__(self, obs_dim: int, in_dim: int, hidden: int, num_layers: int = 2, *,
                 split: bool, gaussian: bool = False, learn_reward: bool = True,
                 final_gain: float = 0.01, gen: torch.Generator, dtype=torch.float32):
        self.obs_dim, self.split, self.gaussian = obs_dim, split, gaussian
        self.learn_reward = learn_reward
        hid = [hidden] * num_layers
        self.init: Params = {}
        if split or not learn_reward:
            out = 2 * obs_dim if gaussian else obs_dim
            self.init.update({f"s.{k}": v for k, v in
                              init_mlp(1, [in_dim, *hid, out], final_gain, gen, dtype).items()})
            if learn_reward:
                self.init.update({f"r.{k}": v for k, v in
                                  init_mlp(1, [in_dim, *hid, 1], final_gain, gen,
                                           dtype).items()})
        else:
            if gaussian:
                raise ValueError("DynamicsModel: gaussian=True needs split=True")
            self.init.update({f"sr.{k}": v for k, v in
                              init_mlp(1, [in_dim, *hid, obs_dim + 1], final_gain, gen,
                                       dtype).items()})

    @staticmethod
    def _sub(params: Params, prefix: str) -> Params:
        return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}

    def __call__(self, params: Params, x: torch.Tensor, noise: torch.Tensor | None = None):
        """``x = [s, a-encoding] [B, in]`` -> ``(ŝ' [B, O], mean [B, O], log σ or None,
        r̂ [B] or None)``; ``noise [B, O]`` is needed when gaussian."""
        if "sr.w0" in params:
            out = mlp(self._sub(params, "sr."), x)[0]
            nxt = out[:, : self.obs_dim]
            return nxt, nxt, None, out[:, self.obs_dim]
        out = mlp(self._sub(params, "s."), x)[0]
        reward = mlp(self._sub(params, "r."), x)[0, :, 0] if self.learn_reward else None
        if self.gaussian:
            mean, log_std = out[:, : self.obs_dim], out[:, self.obs_dim :].clamp(-5.0, 2.0)
            return mean + noise * log_std.exp(), mean, log_std, reward
        return out, out, None, reward
