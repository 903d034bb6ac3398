"""GaussianEnsemble against mbrl-lib 0.2.0 itself, with the same weights.

Skipped unless mbrl-lib is importable (``pip install --no-deps mbrl==0.2.0 hydra-core omegaconf
termcolor``; its model classes run with current torch).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mbrl.models.gaussian_mlp", exc_type=ImportError)
from mbrl.models.gaussian_mlp import GaussianMLP  # noqa: E402
from mbrl.util.math import Normalizer as MbrlNormalizer  # noqa: E402

from fastmbrl.models import GaussianEnsemble, Normalizer  # noqa: E402

E, IN, OUT, LAYERS, HID = 4, 5, 3, 3, 16


def pair(gen, deterministic=False, propagation_method=None):
    """Our ensemble and mbrl-lib's GaussianMLP sharing the same (float64) parameters."""
    ours = GaussianEnsemble(
        IN,
        OUT,
        ensemble_size=E,
        num_layers=LAYERS,
        hid_size=HID,
        deterministic=deterministic,
        num_elites=3,
        dtype=torch.float64,
        propagation_method=propagation_method or "random_model",
    )
    ours.reset_parameters(gen)
    with torch.no_grad():
        for b in ours.biases:
            b.normal_(0, 0.1, generator=gen)
    theirs = GaussianMLP(
        IN,
        OUT,
        "cpu",
        num_layers=LAYERS,
        ensemble_size=E,
        hid_size=HID,
        deterministic=deterministic,
        propagation_method=propagation_method,
        activation_fn_cfg={"_target_": "torch.nn.SiLU"},
    ).double()
    layers = [seq[0] for seq in theirs.hidden_layers] + [theirs.mean_and_logvar]
    assert len(layers) == len(ours.weights)
    with torch.no_grad():
        for layer, w, b in zip(layers, ours.weights, ours.biases, strict=True):
            assert layer.weight.shape == w.shape
            layer.weight.copy_(w)
            layer.bias.copy_(b.unsqueeze(1))
        if not deterministic:
            theirs.min_logvar.copy_(ours.min_logvar.unsqueeze(0))
            theirs.max_logvar.copy_(ours.max_logvar.unsqueeze(0))
    return ours, theirs


@pytest.mark.parametrize("deterministic", [False, True])
def test_forward_loss_and_score_equal_mbrl(gen, deterministic):
    ours, theirs = pair(gen, deterministic)
    x3 = torch.randn(E, 11, IN, generator=gen, dtype=torch.float64)
    y3 = torch.randn(E, 11, OUT, generator=gen, dtype=torch.float64)
    x2, y2 = x3[0], y3[0]
    for x in (x3, x2):
        m_ours, lv_ours = ours(x, normalized=True)
        m_theirs, lv_theirs = theirs(x, use_propagation=False)
        torch.testing.assert_close(m_ours, m_theirs.expand_as(m_ours), rtol=1e-12, atol=1e-12)
        if not deterministic:
            torch.testing.assert_close(lv_ours, lv_theirs.expand_as(lv_ours))
    torch.testing.assert_close(
        ours.loss(x3, y3, normalized=True), theirs.loss(x3, y3)[0], rtol=1e-12, atol=1e-12
    )
    if not deterministic:  # mbrl-lib's deterministic 2-D path broadcasts a 1-member ensemble
        torch.testing.assert_close(
            ours.loss(x2, y2, normalized=True), theirs.loss(x2, y2)[0], rtol=1e-12, atol=1e-12
        )
    score_theirs = theirs.eval_score(x2, y2)[0]  # [E, B, OUT]; the trainer means over (1, 2)
    torch.testing.assert_close(ours.eval_score(x2, y2, normalized=True, reduce=False), score_theirs)
    torch.testing.assert_close(ours.eval_score(x2, y2, normalized=True), score_theirs.mean((1, 2)))


