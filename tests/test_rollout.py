"""fastmbrl.ops.ensemble_rollout_step: Philox, reference semantics, native parity."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import DEVICES, TOL
from fastmbrl import _native
from fastmbrl.ops import (
    bound_logvar,
    ensemble_mlp_reference,
    ensemble_rollout_step,
    member_indices,
)
from fastmbrl.ops.rollout import philox4x32_10, philox_normal
from fastmbrl.ops.termination import TerminationRule

pytestmark = pytest.mark.skipif(not _native.HAS_NATIVE, reason="native module not built")

# ---- Philox4x32-10 ----------------------------------------------------------------------------
KAT = [  # Random123 known-answer vectors (kat_vectors: philox4x32_10)
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
]


def philox_python(ctr, key):
    """An independent plain-Python-int Philox4x32-10 (arbitrary-precision products)."""
    m = 0xFFFFFFFF
    c, k = list(ctr), list(key)
    for r in range(10):
        if r:
            k = [(k[0] + 0x9E3779B9) & m, (k[1] + 0xBB67AE85) & m]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & m, (p0 >> 32) ^ c[3] ^ k[1], p0 & m]
    return tuple(c)


@pytest.mark.parametrize("ctr,key,want", KAT)
def test_philox_known_answers(ctr, key, want):
    assert philox_python(ctr, key) == want
    assert tuple(_native._C.philox4x32_10(list(ctr), list(key))) == want
    got = philox4x32_10(tuple(torch.tensor(c) for c in ctr), key)
    assert tuple(int(x) for x in got) == want


def test_philox_three_implementations_agree(gen):
    ctr = torch.randint(0, 2**32, (4, 64), generator=gen, dtype=torch.int64)
    keys = torch.randint(0, 2**32, (2,), generator=gen, dtype=torch.int64).tolist()
    got = torch.stack(philox4x32_10(tuple(ctr), keys))  # [4, 64]
    for j in range(64):
        c = tuple(int(v) for v in ctr[:, j])
        want = philox_python(c, keys)
        assert tuple(int(v) for v in got[:, j]) == want
        assert tuple(_native._C.philox4x32_10(list(c), keys)) == want


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_normals_equal_torch_normals(dtype):
    seed, offset = 2**40 + 12345, 2**33 + 7
    n, d = 301, 19
    out = torch.empty(n, d, dtype=dtype)
    _native._C.philox_normal_cpu(_native.dtype_code(out), seed, offset, n, d, out.data_ptr())
    torch.testing.assert_close(out, philox_normal(n, d, seed, offset, dtype), **TOL[dtype])


def test_normals_are_standard_and_layout_free():
    z = philox_normal(40000, 18, seed=3, offset=1, dtype=torch.float64)
    assert abs(z.mean().item()) < 0.01  # 720k samples: sd of the mean ~0.0012
    assert abs(z.std().item() - 1.0) < 0.01
    assert abs((z**3).mean().item()) < 0.03 and abs((z**4).mean().item() - 3.0) < 0.06
    # columns are uncorrelated, including the Box-Muller pairs (d, d+1)
    c = torch.corrcoef(z[:, :8].T)
    assert (c - torch.eye(8, dtype=c.dtype)).abs().max() < 0.02
    # element (i, d) depends only on (seed, offset, i, d): sub-blocks and narrower widths agree
    torch.testing.assert_close(philox_normal(10, 7, 3, 1, torch.float64, row_start=100),
                               z[100:110, :7], rtol=0, atol=0)
    assert not torch.equal(philox_normal(5, 4, 3, 2, torch.float64), z[:5, :4])
    assert not torch.equal(philox_normal(5, 4, 4, 1, torch.float64), z[:5, :4])


# ---- model fixtures -----------------------------------------------------------------------------
def make_model(O, A, hidden, E, gaussian, dtype, device, gen, normalize=True):
    D = O + 1
    sizes = [O + A, *hidden, 2 * D if gaussian else D]
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        weights.append(torch.randn(E, fan_in, fan_out, generator=gen, dtype=torch.float64)
                       / math.sqrt(fan_in))
        biases.append(0.3 * torch.randn(E, fan_out, generator=gen, dtype=torch.float64))
    extra = {}
    if normalize:
        extra["input_mean"] = torch.randn(O + A, generator=gen, dtype=torch.float64)
        extra["input_std"] = torch.rand(O + A, generator=gen, dtype=torch.float64) + 0.5
    if gaussian:
        extra["min_logvar"] = -3.0 + 0.5 * torch.randn(D, generator=gen, dtype=torch.float64)
        extra["max_logvar"] = 0.5 + 0.1 * torch.randn(D, generator=gen, dtype=torch.float64)

    def cast(t):
        return t.to(device=device, dtype=dtype)

    return ([cast(w) for w in weights], [cast(b) for b in biases],
            {k: cast(v) for k, v in extra.items()})


def make_batch(N, O, A, dtype, device, gen):
    s = torch.randn(N, O, generator=gen, dtype=torch.float64)
    a = torch.randn(N, A, generator=gen, dtype=torch.float64)
    return s.to(device=device, dtype=dtype), a.to(device=device, dtype=dtype)


def assert_outputs_close(got, want, dtype):
    next_state, reward, done = got
    assert next_state.dtype == dtype and reward.dtype == dtype and done.dtype == torch.bool
    torch.testing.assert_close(next_state, want[0], **TOL[dtype])
    torch.testing.assert_close(reward, want[1], **TOL[dtype])
    assert torch.equal(done, want[2])


# (N, O, A, hidden, E, elites, gaussian, activation)
CASES = [
    (1, 1, 1, [], 1, [0], True, "silu"),
    (37, 11, 3, [200], 7, [0, 2, 3, 5, 6], True, "silu"),
    (50, 17, 6, [200, 200, 200], 7, [1, 2, 4, 5, 6], True, "silu"),
    (23, 17, 6, [33, 16], 5, [0, 1, 2], False, "relu"),
    (64, 111, 17, [200, 64], 8, [7, 0, 3], True, "tanh"),
    (19, 11, 6, [200], 2, [1], False, "silu"),
    (41, 17, 3, [9, 200, 31], 3, [0, 2], True, "relu"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES,
                         ids=lambda c: f"N{c[0]}O{c[1]}A{c[2]}L{len(c[3]) + 1}E{c[4]}")
@pytest.mark.parametrize("mode", ["random_model", "expectation"])
def test_native_matches_reference(device, dtype, case, mode, gen):
    N, O, A, hidden, E, elites, gaussian, act = case
    weights, biases, extra = make_model(O, A, hidden, E, gaussian, dtype, device, gen)
    state, action = make_batch(N, O, A, dtype, device, gen)
    elites = torch.tensor(elites, device=device)
    members = member_indices(mode, N, elites, gen if device == "cpu" else None)
    delta_mask = torch.rand(O, generator=gen) > 0.3
    rule = TerminationRule((-1.5,) * min(O, 3), (1.5,) * min(O, 3), inclusive=O % 2 == 0)
    for sample in (True, False):
        kw = dict(members=members, elites=elites, activation=act, sample=sample, seed=99,
                  offset=5, delta_mask=delta_mask.to(device), termination=rule, **extra)
        got = ensemble_rollout_step(state, action, weights, biases, backend="native", **kw)
        want = ensemble_rollout_step(state, action, weights, biases, backend="reference", **kw)
        assert_outputs_close(got, want, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_seed_determinism(device, backend, gen):
    weights, biases, extra = make_model(17, 6, [40, 40], 7, True, torch.float32, device, gen)
    state, action = make_batch(103, 17, 6, torch.float32, device, gen)
    members = torch.randint(0, 7, (103,), generator=gen).to(device)

    def run(**kw):
        return ensemble_rollout_step(state, action, weights, biases, members, backend=backend,
                                     **extra, **kw)

    a, b = run(seed=7), run(seed=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], run(seed=8)[0])
    assert not torch.equal(a[0], run(seed=7, offset=1)[0])
    # seed drawn from a generator: same generator state -> same result
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(run(generator=g1)[0], run(generator=g2)[0])
    assert not torch.equal(run(generator=g1)[0], run(generator=g2.manual_seed(6))[0])
    # sample=False is the mean: no noise at all
    m1, m2 = run(seed=1, sample=False), run(seed=2, sample=False)
    assert torch.equal(m1[0], m2[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("gaussian", [True, False])
def test_row_equals_its_member_alone(device, backend, gaussian, gen):
    """Independent check: each row equals the full ensemble_mlp reference of its member."""
    dtype = torch.float64
    N, O, A, E = 29, 11, 3, 6
    weights, biases, extra = make_model(O, A, [200, 20], E, gaussian, dtype, device, gen)
    state, action = make_batch(N, O, A, dtype, device, gen)
    members = torch.randint(0, E, (N,), generator=gen).to(device)
    seed, offset = 1234, 3
    next_state, reward, done = ensemble_rollout_step(
        state, action, weights, biases, members, seed=seed, offset=offset, backend=backend,
        **extra)
    x = (torch.cat([state, action], 1) - extra["input_mean"]) / extra["input_std"]
    res = ensemble_mlp_reference(x, weights, biases, "silu", extra.get("min_logvar"),
                                 extra.get("max_logvar"))  # every member on every row
    rows = torch.arange(N, device=device)
    if gaussian:
        mean, logvar = res[0][members, rows], res[1][members, rows]
        noise = philox_normal(N, O + 1, seed, offset, dtype, device)
        out = mean + (0.5 * logvar).exp() * noise
    else:
        out = res[members, rows]
    torch.testing.assert_close(next_state, state + out[:, :O], **TOL[dtype])
    torch.testing.assert_close(reward, out[:, O], **TOL[dtype])
    assert not done.any()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_expectation_is_mean_over_elites(device, backend, gen):
    dtype = torch.float64
    N, O, A, E = 31, 17, 6, 7
    weights, biases, extra = make_model(O, A, [50], E, True, dtype, device, gen)
    state, action = make_batch(N, O, A, dtype, device, gen)
    elites = torch.tensor([6, 1, 3], device=device)
    got = ensemble_rollout_step(state, action, weights, biases, None, elites, seed=4,
                                backend=backend, **extra)
    x = (torch.cat([state, action], 1) - extra["input_mean"]) / extra["input_std"]
    mean, logvar = ensemble_mlp_reference(x, weights, biases, "silu", extra["min_logvar"],
                                          extra["max_logvar"])
    mean, logvar = mean[elites].mean(0), logvar[elites].mean(0)
    out = mean + (0.5 * logvar).exp() * philox_normal(N, O + 1, 4, 0, dtype, device)
    torch.testing.assert_close(got[0], state + out[:, :O], **TOL[dtype])
    torch.testing.assert_close(got[1], out[:, O], **TOL[dtype])
    # elites=None averages every member
    all_e = ensemble_rollout_step(state, action, weights, biases, seed=4, sample=False,
                                  backend=backend, **extra)
    m_all = ensemble_mlp_reference(x, weights, biases, "silu", extra["min_logvar"],
                                   extra["max_logvar"])[0].mean(0)
    torch.testing.assert_close(all_e[1], m_all[:, O], **TOL[dtype])


def test_member_indices_modes(gen):
    elites = torch.tensor([0, 2, 5, 6, 3])
    m = member_indices("random_model", 20000, elites, gen)
    assert m.shape == (20000,) and m.dtype == torch.int64
    assert set(m.unique().tolist()) == set(elites.tolist())  # elites only, all of them
    counts = torch.bincount(m, minlength=7)[elites].double()
    assert (counts / 20000 - 0.2).abs().max() < 0.02  # uniform
    m2 = member_indices("random_model", 20000, elites, gen)
    assert not torch.equal(m, m2)  # fresh per step
    small = member_indices("random_model", 7, elites, gen)  # N not divisible by 5 elites
    assert small.shape == (7,) and set(small.tolist()) <= set(elites.tolist())
    fixed = member_indices("random_model", 33, elites, gen)
    assert member_indices("fixed_model", 33, elites, fixed=fixed) is fixed
    assert member_indices("expectation", 33, elites) is None
    with pytest.raises(ValueError, match="`mode` must be one of"):
        member_indices("ts1", 3, elites)
    with pytest.raises(ValueError, match="fixed_model needs `fixed`"):
        member_indices("fixed_model", 3, elites)
    with pytest.raises(ValueError, match=r"`fixed` must have shape \[n\] = \(4,\)"):
        member_indices("fixed_model", 4, elites, fixed=fixed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_fixed_model_keeps_members(device, backend, gen):
    """Rows with the same member and input give the same mean whatever the other rows are."""
    weights, biases, extra = make_model(11, 3, [30], 5, True, torch.float64, device, gen)
    state, action = make_batch(40, 11, 3, torch.float64, device, gen)
    fixed = torch.randint(0, 5, (40,), generator=gen).to(device)
    a = ensemble_rollout_step(state, action, weights, biases, fixed, sample=False,
                              backend=backend, **extra)
    for e in range(5):
        one = ensemble_rollout_step(state, action, weights, biases, torch.full_like(fixed, e),
                                    sample=False, backend=backend, **extra)
        rows = fixed == e
        torch.testing.assert_close(a[0][rows], one[0][rows])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_delta_mask(device, backend, gen):
    weights, biases, extra = make_model(11, 3, [20], 3, True, torch.float64, device, gen)
    state, action = make_batch(17, 11, 3, torch.float64, device, gen)
    members = torch.randint(0, 3, (17,), generator=gen).to(device)
    mask = torch.tensor([True, False] * 5 + [False], device=device)
    kw = dict(seed=11, backend=backend, **extra)
    full = ensemble_rollout_step(state, action, weights, biases, members, **kw)
    masked = ensemble_rollout_step(state, action, weights, biases, members, delta_mask=mask,
                                   **kw)
    torch.testing.assert_close(masked[0][:, mask], full[0][:, mask])
    torch.testing.assert_close(masked[0][:, ~mask], full[0][:, ~mask] - state[:, ~mask])
    torch.testing.assert_close(masked[1], full[1])


RULES = [
    TerminationRule((0.7, -0.2), (math.inf, 0.2), inclusive=False, check_finite=True,
                    name="hopper-like"),
    TerminationRule((-0.5, -math.inf, -1.0), (0.5, 0.0, math.inf), inclusive=True,
                    check_finite=False, name="inclusive"),
    TerminationRule((-3.0,) * 11, (3.0,) * 11, inclusive=False, check_finite=True, name="box"),
    TerminationRule.never(),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_termination_rule_in_kernel_matches_done(device, rule, gen):
    O = 11
    weights, biases, extra = make_model(O, 3, [16], 2, False, torch.float64, device, gen)
    for w in weights:  # a zero model: next = state exactly, reward = 0
        w.zero_()
    for b in biases:
        b.zero_()
    state, action = make_batch(64, O, 3, torch.float64, device, gen)
    state[:8, 0] = torch.tensor([0.7, 0.5, -0.5, 3.0, -3.0, 0.2, 0.0, 1.0])  # on the bounds
    state[8:12, 1] = torch.tensor([0.2, -0.2, 0.0, -1.0])
    state[12, 2] = float("nan")
    state[13, 4] = float("inf")
    state[14, 0] = float("-inf")
    members = torch.zeros(64, dtype=torch.int64, device=device)
    kw = dict(termination=rule, seed=0, input_mean=extra["input_mean"],
              input_std=extra["input_std"])
    got = ensemble_rollout_step(state, action, weights, biases, members, backend="native", **kw)
    finite = torch.isfinite(state).all(1)  # a non-finite input makes its whole row NaN
    torch.testing.assert_close(got[0][finite], state[finite])
    assert got[0][~finite].isnan().all()
    assert torch.equal(got[2], rule.done(got[0]))
    ref = ensemble_rollout_step(state, action, weights, biases, members, backend="reference",
                                **kw)
    assert torch.equal(got[2], ref[2])
    if rule.name != "never":
        assert 0 < got[2].sum() < 64


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_callable_termination_and_none(device, backend, gen):
    weights, biases, extra = make_model(11, 3, [16], 2, True, torch.float32, device, gen)
    state, action = make_batch(30, 11, 3, torch.float32, device, gen)
    members = torch.randint(0, 2, (30,), generator=gen).to(device)

    def term_fn(next_obs):
        return next_obs[:, 0] > 0

    kw = dict(seed=3, backend=backend, **extra)
    got = ensemble_rollout_step(state, action, weights, biases, members, termination=term_fn,
                                **kw)
    assert torch.equal(got[2], got[0][:, 0] > 0)
    none = ensemble_rollout_step(state, action, weights, biases, members, **kw)
    assert none[2].dtype == torch.bool and not none[2].any()
    with pytest.raises(ValueError, match=r"must return a tensor \[N\] = \(30,\)"):
        ensemble_rollout_step(state, action, weights, biases, members,
                              termination=lambda s: s > 0, **kw)


def test_deterministic_model_ignores_sample(gen):
    weights, biases, extra = make_model(11, 3, [16], 3, False, torch.float32, "cpu", gen)
    state, action = make_batch(10, 11, 3, torch.float32, "cpu", gen)
    members = torch.randint(0, 3, (10,), generator=gen)
    a = ensemble_rollout_step(state, action, weights, biases, members, sample=True, seed=1,
                              **extra)
    b = ensemble_rollout_step(state, action, weights, biases, members, sample=False, seed=2,
                              **extra)
    assert torch.equal(a[0], b[0])


def test_opcheck(gen):
    weights, biases, extra = make_model(11, 3, [16], 3, True, torch.float32, "cpu", gen)
    state, action = make_batch(10, 11, 3, torch.float32, "cpu", gen)
    members = torch.randint(0, 3, (10,), generator=gen)
    lower, upper = RULES[2].bounds(11, state)
    args = (state, action, weights, biases, members, None, extra["input_mean"],
            extra["input_std"], extra["min_logvar"], extra["max_logvar"], "silu", None, lower,
            upper, False, True, True, 5, 0)
    torch.library.opcheck(torch.ops.fastmbrl.ensemble_rollout_step.default, args,
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_with_rule(device, gen):
    torch._dynamo.reset()
    weights, biases, extra = make_model(11, 3, [32, 32], 4, True, torch.float32, device, gen)
    state, action = make_batch(45, 11, 3, torch.float32, device, gen)
    members = torch.randint(0, 4, (45,), generator=gen).to(device)
    rule = RULES[2]

    def step(s, a, m):
        nxt, r, done = ensemble_rollout_step(s, a, weights, biases, m, termination=rule,
                                             seed=17, offset=2, backend="native", **extra)
        return nxt * 1.0, r + 0.0, done

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got = compiled(state, action, members)
    want = ensemble_rollout_step(state, action, weights, biases, members, termination=rule,
                                 seed=17, offset=2, backend="reference", **extra)
    assert_outputs_close(got, want, torch.float32)


# ---- bad input: errors name the argument and the expected and actual value -------------------
def _ok(gen, gaussian=True):
    weights, biases, extra = make_model(11, 3, [16], 3, gaussian, torch.float32, "cpu", gen)
    state, action = make_batch(10, 11, 3, torch.float32, "cpu", gen)
    return state, action, weights, biases, extra


def test_bad_shapes(gen):
    state, action, weights, biases, extra = _ok(gen)
    f = ensemble_rollout_step
    with pytest.raises(ValueError, match=r"`state` must have 2 dimensions \[N, O\]"):
        f(state[0], action, weights, biases, **extra)
    with pytest.raises(ValueError, match=r"`action` must have shape \[N, A\] = \(10, 3\), got "
                                         r"\(9, 3\)"):
        f(state, action[:9], weights, biases, **extra)
    with pytest.raises(ValueError, match=r"`weights\[0\]` must have shape \[E, in_l, out_l\] "
                                         r"with in_1 = O \+ A = \(3, 15, 16\), got \(3, 14, 16\)"):
        f(state, torch.zeros(10, 4), weights, biases, min_logvar=extra["min_logvar"],
          max_logvar=extra["max_logvar"])
    with pytest.raises(ValueError, match=r"O \+ 1 \(deterministic\) = 12 outputs, got 24"):
        f(state, action, weights, biases, input_mean=extra["input_mean"],
          input_std=extra["input_std"])
    with pytest.raises(ValueError, match=r"`min_logvar` must have shape \[D\] = \[O \+ 1\] = "
                                         r"\(12,\), got \(11,\)"):
        f(state, action, weights, biases, min_logvar=extra["min_logvar"][:11],
          max_logvar=extra["max_logvar"])
    with pytest.raises(ValueError, match="give both `min_logvar` and `max_logvar`"):
        f(state, action, weights, biases, min_logvar=extra["min_logvar"])
    with pytest.raises(ValueError, match=r"`input_std` must have shape \[O \+ A\] = \(14,\)"):
        f(state, action, weights, biases, input_mean=extra["input_mean"],
          input_std=extra["input_std"][:3], min_logvar=extra["min_logvar"],
          max_logvar=extra["max_logvar"])
    with pytest.raises(ValueError, match=r"one bias per weight"):
        f(state, action, weights, biases[:1], **extra)
    with pytest.raises(ValueError, match=r"N \(rows\) must be at least 1, got 0"):
        f(state[:0], action[:0], weights, biases, **extra)


def test_bad_indices_and_flags(gen):
    state, action, weights, biases, extra = _ok(gen)
    f = ensemble_rollout_step
    with pytest.raises(TypeError, match=r"`members` must be int64 \(LongTensor\), got "
                                        r"torch.int32"):
        f(state, action, weights, biases, torch.zeros(10, dtype=torch.int32), **extra)
    with pytest.raises(ValueError, match=r"`members` must have shape \[N\] = \(10,\), got "
                                         r"\(9,\)"):
        f(state, action, weights, biases, torch.zeros(9, dtype=torch.int64), **extra)
    with pytest.raises(ValueError, match=r"`members` must index members in \[0, 3\), got values "
                                         r"in \[0, 3\]"):
        f(state, action, weights, biases, torch.arange(10) % 4, **extra)
    with pytest.raises(ValueError, match=r"`elites` must index members in \[0, 3\)"):
        f(state, action, weights, biases, None, torch.tensor([0, -1]), **extra)
    with pytest.raises(ValueError, match=r"`elites` must name at least one member"):
        f(state, action, weights, biases, None, torch.zeros(0, dtype=torch.int64), **extra)
    with pytest.raises(TypeError, match=r"`delta_mask` must be a bool tensor \[O\], got "
                                        r"torch.int64"):
        f(state, action, weights, biases, delta_mask=torch.ones(11, dtype=torch.int64), **extra)
    with pytest.raises(ValueError, match=r"`delta_mask` must have shape \[O\] = \(11,\)"):
        f(state, action, weights, biases, delta_mask=torch.ones(12, dtype=torch.bool), **extra)
    with pytest.raises(ValueError, match=r"`activation` must be one of"):
        f(state, action, weights, biases, activation="gelu", **extra)
    with pytest.raises(TypeError, match=r"`termination` must be a TerminationRule, a callable"):
        f(state, action, weights, biases, termination=3, **extra)
    with pytest.raises(ValueError, match=r"constrains 12 dimensions, the observation has 11"):
        f(state, action, weights, biases, termination=TerminationRule((0.0,) * 12, (1.0,) * 12),
          **extra)
    with pytest.raises(ValueError, match=r"`seed` must be in \[0, 2\^63\), got -1"):
        f(state, action, weights, biases, seed=-1, **extra)
    with pytest.raises(TypeError, match=r"`offset` must be an int, got float"):
        f(state, action, weights, biases, offset=1.5, **extra)


def test_bad_dtype_and_device(gen):
    state, action, weights, biases, extra = _ok(gen)
    f = ensemble_rollout_step
    with pytest.raises(TypeError, match=r"one dtype; `state` is torch.float32, `action` is "
                                        r"torch.float64"):
        f(state, action.double(), weights, biases, **extra)
    with pytest.raises(TypeError, match=r"`state` must be float32 or float64, got torch.int64"):
        f(state.long(), action, weights, biases, **extra)
    with pytest.raises(ValueError, match=r"one device; `state` is on cpu, `weights\[1\]` is on "
                                         r"meta"):
        f(state, action, [weights[0], weights[1].to("meta")], biases, **extra)
    with pytest.raises(ValueError, match=r"`members` must be on cpu like `state`, got meta"):
        f(state, action, weights, biases, torch.zeros(10, dtype=torch.int64, device="meta"),
          **extra)


def test_cpu_epilogue_threads_do_not_change_results(gen):
    from fastmbrl.ops import rollout as R

    N, O = 5003, 17
    D = O + 1
    state = torch.randn(N, O, generator=gen)
    raw = torch.randn(N, 2 * D, generator=gen)
    lo, hi = torch.full((D,), -3.0), torch.full((D,), 0.5)
    lower, upper = TerminationRule((-2.0,) * 5, (2.0,) * 5).bounds(O, state)
    results = []
    for threads in (1, 3):
        outs = R._outputs(state)
        args = R._epilogue_args(raw, None, 1, state, 2 * D, lo, hi, None, lower, upper, False,
                                True, True, 8, 2, outs)
        _native._C.rollout_epilogue_cpu(*args, threads, False)
        results.append(outs)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)
    out = raw[:, :D] + torch.exp(0.5 * bound_logvar(raw[:, D:], lo, hi)) * philox_normal(
        N, D, 8, 2)
    torch.testing.assert_close(results[0][0], state + out[:, :O])
    torch.testing.assert_close(results[0][1], out[:, O])
    assert torch.equal(results[0][2], TerminationRule((-2.0,) * 5, (2.0,) * 5).done(
        results[0][0]))


# ---- the CUDA path's host logic, emulated on CPU ------------------------------------------------
def _emulated_layer_fn(state, action, input_mean, input_std, tile_rows):
    """A literal Python transcription of src/cuda/rollout.cu::grouped_layer_kernel (one loop
    iteration per row-tile block), so the segment tables, tile bound, buffer ping-pong and
    inverse permutation of the CUDA path are checked without a GPU."""
    acts = {0: lambda y: y, 1: torch.nn.functional.silu, 2: torch.relu, 3: torch.tanh}
    x_all = (torch.cat([state, action], 1) - input_mean) / input_std

    def layer_fn(h, w, b, act_code, out, g):
        seg_tile, seg_rows, seg_start, seg_member = (
            g[k].tolist() for k in ("seg_tile", "seg_rows", "seg_start", "seg_member"))
        written = torch.zeros(out.shape[0], dtype=torch.int64)
        for tile in range(g["grid_tiles"]):
            s = next((t for t in range(g["S"]) if seg_tile[t] <= tile
                      < seg_tile[t] + (seg_rows[t] + tile_rows - 1) // tile_rows), None)
            if s is None:
                continue  # past the last tile: the block exits
            r0 = seg_start[s] + (tile - seg_tile[s]) * tile_rows
            r1 = min(r0 + tile_rows, seg_start[s] + seg_rows[s])
            m = seg_member[s]
            x = x_all[g["src"][r0:r1]] if h is None else h[r0:r1]
            out[r0:r1] = acts[act_code](x @ w[m] + b[m])
            written[r0:r1] += 1
        assert (written == 1).all(), "every virtual row is written by exactly one block"

    return layer_fn


@pytest.mark.parametrize("mode", ["random_model", "fixed_one_member", "expectation"])
@pytest.mark.parametrize("tile_rows", [4, 64])
def test_cuda_path_emulated_on_cpu(mode, tile_rows, gen):
    from fastmbrl.ops import rollout as R

    N, O, A, E = 45, 11, 3, 6
    dtype = torch.float64
    weights, biases, extra = make_model(O, A, [20, 7], E, True, dtype, "cpu", gen)
    state, action = make_batch(N, O, A, dtype, "cpu", gen)
    elites = torch.tensor([5, 0, 2])
    members = {"random_model": member_indices("random_model", N, elites, gen),
               "fixed_one_member": torch.full((N,), 4, dtype=torch.int64),
               "expectation": None}[mode]
    rule = TerminationRule((-2.0,) * 4, (2.0,) * 4)
    lower, upper = rule.bounds(O, state)
    mask = torch.arange(O) % 3 != 0
    raw, g = R._grouped_forward(
        state, action, weights, biases, members, elites if members is None else None,
        extra["input_mean"], extra["input_std"], "tanh", tile_rows,
        _emulated_layer_fn(state, action, extra["input_mean"], extra["input_std"], tile_rows))
    outs = R._outputs(state)
    _native._C.rollout_epilogue_cpu(*R._epilogue_args(
        raw, g["pos"], g["K"], state, raw.shape[1], extra["min_logvar"], extra["max_logvar"],
        mask, lower, upper, False, True, True, 21, 4, outs), 1, False)
    want = ensemble_rollout_step(state, action, weights, biases, members, elites,
                                 activation="tanh", delta_mask=mask, termination=rule, seed=21,
                                 offset=4, backend="reference", **extra)
    assert_outputs_close(outs, want, dtype)


# ---- CUDA only (skipped without a device): many row tiles, partial tiles, graph capture --------
CUDA_ONLY = [p for p in DEVICES if p.id == "cuda"]


@pytest.mark.parametrize("device", CUDA_ONLY)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["random_model", "expectation"])
def test_cuda_many_tiles_match_reference(device, dtype, mode, gen):
    N, O, A, E = 3001, 17, 6, 7
    weights, biases, extra = make_model(O, A, [200, 200, 200], E, True, dtype, device, gen)
    state, action = make_batch(N, O, A, dtype, device, gen)
    elites = torch.tensor([0, 1, 3, 4, 6], device=device)
    members = member_indices(mode, N, elites)
    rule = TerminationRule((-3.0,) * 5, (3.0,) * 5)
    kw = dict(members=members, elites=elites, termination=rule, seed=5, offset=9, **extra)
    got = ensemble_rollout_step(state, action, weights, biases, backend="native", **kw)
    want = ensemble_rollout_step(state, action, weights, biases, backend="reference", **kw)
    assert_outputs_close(got, want, dtype)


@pytest.mark.parametrize("device", CUDA_ONLY)
def test_cuda_graph_capture(device, gen):
    weights, biases, extra = make_model(17, 6, [200, 200], 7, True, torch.float32, device, gen)
    state, action = make_batch(1000, 17, 6, torch.float32, device, gen)
    members = torch.randint(0, 7, (1000,), device=device)
    rule = TerminationRule((-3.0,) * 5, (3.0,) * 5)
    kw = dict(termination=rule, seed=3, backend="native", **extra)
    ensemble_rollout_step(state, action, weights, biases, members, **kw)  # warm-up
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = ensemble_rollout_step(state, action, weights, biases, members, **kw)
    state.copy_(torch.randn_like(state))
    members.copy_(torch.randint(0, 7, (1000,), device=device))
    graph.replay()
    torch.cuda.synchronize()
    want = ensemble_rollout_step(state, action, weights, biases, members, termination=rule,
                                 seed=3, backend="reference", **extra)
    assert_outputs_close(static, want, torch.float32)
