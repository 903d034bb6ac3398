"""Ensemble model trainer (mbrl-lib ``models/model_trainer.py`` with ``util/common.py``'s
``train_model_and_save_model_and_data`` and ``get_basic_buffer_iterators``).

One :meth:`ModelTrainer.train` call, as mbrl-lib does it in MBPO::

    normalizer.fit(all inputs)
    shuffle all M rows; the last int(M·validation_ratio) are the validation set
    boot[e] = N_train indices drawn with replacement, once per call            [E, N_train]
    best = eval_score(validation)                                               [E]
    every epoch:
        order = randperm(N_train)                      (reshuffled each epoch)
        for each slice s of `batch_size` positions:    (the last one may be shorter)
            batch = data[boot[:, order[s]]]            [E, ≤batch_size, ·]
            Adam step on model.loss(batch)
        score = eval_score(validation)                                          [E]
        if any((best - score) / |best| > improvement_threshold):
            snapshot the state_dict; best = min(best, score); epochs_since = 0
        else: epochs_since += 1
        stop after num_epochs, or when epochs_since >= patience
    load the snapshot (if any); elites = argsort(best)[:num_elites]

Adam (lr, weight_decay as L2 inside Adam, eps 1e-8) is created once and persists across calls;
weights are never re-initialised between calls.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .ensemble import GaussianEnsemble


def bootstrap_indices(
    ensemble_size: int, n: int, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Each member's bootstrap sample of ``n`` row ids, drawn with replacement -> ``[E, n]``.

    mbrl-lib ``BootstrapIterator(permute_indices=False)``, drawn once per training call.
    Drawn on the generator's device, returned on ``device``.
    """
    gen_device = generator.device if generator is not None else device
    idx = torch.randint(n, (ensemble_size, n), generator=generator, device=gen_device)
    return idx.to(device)


@dataclass
class TrainHistory:
    """What one :meth:`ModelTrainer.train` call did.

    train_losses: mean training loss per epoch.
    val_scores: per-member validation MSE per epoch, ``[epochs][E]``.
    initial_val_score: per-member validation MSE before the first epoch, ``[E]``.
    best_val_score: per-member best validation MSE (used for the elites), ``[E]``.
    epochs: epochs run; stopped_early: stopped by patience (not by ``num_epochs``).
    best_epoch: last epoch (0-based) whose state was snapshotted, -1 if none was.
    elites: the elite members chosen at the end, best first.
    """

    train_losses: list[float] = field(default_factory=list)
    val_scores: list[list[float]] = field(default_factory=list)
    initial_val_score: list[float] = field(default_factory=list)
    best_val_score: list[float] = field(default_factory=list)
    epochs: int = 0
    stopped_early: bool = False
    best_epoch: int = -1
    elites: list[int] = field(default_factory=list)


