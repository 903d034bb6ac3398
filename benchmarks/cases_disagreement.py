"""Benchmark cases for fastmbrl.ops.ensemble_disagreement (MOReL's truncation test).

Shapes of a model-based NPG rollout step with disagreement on: E members' predictions for all
E·N paths' rows (E=4, N=200 start states -> 800 rows, O=11 Hopper), the dataset threshold pass
(E=4, N=100k, O=11), and E=7/O=17 (an MBPO-size ensemble on HalfCheetah). No backward (the op
has no gradient).
"""

from __future__ import annotations

import torch

from fastmbrl.ops import ensemble_disagreement, ensemble_disagreement_reference

SHAPES = [(4, 800, 11), (4, 8192, 11), (4, 100_000, 11), (7, 65536, 17)]


def cases(device: str, quick: bool = False):
    """Yield (op, shape, {impl: callable}) for the harness."""
    for E, N, O in SHAPES[:1] if quick else SHAPES:
        g = torch.Generator(device=device).manual_seed(0)
        pred = torch.randn(E, N, O, device=device, generator=g)
        compiled = torch.compile(ensemble_disagreement_reference)
        yield ("ensemble_disagreement", f"E={E} N={N} O={O}", {
            "reference-eager": lambda p=pred: ensemble_disagreement_reference(p),
            "reference-compile": lambda p=pred, c=compiled: c(p),
            "native": lambda p=pred: ensemble_disagreement(p, backend="native"),
        })
