"""Benchmark cases for fastmbrl.ops.value_aware_loss: forward + backward of VA-MBPO's summed
MA-L1 loss, ``q_model [E, B]`` requiring grad, ``q_true [E, B]`` a detached target."""

from __future__ import annotations

import torch

from fastmbrl.ops import value_aware_loss, value_aware_loss_reference

E = 7
# rows per member: the MBPO/VA-MBPO training batch, a large one, and a very large one
BATCHES = [256, 65536, 1048576]


def cases(device: str, quick: bool = False):
    """Yield (op, shape, {impl: callable}) for the harness."""
    for B in BATCHES[:1] if quick else BATCHES:
        g = torch.Generator(device=device).manual_seed(0)
        q_model = torch.randn(E, B, device=device, generator=g, requires_grad=True)
        q_true = torch.randn(E, B, device=device, generator=g)

        def run(fn, q_model=q_model, q_true=q_true):
            def step():
                loss = fn(q_true, q_model)
                loss.backward()
                q_model.grad = None

            return step

        compiled = torch.compile(value_aware_loss_reference)
        impls = {
            "reference-eager": run(value_aware_loss_reference),
            "reference-compile": run(compiled),
            "native": run(lambda t, m: value_aware_loss(t, m, backend="native")),
        }
        yield "value_aware_loss l1 fwd+bwd", f"E={E} B={B}", impls
