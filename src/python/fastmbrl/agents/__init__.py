"""Model-free learners used by the model-based algorithms."""

from .sac import SAC, SACConfig

__all__ = ["SAC", "SACConfig"]
