"""GaussianEnsemble, Normalizer and ModelTrainer against mbrl-lib's definitions (CPU, seconds)."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from fastmbrl.models import (
    GaussianEnsemble,
    ModelTrainer,
    Normalizer,
    balanced_member_indices,
    bootstrap_indices,
)
from fastmbrl.models import trainer as trainer_module

# std of N(0, σ²) truncated to ±2σ, in units of σ
TRUNC2_STD = math.sqrt(1 - 4 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(2 / math.sqrt(2)))


def manual_forward(model: GaussianEnsemble, x: torch.Tensor):
    """mbrl-lib GaussianMLP forward written out member by member, from raw inputs."""
    xn = (x.double() - model.normalizer.mean) / model.normalizer.std
    xn = xn.to(model.weights[0].dtype)
    means, logvars = [], []
    for e in range(model.ensemble_size):
        h = xn if xn.dim() == 2 else xn[e]
        for i, (w, b) in enumerate(zip(model.weights, model.biases, strict=True)):
            h = h @ w[e] + b[e]
            if i < len(model.weights) - 1:
                h = F.silu(h)
        if model.deterministic:
            means.append(h)
            continue
        m, lv = h[:, : model.out_size], h[:, model.out_size :]
        lv = model.max_logvar - F.softplus(model.max_logvar - lv)
        lv = model.min_logvar + F.softplus(lv - model.min_logvar)
        means.append(m)
        logvars.append(lv)
    return torch.stack(means), (None if model.deterministic else torch.stack(logvars))


def fitted_model(gen, deterministic=False, dtype=torch.float64, E=4, **kw):
    model = GaussianEnsemble(
        5,
        3,
        ensemble_size=E,
        num_layers=3,
        hid_size=16,
        deterministic=deterministic,
        num_elites=min(3, E),
        dtype=dtype,
        **kw,
    )
    model.reset_parameters(gen)
    with torch.no_grad():  # non-zero biases, so a forward that drops them fails
        for b in model.biases:
            b.normal_(0, 0.1, generator=gen)
    data = torch.randn(64, 5, generator=gen, dtype=torch.float64) * 3 + 2
    model.normalizer.fit(data)
    return model


# ---------------------------------------------------------------------------------------------
# Initialisation and architecture
# ---------------------------------------------------------------------------------------------
def test_init_truncated_normal_statistics(gen):
    model = GaussianEnsemble(300, 100, ensemble_size=3, num_layers=1, hid_size=400)
    model.reset_parameters(gen)
    assert [tuple(w.shape) for w in model.weights] == [(3, 300, 400), (3, 400, 200)]
    assert [tuple(b.shape) for b in model.biases] == [(3, 400), (3, 200)]
    for w, b in zip(model.weights, model.biases, strict=True):
        sigma = 1 / (2 * math.sqrt(w.shape[1]))  # fan-in of the [E, in, out] weight
        assert (b == 0).all()
        for e in range(w.shape[0]):
            member = w[e].detach()
            assert member.abs().max() <= 2 * sigma
            assert member.abs().max() > 1.95 * sigma  # truncated at 2σ, not narrower
            assert abs(member.mean().item()) < 0.02 * sigma
            assert member.std().item() == pytest.approx(TRUNC2_STD * sigma, rel=0.02)
        assert not torch.equal(w[0], w[1])  # members are drawn independently


def test_architecture_matches_mbrl_lib():
    model = GaussianEnsemble(7, 4)  # mbrl-lib MBPO defaults: E=7, 4 hidden layers of 200
    shapes = [tuple(w.shape) for w in model.weights]
    assert shapes == [(7, 7, 200), (7, 200, 200), (7, 200, 200), (7, 200, 200), (7, 200, 8)]
    assert model.min_logvar.shape == (4,) and (model.min_logvar == -10).all()
    assert model.max_logvar.shape == (4,) and (model.max_logvar == 0.5).all()
    assert not model.min_logvar.requires_grad and not model.max_logvar.requires_grad
    assert model.elite_models == list(range(7)) and model.num_elites == 5
    assert model.normalizer.mean.dtype == torch.float64
    det = GaussianEnsemble(7, 4, deterministic=True)
    assert det.weights[-1].shape == (7, 200, 4) and det.min_logvar is None
    learn = GaussianEnsemble(7, 4, learn_logvar_bounds=True)
    assert learn.min_logvar.requires_grad and learn.max_logvar.requires_grad


@pytest.mark.parametrize(
    "kw",
    [
        dict(activation="gelu"),
        dict(propagation_method="ts1"),
        dict(num_elites=0),
        dict(num_layers=0),
    ],
)
def test_bad_constructor_arguments(kw):
    with pytest.raises(ValueError):
        GaussianEnsemble(5, 3, **kw)


# ---------------------------------------------------------------------------------------------
# Forward and logvar bounds
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("deterministic", [False, True])
def test_forward_matches_member_by_member(gen, deterministic):
    model = fitted_model(gen, deterministic)
    x2 = torch.randn(9, 5, generator=gen, dtype=torch.float64) * 3 + 2
    x3 = torch.randn(4, 9, 5, generator=gen, dtype=torch.float64) * 3 + 2
    for x in (x2, x3):
        mean, logvar = model(x)
        ref_mean, ref_logvar = manual_forward(model, x)
        assert mean.shape == (4, 9, 3)
        torch.testing.assert_close(mean, ref_mean, rtol=1e-12, atol=1e-12)
        if deterministic:
            assert logvar is None
        else:
            torch.testing.assert_close(logvar, ref_logvar, rtol=1e-12, atol=1e-12)
    # normalized=True skips the normalizer
    torch.testing.assert_close(model(model.normalize(x2), normalized=True)[0], model(x2)[0])


def test_logvar_bounds_respected(gen):
    model = fitted_model(gen)
    with torch.no_grad():
        model.max_logvar.fill_(0.5)
        model.min_logvar.fill_(-10.0)
        last_w, last_b = model.weights[-1], model.biases[-1]
        last_w.zero_()
        last_b.zero_()
        last_b[0, 3:] = 1e3  # member 0: raw logvar far above the max
        last_b[1, 3:] = -1e3  # member 1: far below the min
        last_b[2, 3:] = -3.0  # member 2: inside, nearly untouched
    _, logvar = model(torch.randn(8, 5, generator=gen, dtype=torch.float64))
    # the soft bounds can overshoot max by softplus(max-min) - (max-min) = log1p(e^-10.5) ~ 3e-5
    assert (logvar <= 0.5 + 3e-5).all() and (logvar >= -10.0).all()
    top = 0.5 + math.log1p(math.exp(-10.5))  # -10 + softplus(0.5 + 10)
    torch.testing.assert_close(logvar[0], torch.full_like(logvar[0], top), atol=1e-12, rtol=0)
    torch.testing.assert_close(logvar[1], torch.full_like(logvar[1], -10.0), atol=1e-6, rtol=0)
    sp = F.softplus(torch.tensor(3.5, dtype=torch.float64))  # max - softplus(max - lv)
    expected = -10 + F.softplus(0.5 - sp + 10)
    torch.testing.assert_close(logvar[2], torch.full_like(logvar[2], expected.item()))


# ---------------------------------------------------------------------------------------------
# Losses: mbrl-lib definitions written out by hand
# ---------------------------------------------------------------------------------------------
def test_gaussian_loss_is_mbrl_nll_plus_bound_penalty(gen):
    model = fitted_model(gen)
    x = torch.randn(4, 10, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 10, 3, generator=gen, dtype=torch.float64)
    mean, logvar = manual_forward(model, x)
    per_elem = (mean - y) ** 2 * torch.exp(-logvar) + logvar  # no 1/2, no log 2π
    penalty = 0.01 * (0.5 * 3 - (-10.0) * 3)
    expected = per_elem.mean(dim=(1, 2)).sum() + penalty
    torch.testing.assert_close(model.loss(x, y), expected, rtol=1e-12, atol=1e-12)
    # a shared [B, in] input and [B, out] target is repeated for every member
    mean2, logvar2 = manual_forward(model, x[0])
    per_elem2 = (mean2 - y[0]) ** 2 * torch.exp(-logvar2) + logvar2
    torch.testing.assert_close(
        model.loss(x[0], y[0]), per_elem2.mean(dim=(1, 2)).sum() + penalty, rtol=1e-12, atol=0
    )


def test_learned_logvar_bounds_get_penalty_gradient(gen):
    model = fitted_model(gen, learn_logvar_bounds=True)
    x = torch.randn(4, 10, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 10, 3, generator=gen, dtype=torch.float64)
    model.loss(x, y).backward()
    assert model.max_logvar.grad is not None and model.min_logvar.grad is not None
    # the penalty alone contributes +0.01 to d/dmax and -0.01 to d/dmin; the NLL adds the rest
    assert not torch.allclose(model.max_logvar.grad, torch.full((3,), 0.01, dtype=torch.float64))
    frozen = fitted_model(gen)
    frozen.loss(x, y).backward()
    assert frozen.max_logvar.grad is None and frozen.weights[0].grad is not None


def test_deterministic_loss_is_summed_squared_error(gen):
    model = fitted_model(gen, deterministic=True)
    x = torch.randn(4, 10, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 10, 3, generator=gen, dtype=torch.float64)
    mean, _ = manual_forward(model, x)
    expected = ((mean - y) ** 2).sum()  # mbrl-lib: F.mse_loss(reduction="none").sum((1,2)).sum()
    torch.testing.assert_close(model.loss(x, y), expected, rtol=1e-12, atol=1e-12)
    assert model.loss(x, y).item() > 10 * ((mean - y) ** 2).mean().item()  # a sum, not a mean


@pytest.mark.parametrize("deterministic", [False, True])
def test_eval_score_is_mse_of_the_mean(gen, deterministic):
    model = fitted_model(gen, deterministic)
    x = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    mean, _ = manual_forward(model, x)
    score = model.eval_score(x, y)
    assert score.shape == (4,) and not score.requires_grad
    torch.testing.assert_close(score, ((mean - y) ** 2).mean(dim=(1, 2)))
    torch.testing.assert_close(model.eval_score(x, y, reduce=False), (mean - y) ** 2)


# ---------------------------------------------------------------------------------------------
# Normalizer
# ---------------------------------------------------------------------------------------------
def test_normalizer_statistics_and_constant_column(gen):
    data = torch.randn(100, 4, generator=gen, dtype=torch.float64) * 3 + 1
    data[:, 2] = 7.0  # constant column
    norm = Normalizer(4)
    norm.fit(data)
    torch.testing.assert_close(norm.mean, data.mean(0))
    assert norm.std[2] == 1.0
    torch.testing.assert_close(norm.std[[0, 1, 3]], data[:, [0, 1, 3]].std(0))  # unbiased
    out = norm.normalize(data)
    assert (out[:, 2] == 0).all()
    torch.testing.assert_close(out[:, [0, 1, 3]].std(0), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(norm.denormalize(out), data)


def test_normalizer_eps_depends_on_dtype(gen):
    data = torch.randn(50, 2, generator=gen, dtype=torch.float64)
    data[:, 1] = 3.0 + 1e-7 * torch.randn(50, generator=gen, dtype=torch.float64)  # std ~1e-7
    n64, n32 = Normalizer(2, dtype=torch.float64), Normalizer(2, dtype=torch.float32)
    n64.fit(data)
    n32.fit(data)
    assert n64.eps == 1e-12 and n32.eps == 1e-5
    assert 1e-8 < n64.std[1].item() < 1e-6  # kept in float64
    assert n32.std[1].item() == 1.0  # below 1e-5 in float32: set to 1
    # float32 inputs are normalized in float64 and returned as float32
    x32 = data.float()
    assert n64.normalize(x32).dtype == torch.float32


def test_normalizer_keeps_dtype_and_round_trips(gen):
    norm = Normalizer(3)
    norm.fit(torch.randn(20, 3, generator=gen) * 5)
    norm.float()
    assert norm.mean.dtype == torch.float64 and norm.std.dtype == torch.float64
    other = Normalizer(3)
    other.load_state_dict(norm.state_dict())
    assert torch.equal(other.mean, norm.mean) and torch.equal(other.std, norm.std)
    with pytest.raises(ValueError):
        norm.fit(torch.randn(20, 4))
    with pytest.raises(ValueError):
        norm.fit(torch.randn(1, 3))


# ---------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------
IN, OUT = 5, 4


def synthetic_system(n, gen):
    """y = A x + 0.1 sin(3 x[:4]) + noise, x with offsets and scales (exercises the normalizer)."""
    g = torch.Generator().manual_seed(99)
    A = torch.randn(IN, OUT, generator=g) * 0.6
    scale = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0])
    offset = torch.tensor([1.0, -2.0, 0.0, 5.0, 0.5])
    x = torch.randn(n, IN, generator=gen) * scale + offset
    z = (x - offset) / scale
    y = z @ A + 0.1 * torch.sin(3 * z[:, :OUT]) + 0.01 * torch.randn(n, OUT, generator=gen)
    return x, y


def small_model(seed=0, **kw):
    torch.manual_seed(seed)
    kw = dict(ensemble_size=5, num_layers=2, hid_size=32, num_elites=3) | kw
    return GaussianEnsemble(IN, OUT, **kw)


@pytest.mark.parametrize("deterministic", [False, True])
def test_trainer_fits_known_dynamics(gen, deterministic):
    x, y = synthetic_system(2500, gen)
    model = small_model(deterministic=deterministic)
    trainer = ModelTrainer(model, lr=3e-3, weight_decay=1e-5)
    hist = trainer.train(x, y, num_epochs=40, patience=8, generator=gen)
    assert len(hist.train_losses) == len(hist.val_scores) == hist.epochs
    assert len(hist.val_scores[0]) == 5
    assert len(hist.elites) == 3 and model.elite_models == hist.elites
    x_test, y_test = synthetic_system(1000, gen)
    test_mse = model.eval_score(x_test, y_test)
    torch.testing.assert_close(trainer.evaluate(x_test, y_test, chunk=300), test_mse)  # chunked
    var = y_test.var(0).mean().item()
    assert max(hist.initial_val_score) > 0.3 * var  # an untrained model is far off
    assert test_mse[hist.elites].max().item() < 0.03 * var
    # the normalizer was fit on all inputs
    torch.testing.assert_close(model.normalizer.mean, x.double().mean(0))


def test_early_stopping_by_patience(gen):
    x, y = synthetic_system(600, gen)
    model = small_model(hid_size=16)
    hist = ModelTrainer(model, lr=1e-2).train(
        x, y, num_epochs=500, patience=3, improvement_threshold=0.2, generator=gen
    )
    assert hist.stopped_early and hist.epochs < 500
    assert hist.epochs == hist.best_epoch + 1 + 3  # patience epochs after the last improvement
    # and num_epochs alone bounds a run without patience
    seen = []
    hist2 = ModelTrainer(small_model(hid_size=16)).train(
        x, y, num_epochs=3, patience=None, generator=gen, callback=lambda *a: seen.append(a)
    )
    assert hist2.epochs == 3 and not hist2.stopped_early
    assert [a[0] for a in seen] == [0, 1, 2] and seen[2][1] == hist2.train_losses[2]
    assert seen[2][2].tolist() == hist2.val_scores[2] and seen[2][3].shape == (5,)
    with pytest.raises(ValueError):
        ModelTrainer(model).train(x, y, num_epochs=None, patience=None)


def test_best_snapshot_is_restored_and_scores_follow_mbrl(gen):
    x, y = synthetic_system(800, gen)
    model = small_model(hid_size=16)
    # validation_ratio=0 scores the training rows, i.e. all of (x, y), which we can re-score
    hist = ModelTrainer(model, lr=1e-2).train(
        x,
        y,
        num_epochs=25,
        patience=None,
        validation_ratio=0.0,
        improvement_threshold=0.3,
        generator=gen,
    )
    assert 0 <= hist.best_epoch < hist.epochs - 1  # the last epoch is not the snapshot
    torch.testing.assert_close(
        model.eval_score(x, y),
        torch.tensor(hist.val_scores[hist.best_epoch]),
        rtol=1e-5,
        atol=1e-7,
    )
    # best = elementwise min over the epochs that improved (and the initial score)
    best = torch.tensor(hist.initial_val_score)
    for score in hist.val_scores[: hist.best_epoch + 1]:
        score = torch.tensor(score)
        if ((best - score) / best.abs() > 0.3).any():
            best = torch.minimum(best, score)
    torch.testing.assert_close(torch.tensor(hist.best_val_score), best)
    assert hist.elites == torch.argsort(best, stable=True)[:3].tolist()


def test_elites_exclude_members_that_cannot_learn(gen):
    x, y = synthetic_system(1200, gen)
    model = small_model(num_elites=3)
    bad = torch.tensor([1, 3])
    mask = torch.ones(5)
    mask[bad] = 0.0
    for p in list(model.weights) + list(model.biases):  # members 1 and 3 get no gradient
        p.register_hook(lambda g: g * mask.view(-1, *([1] * (g.dim() - 1))))
    hist = ModelTrainer(model, lr=3e-3, weight_decay=0.0).train(
        x, y, num_epochs=15, patience=5, generator=gen
    )
    assert sorted(hist.elites) == [0, 2, 4]
    assert sorted(model.elite_models) == [0, 2, 4]
    score = torch.tensor(hist.best_val_score)
    assert score[bad].min() > 5 * score[[0, 2, 4]].max()


def test_bootstrap_with_replacement_once_per_call(gen, monkeypatch):
    idx = bootstrap_indices(3, 1000, gen)
    assert idx.shape == (3, 1000) and idx.min() >= 0 and idx.max() < 1000
    for member in idx:  # with replacement: about 1 - 1/e = 63% distinct rows per member
        assert 0.58 < member.unique().numel() / 1000 < 0.68
    assert not torch.equal(idx[0], idx[1])
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        return bootstrap_indices(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "bootstrap_indices", spy)
    x, y = synthetic_system(300, gen)
    trainer = ModelTrainer(small_model(hid_size=8))
    trainer.train(x, y, num_epochs=4, patience=None, generator=gen)
    assert len(calls) == 1 and calls[0][:2] == (5, 300 - 60)  # once per call, E x N_train
    trainer.train(x, y, num_epochs=2, patience=None, generator=gen)
    assert len(calls) == 2


def test_training_continues_across_calls(gen):
    x, y = synthetic_system(1000, gen)
    model = small_model(hid_size=16)
    trainer = ModelTrainer(model, lr=3e-3)
    kw = dict(patience=None, validation_ratio=0.0, generator=gen)  # scored on all rows
    first = trainer.train(x, y, num_epochs=10, **kw)
    opt = trainer.optimizer
    assert len(opt.state) > 0
    second = trainer.train(x, y, num_epochs=2, **kw)
    assert trainer.optimizer is opt and trainer.train_calls == 2
    # weights are not re-initialised: the second call starts where the first ended
    torch.testing.assert_close(
        torch.tensor(second.initial_val_score), torch.tensor(first.val_scores[first.best_epoch])
    )
    assert max(second.initial_val_score) < 0.9 * min(first.initial_val_score)


# ---------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------
def test_state_dict_round_trip_keeps_elites_and_normalizer(gen):
    model = fitted_model(gen, dtype=torch.float32)
    model.set_elite([3, 0, 2])
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    clone = GaussianEnsemble(5, 3, ensemble_size=4, num_layers=3, hid_size=16, num_elites=3)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    assert clone.elite_models == [3, 0, 2]
    assert torch.equal(clone.normalizer.mean, model.normalizer.mean)
    assert clone.normalizer.mean.dtype == torch.float64
    x = torch.randn(6, 5, generator=gen)
    for a, b in zip(model(x), clone(x), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# Propagation
# ---------------------------------------------------------------------------------------------
def test_balanced_member_indices(gen):
    members = torch.tensor([6, 1, 3])
    idx = balanced_member_indices(20, members, gen)
    assert idx.shape == (20,) and idx.dtype == torch.long
    counts = torch.bincount(idx, minlength=7)
    assert set(torch.nonzero(counts).flatten().tolist()) == {1, 3, 6}
    assert sorted(counts[[1, 3, 6]].tolist()) == [6, 7, 7]


def test_random_model_hits_only_elites_and_redraws(gen):
    model = fitted_model(gen, E=7, propagation_method="random_model")
    model.set_elite([5, 2, 0])
    draws = [model.propagation_indices(30, gen) for _ in range(3)]
    for idx in draws:
        assert set(idx.tolist()) == {0, 2, 5}
        assert torch.bincount(idx, minlength=7)[[0, 2, 5]].tolist() == [10, 10, 10]
    assert not torch.equal(draws[0], draws[1])
    x = torch.randn(30, 5, generator=gen, dtype=torch.float64)
    mean_all, logvar_all = model(x)
    idx = draws[2]
    mean, logvar = model.predict(x, indices=idx)
    rows = torch.arange(30)
    torch.testing.assert_close(mean, mean_all[idx, rows])
    torch.testing.assert_close(logvar, logvar_all[idx, rows])
    # without indices, predict draws them from the elites: every row matches one elite
    mean, _ = model.predict(x, generator=gen)
    diff = (mean_all - mean).abs().amax(-1)  # [E, B]
    chosen = diff.argmin(0)
    assert set(chosen.tolist()) <= {0, 2, 5} and (diff.amin(0) < 1e-12).all()


def test_fixed_model_indices_stay_fixed(gen):
    model = fitted_model(gen, E=5, propagation_method="fixed_model")
    model.set_elite([4, 1, 2])
    with pytest.raises(RuntimeError):
        model.propagation_indices(12)
    model.reset_propagation(12, gen)
    first = model.propagation_indices(12, gen).clone()
    for _ in range(3):
        assert torch.equal(model.propagation_indices(12, gen), first)
    assert set(first.tolist()) == {1, 2, 4}
    assert torch.equal(model.rollout_params()["members"], first)
    x = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    m1, _ = model.predict(x, generator=gen)
    m2, _ = model.predict(x, generator=gen)
    assert torch.equal(m1, m2)
    torch.testing.assert_close(m1, model(x)[0][first, torch.arange(12)])
    with pytest.raises(RuntimeError):
        model.propagation_indices(10)  # drawn for 12 rows
    model.reset_propagation(12, gen)
    assert not torch.equal(model.propagation_indices(12), first)  # a new draw per reset


def test_expectation_averages_elites(gen):
    model = fitted_model(gen, E=5, propagation_method="expectation")
    model.set_elite([0, 3])
    assert model.propagation_indices(8) is None
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    mean_all, logvar_all = model(x)
    mean, logvar = model.predict(x)
    torch.testing.assert_close(mean, mean_all[[0, 3]].mean(0))
    torch.testing.assert_close(logvar, logvar_all[[0, 3]].mean(0))


def test_predict_unbalanced_indices_and_deterministic(gen):
    model = fitted_model(gen, deterministic=True)
    x = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    idx = torch.tensor([0, 0, 0, 0, 2, 3, 3])
    mean, logvar = model.predict(x, indices=idx)
    assert logvar is None
    torch.testing.assert_close(mean, model(x)[0][idx, torch.arange(7)])


def test_rollout_params(gen):
    model = fitted_model(gen, dtype=torch.float32)
    model.set_elite([2, 0, 1])
    p = model.rollout_params()
    assert p["activation"] == "silu" and p["members"] is None
    assert p["elites"].tolist() == [2, 0, 1] and p["elites"].dtype == torch.long
    assert all(a is b for a, b in zip(p["weights"], model.weights, strict=True))
    assert all(a is b for a, b in zip(p["biases"], model.biases, strict=True))
    assert p["input_mean"].dtype == torch.float32 and p["input_mean"].shape == (5,)
    torch.testing.assert_close(p["input_std"], model.normalizer.std.float())
    assert p["min_logvar"] is model.min_logvar and p["max_logvar"] is model.max_logvar
    det = fitted_model(gen, deterministic=True).rollout_params()
    assert det["min_logvar"] is None and det["max_logvar"] is None


def test_set_elite_validates():
    model = GaussianEnsemble(5, 3, ensemble_size=4, hid_size=8)
    for bad in ([], [0, 0], [4], [-1]):
        with pytest.raises(ValueError):
            model.set_elite(bad)
    model.elite_models = torch.tensor([3, 1])
    assert model.elite_models == [3, 1]
