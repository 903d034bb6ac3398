"""fastmbrl ops: each module holds an op's pure-PyTorch reference (its definition), validation,
``torch.library`` registration (``torch.ops.fastmbrl.*``) and dispatch to native kernels."""

from .gaussian_nll import gaussian_nll, gaussian_nll_reference

__all__ = ["gaussian_nll", "gaussian_nll_reference"]
