"""Benchmark cases for fastmbrl.ops.ensemble_mlp: one model training step.

A step is mbrl-lib's: forward of the ensemble Gaussian MLP (E=7, B=256, 4 hidden layers of 200,
SiLU, softly bounded logvar with frozen bounds), the NLL summed over members plus
``0.01 (Σ max_logvar - Σ min_logvar)``, backward, and an Adam step (torch.optim.Adam, lr 1e-3).

Implementations (all share the same loss and the same eager Adam):

``reference-eager``    ``ensemble_mlp_reference`` + ``gaussian_nll_reference``
``reference-compile``  the same loss function under ``torch.compile`` (forward and backward
                       compiled by inductor; the optimizer step stays eager)
``native``             ``ensemble_mlp(..., backend="native")`` + ``gaussian_nll_reference``
                       (the NLL is identical, so the difference is the ensemble MLP alone)
``peer-mbrl-lib``      mbrl-lib 0.2.0's ``GaussianMLP`` with its own ``loss`` (same model)
"""

from __future__ import annotations

import torch

from fastmbrl.ops import ensemble_mlp, ensemble_mlp_reference, gaussian_nll_reference

E, B, HIDDEN, N_HIDDEN = 7, 256, 200, 4
# (name, input width, predicted dimension D; the last layer has 2·D outputs)
MODELS = [("halfcheetah", 23, 18), ("humanoid", 393, 377)]


def _params(in_size, out_size, device, gen):
    sizes = [in_size] + [HIDDEN] * N_HIDDEN + [2 * out_size]
    weights, biases = [], []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        w = torch.randn(E, a, b, device=device, generator=gen) / (2 * a**0.5)
        weights.append(w.requires_grad_())
        biases.append(torch.zeros(E, b, device=device, requires_grad=True))
    lo = torch.full((out_size,), -10.0, device=device)
    hi = torch.full((out_size,), 0.5, device=device)
    return weights, biases, lo, hi


def _loss_fn(mlp):
    def loss(x, target, weights, biases, lo, hi):
        mean, logvar = mlp(x, weights, biases, "silu", lo, hi)
        return gaussian_nll_reference(mean, logvar, target) + 0.01 * (hi.sum() - lo.sum())

    return loss


def _step(loss_fn, x, target, weights, biases, lo, hi):
    opt = torch.optim.Adam(weights + biases, lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x, target, weights, biases, lo, hi)
        loss.backward()
        opt.step()

    return step


def _mbrl_lib_step(in_size, out_size, device, x, target):
    """mbrl-lib's own GaussianMLP (pip install --no-deps mbrl==0.2.0 termcolor)."""
    from mbrl.models import GaussianMLP

    model = GaussianMLP(
        in_size=in_size, out_size=out_size, device=device, num_layers=N_HIDDEN,
        ensemble_size=E, hid_size=HIDDEN, deterministic=False, propagation_method=None,
        learn_logvar_bounds=False, activation_fn_cfg={"_target_": "torch.nn.SiLU"},
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = model.loss(x, target)
        loss.backward()
        opt.step()

    return step


def cases(device: str, quick: bool = False):
    """Yield (op, shape, {impl: callable}) for the harness."""
    models = MODELS[:1] if quick else MODELS
    for name, in_size, out_size in models:
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(E, B, in_size, device=device, generator=g)
        target = torch.randn(E, B, out_size, device=device, generator=g)
        params = {
            impl: _params(in_size, out_size, device, torch.Generator(device=device).manual_seed(1))
            for impl in ("reference-eager", "reference-compile", "native")
        }
        native = _loss_fn(lambda *a: ensemble_mlp(*a, backend="native"))
        impls = {
            "reference-eager": _step(_loss_fn(ensemble_mlp_reference), x, target,
                                     *params["reference-eager"]),
            "reference-compile": _step(torch.compile(_loss_fn(ensemble_mlp_reference)), x,
                                       target, *params["reference-compile"]),
            "native": _step(native, x, target, *params["native"]),
        }
        try:
            impls["peer-mbrl-lib"] = _mbrl_lib_step(in_size, out_size, device, x, target)
        except Exception as exc:  # mbrl-lib not installed or not importable: reported, not fatal
            print(f"skip peer-mbrl-lib: {type(exc).__name__}: {exc}")
        shape = f"{name} E={E} B={B} {in_size}-{HIDDEN}x{N_HIDDEN}-{2 * out_size}"
        yield "ensemble_mlp train step", shape, impls
