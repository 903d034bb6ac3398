"""Benchmark cases for fastmbrl.ops.ensemble_rollout_step: one random_model rollout step.

Model: mbrl-lib's default GaussianMLP ensemble (E=7, 4 hidden layers of 200, SiLU, Gaussian
head), 5 elites, HalfCheetah-sized (O=17, A=6) and Humanoid-sized (O=376, A=17, termination
z outside [1, 2]). Every implementation draws its members inside the timed call.

Implementations:
- ``reference-eager``: fastmbrl's pure-PyTorch reference (``backend="reference"``).
- ``reference-compile``: the same under ``torch.compile(dynamic=True)`` (inductor; the
  reference's loop over members graph-breaks, so it is not fullgraph, and its torch Philox runs
  eagerly: ``philox_normal`` is ``torch.compiler.disable``d because inductor did not finish
  compiling its 10 unrolled rounds within 4 minutes on the 2-core CPU).
- ``native``: ``backend="native"`` (CPU: torch GEMMs per member segment + fused C++ epilogue).
- ``peer-mbrl-style``: a local RE-IMPLEMENTATION of mbrl-lib 0.2.0's ``random_model``
  propagation algorithm (randperm, view as [n_elites, N/n_elites, in], batched matmul through
  GaussianMLP-like layers with a ``W[elites]`` gather, un-permute, ``torch.normal``), written
  here from the digest in notes/mbpo-va-vagram.md §1.3; it is NOT mbrl-lib itself.
- ``peer-mbrl-lib``: mbrl-lib 0.2.0 itself (``pip install --no-deps mbrl==0.2.0 termcolor``):
  its ``GaussianMLP`` with the same weights, 5 elites, ``random_model`` propagation, sampled by
  ``sample_1d`` as its ``ModelEnv.step`` does (input normalisation, next = obs + Δ and the
  termination function added as in ``ModelEnv``). Requires N divisible by the 5 elites.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastmbrl.ops import (
    bound_logvar,
    ensemble_rollout_step,
    ensemble_rollout_step_reference,
    member_indices,
)
from fastmbrl.ops.termination import TerminationRule

E, N_ELITES, HIDDEN, LAYERS = 7, 5, 200, 4
ENVS = {  # name: (O, A, termination rule or None)
    "halfcheetah": (17, 6, None),
    # mbrl-lib humanoid: done iff z < 1 or z > 2, z = obs[0]
    "humanoid": (376, 17, TerminationRule((1.0,), (2.0,), inclusive=True, check_finite=False,
                                          name="humanoid")),
}


def _model(O, A, device, gen):
    D = O + 1
    sizes = [O + A] + [HIDDEN] * LAYERS + [2 * D]
    weights = [torch.randn(E, i, o, device=device, generator=gen) / (2 * i**0.5)
               for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    biases = [torch.zeros(E, o, device=device) for o in sizes[1:]]
    extra = dict(
        input_mean=torch.randn(O + A, device=device, generator=gen),
        input_std=torch.rand(O + A, device=device, generator=gen) + 0.5,
        min_logvar=torch.full((D,), -10.0, device=device),
        max_logvar=torch.full((D,), 0.5, device=device),
    )
    return weights, biases, extra


def peer_mbrl_style_step(state, action, weights, biases, elites, input_mean, input_std,
                         min_logvar, max_logvar, term_fn=None):
    """Re-implementation of mbrl-lib's random_model propagation + ModelEnv.step (see above)."""
    N, O = state.shape
    n_el = elites.numel()
    x = (torch.cat([state, action], -1) - input_mean) / input_std
    perm = torch.randperm(N, device=state.device)
    h = x[perm].view(n_el, N // n_el, -1)
    last = len(weights) - 1
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = h.matmul(w[elites]) + b[elites].unsqueeze(1)  # EnsembleLinearLayer with elites
        if layer < last:
            h = F.silu(h)
    D = O + 1
    mean = h[..., :D].reshape(N, D)
    logvar = bound_logvar(h[..., D:], min_logvar, max_logvar).reshape(N, D)
    mean[perm] = mean.clone()
    logvar[perm] = logvar.clone()
    sample = torch.normal(mean, torch.exp(logvar).sqrt())
    next_state = state + sample[:, :O]
    done = term_fn(next_state) if term_fn is not None else torch.zeros(
        N, dtype=torch.bool, device=state.device)
    return next_state, sample[:, O], done


def mbrl_lib_step(weights, biases, elites, input_mean, input_std, min_logvar, max_logvar,
                  device, term_fn=None):
    """A step function running mbrl-lib's own GaussianMLP (raises ImportError without it)."""
    from mbrl.models import GaussianMLP

    in_size, out2 = weights[0].shape[1], weights[-1].shape[2]
    model = GaussianMLP(in_size, out2 // 2, device, num_layers=LAYERS, ensemble_size=E,
                        hid_size=HIDDEN, deterministic=False, propagation_method="random_model",
                        activation_fn_cfg={"_target_": "torch.nn.SiLU"})
    with torch.no_grad():
        layers = [m for m in model.hidden_layers.modules() if hasattr(m, "weight")]
        layers.append(model.mean_and_logvar)
        for layer, w, b in zip(layers, weights, biases, strict=True):
            layer.weight.copy_(w)
            layer.bias.copy_(b.unsqueeze(1))
        model.min_logvar.copy_(min_logvar)
        model.max_logvar.copy_(max_logvar)
    model.set_elite(elites.tolist())
    rng = torch.Generator(device=device).manual_seed(2)

    def step(state, action):
        x = (torch.cat([state, action], -1) - input_mean) / input_std
        with torch.no_grad():
            sample, _ = model.sample_1d(x, {"propagation_indices": None}, rng=rng)
        O = state.shape[1]
        next_state = state + sample[:, :O]
        done = term_fn(next_state) if term_fn is not None else torch.zeros(
            state.shape[0], dtype=torch.bool, device=state.device)
        return next_state, sample[:, O], done

    return step


def cases(device: str, quick: bool = False):
    """Yield (op, shape, {impl: callable}) for the harness.

    quick (used on CPU): HalfCheetah at N=100k and Humanoid at N=10k only.
    """
    if quick:
        shapes = [("halfcheetah", 100_000), ("humanoid", 10_000)]
    else:
        shapes = [(env, n) for env in ENVS for n in (100_000, 400_000)]
    for env, N in shapes:
        O, A, rule = ENVS[env]
        gen = torch.Generator(device=device).manual_seed(0)
        weights, biases, extra = _model(O, A, device, gen)
        state = torch.randn(N, O, device=device, generator=gen)
        action = torch.randn(N, A, device=device, generator=gen)
        elites = torch.tensor([0, 1, 3, 4, 6], device=device)
        mgen = torch.Generator(device=device).manual_seed(1)

        def term_fn(s):
            return (s[:, 0] < 1.0) | (s[:, 0] > 2.0)

        def ours(backend, fn=ensemble_rollout_step, state=state, action=action,
                 weights=weights, biases=biases, extra=extra, elites=elites, rule=rule,
                 mgen=mgen, N=N):
            def step():
                members = member_indices("random_model", N, elites, mgen)
                with torch.no_grad():
                    return fn(state, action, weights, biases, members, elites,
                              termination=rule, seed=123, offset=1,
                              backend=backend, **extra)
            return step

        compiled_ref = torch.compile(ensemble_rollout_step_reference, dynamic=True)

        def ref_compiled(state=state, action=action, weights=weights, biases=biases,
                         extra=extra, elites=elites, rule=rule, mgen=mgen, N=N,
                         compiled_ref=compiled_ref):
            members = member_indices("random_model", N, elites, mgen)
            with torch.no_grad():
                return compiled_ref(state, action, weights, biases, members, elites,
                                    termination=rule, seed=123, offset=0, **extra)

        def peer(state=state, action=action, weights=weights, biases=biases, extra=extra,
                 elites=elites, env=env):
            with torch.no_grad():
                return peer_mbrl_style_step(state, action, weights, biases, elites,
                                            term_fn=term_fn if env == "humanoid" else None,
                                            **extra)

        impls = {
            "reference-eager": ours("reference"),
            "reference-compile": ref_compiled,
            "native": ours("native"),
            "peer-mbrl-style": peer,
        }
        try:
            mstep = mbrl_lib_step(weights, biases, elites, device=device,
                                  term_fn=term_fn if env == "humanoid" else None, **extra)
            impls["peer-mbrl-lib"] = lambda mstep=mstep, state=state, action=action: mstep(
                state, action)
        except Exception as exc:  # mbrl-lib not installed, or its API changed
            print(f"skip peer-mbrl-lib: {type(exc).__name__}: {exc}")
        yield ("rollout_step", f"{env} O={O} A={A} N={N} E={E} K={N_ELITES} 4x{HIDDEN}",
               impls)