class ModelTrainer:
    """Trains a :class:`GaussianEnsemble` on ``(inputs, targets)`` tensors.

    Args:
        model: the ensemble to train (in place).
        lr: Adam learning rate (mbrl-lib MBPO overrides: 1e-3 or 3e-4).
        weight_decay: Adam's L2 coefficient, one value for all parameters (MBPO: 1e-5 / 5e-5).
        eps: Adam's epsilon.
    """

    def __init__(
        self,
        model: GaussianEnsemble,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        eps: float = 1e-8,
    ):
        self.model = model
        self.optimizer = torch.optim.Adam(
            model.parameters(), lr=lr, weight_decay=weight_decay, eps=eps
        )
        self.train_calls = 0

    @torch.no_grad()
    def evaluate(
        self, x: torch.Tensor, y: torch.Tensor, normalized: bool = False, chunk: int = 8192
    ) -> torch.Tensor:
        """Per-member MSE of the mean over all of ``x [N, in]``, ``y [N, out]`` -> ``[E]``.

        ``x`` is raw unless ``normalized``; evaluated ``chunk`` rows at a time.
        """
        total = None
        for s in range(0, x.shape[0], chunk):
            err = self.model.eval_score(x[s : s + chunk], y[s : s + chunk], normalized, False)
            part = err.sum(dim=(1, 2))
            total = part if total is None else total + part
        return total / (x.shape[0] * y.shape[1])

    def train(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        num_epochs: int | None = None,
        patience: int | None = 5,
        batch_size: int = 256,
        validation_ratio: float = 0.2,
        improvement_threshold: float = 0.01,
        generator: torch.Generator | None = None,
        fit_normalizer: bool = True,
        callback: Callable | None = None,
        loss_fn: Callable | None = None,
        score_fn: Callable | None = None,
        grad_clip_norm: float | None = None,
        step_callback: Callable | None = None,
    ) -> TrainHistory:
        """Fit the model to ``inputs [M, in]`` -> ``targets [M, out]`` (algorithm above).

        Args:
            inputs: raw model inputs (e.g. ``[obs, act]``); normalized here.
            targets: raw targets (e.g. ``[next_obs - obs, reward]``), never normalized.
            num_epochs: maximum epochs; None: until patience runs out (mbrl-lib MBPO).
            patience: epochs without an improvement before stopping; None: never stop early.
            batch_size: rows per member per step (mbrl-lib MBPO: 256).
            validation_ratio: held-out fraction; with 0 the training rows are scored instead.
            improvement_threshold: relative improvement of any member's score that counts.
            generator: for the split, the bootstrap and the epoch shuffles (on its own
                device; indices are moved to the model's device once per call / epoch).
            fit_normalizer: refit the normalizer on all ``inputs`` first (mbrl-lib does).
            callback: called after every epoch as
                ``callback(epoch, train_loss, val_score [E], best_val_score [E])``.
            loss_fn: the training loss instead of ``model.loss``, called as
                ``loss_fn(x [E, b, in] normalized, y [E, b, out], rows [E, b])`` -> scalar, where
                ``rows`` are the rows' positions in ``inputs`` (e.g. replay-buffer indices, to
                look up per-row data such as value gradients).
            score_fn: the validation score instead of the MSE of the mean, called as
                ``score_fn(x [n, in] normalized, y [n, out], rows [n])`` -> ``[E]`` (lower is
                better; used for early stopping and the elites).
            grad_clip_norm: clip the model's gradient norm before every step (VA-MBPO: 2.0).
            step_callback: called after every optimiser step as ``step_callback(step)``, with
                ``step`` counting this call's steps from 1 (VA-MBPO refits the value function
                there).
        """
        model = self.model
        if num_epochs is None and not patience:
            raise ValueError("give num_epochs or patience, else training never stops")
        if inputs.dim() != 2 or inputs.shape[1] != model.in_size:
            raise ValueError(f"inputs must be [M, {model.in_size}], got {tuple(inputs.shape)}")
        if targets.shape != (inputs.shape[0], model.out_size):
            raise ValueError(
                f"targets must be [{inputs.shape[0]}, {model.out_size}], got {tuple(targets.shape)}"
            )
        p = model.weights[0]
        device, dtype, E = p.device, p.dtype, model.ensemble_size
        gen_device = generator.device if generator is not None else device

        def randperm(n):
            return torch.randperm(n, generator=generator, device=gen_device).to(device)

        inputs = inputs.to(device)
        if fit_normalizer and model.normalizer is not None:
            model.normalizer.fit(inputs)
        x = model.normalize(inputs)  # [M, in] normalized once, in the parameters' dtype
        y = targets.to(device=device, dtype=dtype)

        M = x.shape[0]
        n_val = int(M * validation_ratio)
        n_train = M - n_val
        if n_train < 1:
            raise ValueError(f"no training rows left: M={M}, validation_ratio={validation_ratio}")
        perm = randperm(M)
        x_train, y_train = x[perm[:n_train]], y[perm[:n_train]]
        rows_train = perm[:n_train]
        rows_val = perm[n_train:] if n_val else rows_train
        x_val, y_val = (x[perm[n_train:]], y[perm[n_train:]]) if n_val else (x_train, y_train)
        boot = bootstrap_indices(E, n_train, generator, device)  # [E, N_train], once per call

        def val_score():
            if score_fn is None:
                return self.evaluate(x_val, y_val, normalized=True)
            return score_fn(x_val, y_val, rows_val).detach()

        hist = TrainHistory()
        best = val_score()  # [E]
        step = 0
        hist.initial_val_score = best.tolist()
        best_state = None
        epochs_since_update = 0
        epoch = 0
        while num_epochs is None or epoch < num_epochs:
            model.train()
            order = randperm(n_train)
            losses = []
            for s in range(0, n_train, batch_size):
                idx = boot[:, order[s : s + batch_size]]  # [E, b]
                self.optimizer.zero_grad(set_to_none=True)
                if loss_fn is None:
                    loss = model.loss(x_train[idx], y_train[idx], normalized=True)
                else:
                    loss = loss_fn(x_train[idx], y_train[idx], rows_train[idx])
                loss.backward()
                if grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
                self.optimizer.step()
                losses.append(loss.detach())
                step += 1
                if step_callback is not None:
                    step_callback(step)
            hist.train_losses.append(torch.stack(losses).mean().item())  # one sync per epoch

            model.eval()
            score = val_score()
            hist.val_scores.append(score.tolist())
            improvement = (best - score) / best.abs()
            if bool((improvement > improvement_threshold).any()):
                best_state = copy.deepcopy(model.state_dict())
                best = torch.minimum(best, score)
                hist.best_epoch = epoch
                epochs_since_update = 0
            else:
                epochs_since_update += 1
            if callback is not None:
                callback(epoch, hist.train_losses[-1], score, best)
            epoch += 1
            if patience and epochs_since_update >= patience:
                hist.stopped_early = True
                break

        if best_state is not None:
            model.load_state_dict(best_state)
        elites = torch.argsort(best.cpu(), stable=True)[: model.num_elites].tolist()
        model.set_elite(elites)
        hist.epochs = epoch
        hist.best_val_score = best.tolist()
        hist.elites = elites
        self.train_calls += 1
        return hist
