"""Hydra configs of `fastmbrl train` (groups and keys as mbrl-lib)."""
