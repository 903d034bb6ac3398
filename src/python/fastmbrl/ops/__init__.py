"""fastmbrl ops: each module holds an op's pure-PyTorch reference (its definition), validation,
``torch.library`` registration (``torch.ops.fastmbrl.*``) and dispatch to native kernels."""

from .disagreement import ensemble_disagreement, ensemble_disagreement_reference
from .mlp import bound_logvar, ensemble_mlp, ensemble_mlp_reference
from .nll import gaussian_nll, gaussian_nll_reference
from .rollout import ensemble_rollout_step, ensemble_rollout_step_reference, member_indices
from .vagram import vagram_loss, vagram_loss_reference
from .value_aware import (
    itervaml_loss,
    reparameterized_sample,
    value_aware_loss,
    value_aware_loss_reference,
)
from .value_grad import clip_norms_at_quantile, sac_value_fn, value_gradients

__all__ = [
    "bound_logvar",
    "ensemble_disagreement",
    "ensemble_disagreement_reference",
    "ensemble_mlp",
    "ensemble_mlp_reference",
    "ensemble_rollout_step",
    "ensemble_rollout_step_reference",
    "gaussian_nll",
    "gaussian_nll_reference",
    "member_indices",
    "clip_norms_at_quantile",
    "itervaml_loss",
    "reparameterized_sample",
    "sac_value_fn",
    "vagram_loss",
    "vagram_loss_reference",
    "value_aware_loss",
    "value_aware_loss_reference",
    "value_gradients",
]
