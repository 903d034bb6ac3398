"""Probabilistic ensemble dynamics model (mbrl-lib ``models/gaussian_mlp.py::GaussianMLP``).

E independent MLPs evaluated at once by :func:`fastmbrl.ops.ensemble_mlp`. Graph of one member
(``num_layers`` hidden layers, mbrl-lib's count)::

    in -> hid -> act -> (hid -> hid -> act) x (num_layers - 1) -> hid -> 2·out   (Gaussian)
                                                                    -> out     (deterministic)

Gaussian head: ``mean = y[..., :out]`` and a soft-bounded log-variance
``lv = max - softplus(max - y[..., out:])``, ``lv = min + softplus(lv - min)`` with
``min_logvar = -10``, ``max_logvar = 0.5`` per output (frozen unless ``learn_logvar_bounds``).

Losses (mbrl-lib's exact definitions; inputs are normalized, targets are not)::

    Gaussian:       Σ_e mean_{b,d}[(μ - y)² exp(-lv) + lv] + 0.01 (Σ max_logvar - Σ min_logvar)
    deterministic:  Σ_{e,b,d} (μ - y)²                          (a sum, as mbrl-lib)
    eval_score:     mean_{b,d} (μ - y)²  per member -> [E]      (MSE of the mean, never NLL)

Propagation (mbrl-lib ``_forward_ensemble``; every mode uses the elites only):

    random_model   each row gets an elite, balanced (each elite gets ⌊n/k⌋ or ⌈n/k⌉ rows),
                   drawn afresh at every call (TS1)
    fixed_model    the same assignment drawn once by :meth:`reset_propagation` (TS∞)
    expectation    the average of the elites' means and of their log-variances

Parameter layout: ``weights[l] [E, in_l, out_l]``, ``biases[l] [E, out_l]``, which go straight
into ``ensemble_mlp`` and ``ensemble_rollout_step`` (see :meth:`rollout_params`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..ops.mlp import ACTIVATIONS, ensemble_mlp
from ..ops.nll import gaussian_nll
from .normalizer import Normalizer

PROPAGATION_METHODS = ("random_model", "fixed_model", "expectation")


@torch.no_grad()
def truncated_normal_(tensor: torch.Tensor, std: float, generator=None) -> torch.Tensor:
    """In place: N(0, std²), every value outside ±2·std resampled until none is (mbrl-lib).

    Drawn on the generator's device (if one is given) and copied into ``tensor``.
    """
    device = generator.device if generator is not None else tensor.device
    t = torch.empty(tensor.shape, dtype=tensor.dtype, device=device).normal_(
        0.0, std, generator=generator
    )
    while True:
        bad = t.abs() > 2 * std
        n_bad = int(bad.sum())
        if n_bad == 0:
            break
        t[bad] = torch.empty(n_bad, dtype=t.dtype, device=device).normal_(
            0.0, std, generator=generator
        )
    return tensor.copy_(t)


def balanced_member_indices(
    n: int, members: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Assign each of ``n`` rows one of ``members [k]``, each member getting ⌊n/k⌋ or ⌈n/k⌉ rows.

    mbrl-lib draws ``perm = randperm(n)`` and gives rows ``perm[j·n/k:(j+1)·n/k]`` to elite j
    (it needs ``n % k == 0``); this is the same distribution, and also defined for other n.
    Returns ``[n]`` long member ids on ``members.device``.
    """
    gen_device = generator.device if generator is not None else members.device
    perm = torch.randperm(n, generator=generator, device=gen_device).to(members.device)
    slots = torch.arange(n, device=members.device) % members.numel()
    return members[slots[perm]]


