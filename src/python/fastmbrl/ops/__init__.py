"""fastmbrl ops: each module holds an op's pure-PyTorch reference (its definition), validation,
``torch.library`` registration (``torch.ops.fastmbrl.*``) and dispatch to native kernels."""

from .mlp import bound_logvar, ensemble_mlp, ensemble_mlp_reference
from .nll import gaussian_nll, gaussian_nll_reference
from .rollout import ensemble_rollout_step, ensemble_rollout_step_reference, member_indices

__all__ = [
    "bound_logvar",
    "ensemble_mlp",
    "ensemble_mlp_reference",
    "ensemble_rollout_step",
    "ensemble_rollout_step_reference",
    "gaussian_nll",
    "gaussian_nll_reference",
    "member_indices",
]
