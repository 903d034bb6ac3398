"""Benchmark cases for fastmbrl.ops.vagram_loss: forward + backward of the mean loss.

E=7 members, O=17 state dimensions (HalfCheetah), K=4 value heads, per-member targets, pred
requiring grad (the model-training step), B from an MBPO batch up to 1M rows. Both modes for
B <= 262144; the B=1048576 row (value_grad alone is 1.9 GB in float32) is bounded only, and on
the CPU it is skipped when one reference-eager step takes longer than ``CPU_MAX_REF_STEP_S``.

Bytes moved by the native step (for GB/s): the fused forward reads pred, target and value_grad
and writes dpred_unit, the backward reads dpred_unit and writes the gradient of pred:
``bytes = itemsize · E·B·O · (K + 5)``; see :func:`native_bytes`.
"""

from __future__ import annotations

import time

import torch

from fastmbrl.ops import vagram_loss, vagram_loss_reference

E, O, K = 7, 17, 4
BATCHES = [256, 4096, 65536, 262144, 1048576]
BOTH_MODES_MAX_B = 262144
CPU_MAX_REF_STEP_S = 5.0


def native_bytes(B: int, itemsize: int = 4) -> int:
    """Bytes read + written by one native forward+backward step at batch B (see docstring)."""
    return itemsize * E * B * O * (K + 5)


def cases(device: str, quick: bool = False):
    """Yield (op, shape, {impl: callable}) for the harness."""
    batches = BATCHES[:1] if quick else BATCHES
    for B in batches:
        for bounded in (True, False):
            if not bounded and B > BOTH_MODES_MAX_B:
                continue
            g = torch.Generator(device=device).manual_seed(0)
            pred = torch.randn(E, B, O, device=device, generator=g, requires_grad=True)
            target = torch.randn(E, B, O, device=device, generator=g)
            value_grad = torch.randn(K, E, B, O, device=device, generator=g)

            def run(fn, pred=pred, target=target, value_grad=value_grad, bounded=bounded):
                def step():
                    loss = fn(pred, target, value_grad, bounded)
                    loss.backward()
                    pred.grad = None

                return step

            ref_eager = run(vagram_loss_reference)
            if device == "cpu" and B > BOTH_MODES_MAX_B:
                t0 = time.perf_counter()
                ref_eager()
                took = time.perf_counter() - t0
                if took > CPU_MAX_REF_STEP_S:
                    print(f"skip vagram_loss B={B}: one reference-eager step took {took:.1f} s "
                          f"> {CPU_MAX_REF_STEP_S} s on the CPU", flush=True)
                    continue
            compiled = torch.compile(vagram_loss_reference)
            impls = {
                "reference-eager": ref_eager,
                "reference-compile": run(compiled),
                "native": run(lambda p, t, v, b: vagram_loss(p, t, v, b, backend="native")),
            }
            mode = "bounded" if bounded else "unbounded"
            yield f"vagram_loss fwd+bwd {mode}", f"E={E} B={B} O={O} K={K}", impls
