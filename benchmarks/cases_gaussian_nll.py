"""Benchmark cases for fastmbrl.ops.gaussian_nll: forward + backward of the summed loss."""

from __future__ import annotations

import torch

from fastmbrl.ops import gaussian_nll, gaussian_nll_reference

# (E, B, D): the MBPO HalfCheetah training batch, a Humanoid-sized one, and a large one.
SHAPES = [(7, 256, 18), (7, 256, 377), (7, 16384, 18)]


def cases(device: str, quick: bool = False):
    """Yield (op, shape, {impl: callable}) for the harness."""
    shapes = SHAPES[:1] if quick else SHAPES
    for E, B, D in shapes:
        g = torch.Generator(device=device).manual_seed(0)
        mean = torch.randn(E, B, D, device=device, generator=g, requires_grad=True)
        logvar = torch.randn(E, B, D, device=device, generator=g, requires_grad=True)
        target = torch.randn(E, B, D, device=device, generator=g)

        def run(fn, mean=mean, logvar=logvar, target=target):
            def step():
                loss = fn(mean, logvar, target)
                loss.backward()
                mean.grad = logvar.grad = None

            return step

        compiled = torch.compile(gaussian_nll_reference)
        impls = {
            "reference-eager": run(gaussian_nll_reference),
            "reference-compile": run(compiled),
            "native": run(lambda m, lv, t: gaussian_nll(m, lv, t, backend="native")),
        }
        yield "gaussian_nll fwd+bwd", f"E={E} B={B} D={D}", impls