def test_propagation_equals_mbrl(gen):
    ours, theirs = pair(gen, propagation_method="fixed_model")
    elites = [3, 0]
    ours.set_elite(elites)
    theirs.set_elite(elites)
    B = 10
    x = torch.randn(B, IN, generator=gen, dtype=torch.float64)
    perm = torch.randperm(B, generator=gen)
    m_theirs, lv_theirs = theirs(x, propagation_indices=perm)
    # mbrl-lib gives the rows perm[j*B/k:(j+1)*B/k] to elites[j]
    idx = torch.empty(B, dtype=torch.long)
    idx[perm] = torch.tensor(elites).repeat_interleave(B // len(elites))
    m_ours, lv_ours = ours.predict(x, indices=idx, normalized=True)
    torch.testing.assert_close(m_ours, m_theirs)
    torch.testing.assert_close(lv_ours, lv_theirs)
    ours.propagation_method = theirs.propagation_method = "expectation"
    m_theirs, lv_theirs = theirs(x)
    m_ours, lv_ours = ours.predict(x, normalized=True)
    torch.testing.assert_close(m_ours, m_theirs)
    torch.testing.assert_close(lv_ours, lv_theirs)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_normalizer_equals_mbrl(gen, dtype):
    data = torch.randn(40, 4, generator=gen, dtype=dtype) * 2 + 1
    data[:, 1] = 3.0
    data[:, 2] = 3.0 + 1e-7 * torch.randn(40, generator=gen, dtype=dtype)
    ours, theirs = Normalizer(4, dtype=dtype), MbrlNormalizer(4, "cpu", dtype=dtype)
    ours.fit(data)
    theirs.update_stats(data)
    torch.testing.assert_close(ours.mean, theirs.mean[0])
    torch.testing.assert_close(ours.std, theirs.std[0])
    torch.testing.assert_close(ours.normalize(data), theirs.normalize(data))


class _MbrlAdapter(torch.nn.Module):
    """Feeds (x, y) batches to mbrl-lib's GaussianMLP the way OneDTransitionRewardModel does."""

    def __init__(self, model, num_elites):
        super().__init__()
        self.model, self.num_elites = model, num_elites

    def update(self, batch, optimizer):
        return self.model.update(batch[0], optimizer, target=batch[1])

    def eval_score(self, batch):
        return self.model.eval_score(batch[0], target=batch[1])

    def set_elite(self, elites):
        self.model.set_elite(elites)


class _EpochBatches:
    """An iterable that yields one pre-drawn epoch of batches per ``iter()``."""

    def __init__(self, epochs):
        self.epochs = iter(epochs)

    def __iter__(self):
        return iter(next(self.epochs))


def test_training_run_equals_mbrl_model_trainer(gen):
    """Same data, splits, bootstrap and batch order: losses, scores, stop, elites and weights
    match mbrl-lib's ModelTrainer step for step."""
    from mbrl.models.model_trainer import ModelTrainer as MbrlTrainer

    from fastmbrl.models import ModelTrainer

    ours, theirs = pair(gen)
    M, bs, max_epochs, patience = 300, 32, 40, 3
    x = torch.randn(M, IN, generator=gen, dtype=torch.float64) * 2 + 1
    y = torch.tanh(x[:, :OUT]) + 0.1 * torch.randn(M, OUT, generator=gen, dtype=torch.float64)
    seed = 77
    hist = ModelTrainer(ours, lr=1e-2, weight_decay=1e-4).train(
        x,
        y,
        num_epochs=max_epochs,
        patience=patience,
        batch_size=bs,
        improvement_threshold=0.01,
        generator=torch.Generator().manual_seed(seed),
    )

    # replay our trainer's random draws (split, bootstrap, one order per epoch) for mbrl-lib
    g = torch.Generator().manual_seed(seed)
    xn = ours.normalize(x)
    perm = torch.randperm(M, generator=g)
    n_train = M - int(0.2 * M)
    x_tr, y_tr = xn[perm[:n_train]], y[perm[:n_train]]
    x_val, y_val = xn[perm[n_train:]], y[perm[n_train:]]
    boot = torch.randint(n_train, (E, n_train), generator=g)
    epochs = []
    for _ in range(max_epochs):
        order = torch.randperm(n_train, generator=g)
        idx = [boot[:, order[s : s + bs]] for s in range(0, n_train, bs)]
        epochs.append([(x_tr[i], y_tr[i]) for i in idx])
    val = [(x_val[s : s + bs], y_val[s : s + bs]) for s in range(0, len(x_val), bs)]

    adapter = _MbrlAdapter(theirs, ours.num_elites)
    trainer = MbrlTrainer(adapter, optim_lr=1e-2, weight_decay=1e-4)
    losses, val_means = trainer.train(
        _EpochBatches(epochs),
        val,
        num_epochs=max_epochs,
        patience=patience,
        improvement_threshold=0.01,
        silent=True,
    )
    assert hist.epochs == len(losses) < max_epochs  # stopped by patience at the same epoch
    torch.testing.assert_close(torch.tensor(hist.train_losses), torch.tensor(losses))
    ours_val_means = torch.tensor(hist.val_scores).mean(1)
    torch.testing.assert_close(ours_val_means, torch.tensor(val_means))
    assert len(hist.elites) == 3 and hist.elites == [int(e) for e in theirs.elite_models]
    layers = [seq[0] for seq in theirs.hidden_layers] + [theirs.mean_and_logvar]
    for layer, w, b in zip(layers, ours.weights, ours.biases, strict=True):  # best snapshot
        torch.testing.assert_close(w, layer.weight, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(b, layer.bias[:, 0], rtol=1e-9, atol=1e-9)
