"""Dynamics models: the probabilistic ensemble (mbrl-lib ``GaussianMLP``), its input
normalizer and its trainer."""

from .ensemble import PROPAGATION_METHODS, GaussianEnsemble, balanced_member_indices
from .normalizer import Normalizer
from .trainer import ModelTrainer, TrainHistory, bootstrap_indices

__all__ = [
    "PROPAGATION_METHODS",
    "GaussianEnsemble",
    "ModelTrainer",
    "Normalizer",
    "TrainHistory",
    "balanced_member_indices",
    "bootstrap_indices",
]