class GaussianEnsemble(nn.Module):
    """Ensemble of MLPs each predicting a diagonal Gaussian (or, if deterministic, a mean).

    Args:
        in_size: model input size (obs + action for MBPO).
        out_size: model output size (Δobs + reward for MBPO).
        ensemble_size: E, the number of members (mbrl-lib MBPO: 7).
        num_layers: hidden layers, each ``Linear + activation`` (mbrl-lib: 4).
        hid_size: hidden width (mbrl-lib: 200).
        activation: ``"silu"`` (mbrl-lib MBPO), ``"relu"`` or ``"tanh"``.
        deterministic: no log-variance head; the loss is the summed squared error.
        learn_logvar_bounds: train ``min_logvar``/``max_logvar`` (mbrl-lib default: frozen).
        num_elites: how many best members the trainer keeps as elites (mbrl-lib: 5; at most E).
        propagation_method: ``"random_model"``, ``"fixed_model"`` or ``"expectation"``.
        normalize: keep an input :class:`Normalizer` (applied inside :meth:`forward`).
        normalize_double_precision: keep its statistics in float64 (mbrl-lib MBPO).
        device, dtype: of the parameters.

    Attributes:
        weights, biases: ``nn.ParameterList`` of ``[E, in_l, out_l]`` and ``[E, out_l]``.
        min_logvar, max_logvar: ``[out]`` parameters (absent when deterministic).
        normalizer: :class:`Normalizer` over the inputs, or None.
        elite_models: list of elite member ids (all members until set); saved in the state_dict.
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        ensemble_size: int = 7,
        num_layers: int = 4,
        hid_size: int = 200,
        activation: str = "silu",
        deterministic: bool = False,
        learn_logvar_bounds: bool = False,
        num_elites: int = 5,
        propagation_method: str = "random_model",
        normalize: bool = True,
        normalize_double_precision: bool = True,
        device=None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if propagation_method not in PROPAGATION_METHODS:
            raise ValueError(
                f"propagation_method must be one of {PROPAGATION_METHODS}, "
                f"got {propagation_method!r}"
            )
        if num_elites < 1:
            raise ValueError(f"num_elites must be >= 1, got {num_elites}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.in_size, self.out_size = in_size, out_size
        self.ensemble_size, self.num_layers, self.hid_size = ensemble_size, num_layers, hid_size
        self.activation = activation
        self.deterministic = deterministic
        self.learn_logvar_bounds = learn_logvar_bounds
        self.num_elites = min(num_elites, ensemble_size)  # argsort(score)[:num_elites]
        self.propagation_method = propagation_method

        factory = dict(device=device, dtype=dtype)
        head = out_size if deterministic else 2 * out_size
        sizes = [in_size] + [hid_size] * num_layers + [head]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(ensemble_size, a, b, **factory))
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(ensemble_size, b, **factory)) for b in sizes[1:]
        )
        if deterministic:
            self.min_logvar = self.max_logvar = None
        else:
            self.min_logvar = nn.Parameter(
                torch.full((out_size,), -10.0, **factory), requires_grad=learn_logvar_bounds
            )
            self.max_logvar = nn.Parameter(
                torch.full((out_size,), 0.5, **factory), requires_grad=learn_logvar_bounds
            )
        dt = torch.float64 if normalize_double_precision else torch.float32
        self.normalizer = Normalizer(in_size, dtype=dt, device=device) if normalize else None

        self._elite_models: list[int] = list(range(ensemble_size))
        self._propagation_indices: torch.Tensor | None = None
        self.reset_parameters()

    # -----------------------------------------------------------------------------------------
    # Parameters and elites
    # -----------------------------------------------------------------------------------------
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """mbrl-lib init: per member N(0, σ), σ = 1/(2√in_l), resampled outside ±2σ; biases 0."""
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases, strict=True):
                truncated_normal_(w, 1.0 / (2.0 * math.sqrt(w.shape[1])), generator)
                b.zero_()

    @property
    def elite_models(self) -> list[int]:
        """Elite member ids, best first after training (all members before any training)."""
        return list(self._elite_models)

    @elite_models.setter
    def elite_models(self, elites) -> None:
        self.set_elite(elites)

    def set_elite(self, elites) -> None:
        """Set the elite members (any sequence of distinct ids in ``[0, E)``)."""
        elites = [int(e) for e in (elites.tolist() if torch.is_tensor(elites) else elites)]
        if not elites or len(set(elites)) != len(elites):
            raise ValueError(f"elites must be distinct and non-empty, got {elites}")
        if min(elites) < 0 or max(elites) >= self.ensemble_size:
            raise ValueError(f"elites must lie in [0, {self.ensemble_size}), got {elites}")
        self._elite_models = elites
        self._propagation_indices = None  # a fixed assignment may name a former elite

    def elite_tensor(self) -> torch.Tensor:
        """Elite ids as a ``[k]`` long tensor on the parameters' device."""
        return torch.tensor(self._elite_models, dtype=torch.long, device=self.weights[0].device)

    def get_extra_state(self):
        return {"elite_models": list(self._elite_models)}

    def set_extra_state(self, state) -> None:
        self.set_elite(state["elite_models"])

    # -----------------------------------------------------------------------------------------
    # Forward
    # -----------------------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized inputs ``[..., in]`` in the parameters' dtype."""
        if self.normalizer is not None:
            x = self.normalizer.normalize(x)
        return x.to(self.weights[0].dtype)

    def _mlp(self, xn: torch.Tensor, members: torch.Tensor | None = None):
        """Run the (optionally member-subset) ensemble on normalized ``xn``; see :meth:`forward`."""
        ws, bs = list(self.weights), list(self.biases)
        if members is not None:  # gathers (copies) the chosen members' parameters, as mbrl-lib
            ws = [w[members] for w in ws]
            bs = [b[members] for b in bs]
        out = ensemble_mlp(xn, ws, bs, self.activation, self.min_logvar, self.max_logvar)
        return (out, None) if self.deterministic else out

    def forward(self, x: torch.Tensor, normalized: bool = False):
        """Every member's prediction.

        Args:
            x: ``[E, B, in]`` (row block e goes to member e, bootstrap training) or ``[B, in]``
                (shared by all members); raw inputs, unless ``normalized``.
            normalized: ``x`` has already been through :meth:`normalize`.

        Returns:
            ``(mean [E, B, out], logvar [E, B, out])``; logvar is None when deterministic.
        """
        return self._mlp(x if normalized else self.normalize(x))

    # -----------------------------------------------------------------------------------------
    # Losses
    # -----------------------------------------------------------------------------------------
    def loss(self, x: torch.Tensor, target: torch.Tensor, normalized: bool = False):
        """Training loss (scalar), mbrl-lib's definition (module docstring).

        Args:
            x: ``[E, B, in]`` or ``[B, in]`` inputs (raw unless ``normalized``).
            target: ``[E, B, out]`` or ``[B, out]`` (shared by all members), not normalized.
        """
        mean, logvar = self.forward(x, normalized=normalized)
        if self.deterministic:
            return ((mean - target) ** 2).sum()
        nll = gaussian_nll(mean, logvar, target, reduction="sum")
        return nll + 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())

    @torch.no_grad()
    def eval_score(
        self, x: torch.Tensor, target: torch.Tensor, normalized: bool = False, reduce: bool = True
    ) -> torch.Tensor:
        """MSE of every member's mean on ``x [B, in]``, ``target [B, out]``.

        Returns ``[E]`` (mean over rows and outputs), or ``[E, B, out]`` if not ``reduce``.
        """
        mean, _ = self.forward(x, normalized=normalized)
        err = (mean - target) ** 2
        return err.mean(dim=(1, 2)) if reduce else err

    # -----------------------------------------------------------------------------------------
    # Propagation
    # -----------------------------------------------------------------------------------------
    def reset_propagation(self, n: int, generator: torch.Generator | None = None) -> None:
        """Start ``n`` trajectories: for fixed_model, draw each one's elite once (TS∞)."""
        if self.propagation_method == "fixed_model":
            self._propagation_indices = balanced_member_indices(n, self.elite_tensor(), generator)
        else:
            self._propagation_indices = None

    def propagation_indices(
        self, n: int, generator: torch.Generator | None = None
    ) -> torch.Tensor | None:
        """Member id of each of ``n`` rows for this step: ``[n]`` long, or None (expectation).

        random_model draws a fresh balanced assignment over the elites; fixed_model returns the
        one drawn by :meth:`reset_propagation`.
        """
        if self.propagation_method == "random_model":
            return balanced_member_indices(n, self.elite_tensor(), generator)
        if self.propagation_method == "fixed_model":
            idx = self._propagation_indices
            if idx is None or idx.numel() != n:
                raise RuntimeError(
                    f"fixed_model propagation: call reset_propagation({n}) first"
                    + ("" if idx is None else f" (indices were drawn for {idx.numel()} rows)")
                )
            return idx
        return None

    def predict(
        self,
        x: torch.Tensor,
        indices: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        normalized: bool = False,
    ):
        """One prediction per row by the propagation method (the pure-PyTorch rollout path).

        Args:
            x: ``[B, in]`` inputs (raw unless ``normalized``).
            indices: ``[B]`` member id per row; default :meth:`propagation_indices`.

        Returns:
            ``(mean [B, out], logvar [B, out] or None)``.
        """
        xn = x if normalized else self.normalize(x)
        if self.propagation_method == "expectation" and indices is None:
            mean, logvar = self._mlp(xn, self.elite_tensor())
            return mean.mean(0), (None if logvar is None else logvar.mean(0))
        if indices is None:
            indices = self.propagation_indices(xn.shape[0], generator)
        B = xn.shape[0]
        members, counts = torch.unique(indices, return_counts=True)
        rows = torch.argsort(indices, stable=True)  # rows grouped by member, members ascending
        if bool((counts == counts[0]).all()):
            # balanced (mbrl-lib's case): each member runs on its own B/k rows only
            k = members.numel()
            mean, logvar = self._mlp(xn[rows].view(k, B // k, -1), members)
            out_mean = torch.empty_like(mean.reshape(B, -1))
            out_mean[rows] = mean.reshape(B, -1)
            if logvar is None:
                return out_mean, None
            out_logvar = torch.empty_like(out_mean)
            out_logvar[rows] = logvar.reshape(B, -1)
            return out_mean, out_logvar
        # unbalanced: run every member on every row, pick each row's member
        mean, logvar = self._mlp(xn)
        ar = torch.arange(B, device=xn.device)
        return mean[indices, ar], (None if logvar is None else logvar[indices, ar])

    def rollout_params(self) -> dict:
        """Keyword arguments of ``fastmbrl.ops.ensemble_rollout_step`` that come from the model.

        ``weights``/``biases`` (lists of ``[E, in_l, out_l]`` / ``[E, out_l]``, the live
        parameters), ``elites [k]`` long, ``members [n]`` (the fixed_model assignment, else None),
        ``input_mean``/``input_std [in]`` in the parameters' dtype (None without a normalizer),
        ``min_logvar``/``max_logvar [out]`` (None when deterministic) and ``activation``.
        Detach or wrap in ``torch.no_grad`` as the caller needs.
        """
        dt = self.weights[0].dtype
        members = None
        if self.propagation_method == "fixed_model":
            members = self._propagation_indices
        return dict(
            weights=list(self.weights),
            biases=list(self.biases),
            elites=self.elite_tensor(),
            members=members,
            input_mean=None if self.normalizer is None else self.normalizer.mean.to(dt),
            input_std=None if self.normalizer is None else self.normalizer.std.to(dt),
            min_logvar=self.min_logvar,
            max_logvar=self.max_logvar,
            activation=self.activation,
        )

    def extra_repr(self) -> str:
        return (
            f"in_size={self.in_size}, out_size={self.out_size}, E={self.ensemble_size}, "
            f"num_layers={self.num_layers}, hid_size={self.hid_size}, "
            f"activation={self.activation}, deterministic={self.deterministic}, "
            f"num_elites={self.num_elites}, propagation={self.propagation_method}"
        )
