"""fastmbrl: model-based RL with decision-aware model learning.

Hot kernels are C++/CUDA in the torch-agnostic module ``fastmbrl._C``; ``fastmbrl.ops`` wraps
them as ``torch.library`` ops with pure-PyTorch references.
"""

__version__ = "0.1.0"

from . import ops  # noqa: E402  (registers torch.ops.fastmbrl.*)
from ._native import get_backend, set_backend  # noqa: E402

__all__ = ["ops", "get_backend", "set_backend", "__version__"]
