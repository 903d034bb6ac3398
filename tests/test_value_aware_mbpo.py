"""Value-aware model learning inside MBPO: the value-gradient cache, the original-code switches,
the trainer hooks, config errors, and a short run of every variant."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from test_mbpo import run_killed_at_evaluation, tiny_cfg

from fastmbrl.agents import SAC, SACConfig
from fastmbrl.algorithms import mbpo
from fastmbrl.algorithms.value_aware import (
    ModelLoss,
    ValueAwareConfig,
    ValueGradientCache,
    clip_value_grads,
    value_aware_config,
)
from fastmbrl.config import ConfigError
from fastmbrl.models import GaussianEnsemble, ModelTrainer
from fastmbrl.ops import clip_norms_at_quantile, sac_value_fn, value_gradients
from fastmbrl.train import run

O, A = 5, 2


def agent(seed=0):
    return SAC(O, A, -np.ones(A), np.ones(A), SACConfig(hidden_size=32, batch_size=16), seed=seed)


def sac_step(a, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    a.update(torch.randn(n, O, generator=g), torch.rand(n, A, generator=g) * 2 - 1,
             torch.randn(n, generator=g), torch.randn(n, O, generator=g),
             torch.zeros(n, dtype=torch.bool), g)


# ---------------------------------------------------------------------------------------------
# Value-gradient cache
# ---------------------------------------------------------------------------------------------
def test_cache_equals_recomputation_and_refreshes_when_the_critic_changes():
    a = agent()
    states = torch.randn(40, O, generator=torch.Generator().manual_seed(1))
    cache = ValueGradientCache(a)
    cache.reset(states)
    g = torch.Generator().manual_seed(2)
    value_fn, K = sac_value_fn(a)
    for step in range(6):
        rows = torch.randint(40, (3, 12), generator=g)  # [E, b], repeats across members
        got = cache.lookup(rows)
        direct = value_gradients(value_fn, states[rows], K, clip_quantile=None)
        torch.testing.assert_close(got, direct, rtol=1e-6, atol=1e-7)
        # clipping at lookup time == clipping the recomputed batch
        torch.testing.assert_close(clip_norms_at_quantile(got, 0.95),
                                   clip_norms_at_quantile(direct, 0.95), rtol=1e-6, atol=1e-7)
        if step == 2:
            before = cache.computed_rows
            cache.lookup(rows)  # all known now: nothing is recomputed
            assert cache.computed_rows == before
        if step == 3:
            old = cache.lookup(rows).clone()
            sac_step(a)  # the critic changes -> the cache must not serve stale gradients
            new = cache.lookup(rows)
            assert not torch.allclose(old, new)
    # a row's gradient is the same whichever member asks for it
    rows = torch.tensor([[3, 7], [7, 3]])
    got = cache.lookup(rows)
    torch.testing.assert_close(got[:, 0, 0], got[:, 1, 1])


def test_cache_reset_for_a_new_dataset_forgets_old_rows():
    a = agent()
    cache = ValueGradientCache(a)
    cache.reset(torch.zeros(10, O))
    cache.lookup(torch.arange(10))
    new_states = torch.randn(10, O)
    cache.reset(new_states)
    value_fn, K = sac_value_fn(a)
    torch.testing.assert_close(cache.lookup(torch.arange(10)),
                               value_gradients(value_fn, new_states, K, None))


def test_cache_needs_reset_first():
    with pytest.raises(RuntimeError, match="reset"):
        ValueGradientCache(agent()).lookup(torch.arange(3))


def test_head_cumulative_switch_sums_earlier_heads():
    a = agent()
    states = torch.randn(8, O)
    plain, cum = ValueGradientCache(a), ValueGradientCache(a, cumulative=True)
    plain.reset(states)
    cum.reset(states)
    rows = torch.arange(8)
    torch.testing.assert_close(cum.lookup(rows), plain.lookup(rows).cumsum(0))


def test_clip_rules():
    g = torch.randn(4, 200, O, dtype=torch.float64)
    g[:, :5] *= 50  # outliers
    iclr = clip_value_grads(g, 0.95, head_rule=False)
    q = torch.tensor(np.quantile(g.norm(dim=-1).numpy(), 0.95, axis=1))
    assert torch.all(iclr.norm(dim=-1) <= q[:, None] * (1 + 1e-12))
    torch.testing.assert_close(clip_value_grads(g, 0.95, head_rule=True), g)  # norms < 1e5
    huge = g * 1e6
    clipped = clip_value_grads(huge, 0.95, head_rule=True)  # every norm > 1e5: the rows above q
    torch.testing.assert_close(clipped, clip_norms_at_quantile(huge, 0.95))
    torch.testing.assert_close(clip_value_grads(g, None, head_rule=False), g)


def test_iclr_switch_takes_the_gradient_at_the_delta():
    a = agent()
    model = GaussianEnsemble(O + A, O + 1, ensemble_size=2, num_layers=1, hid_size=8,
                             deterministic=True)
    obs, next_obs = torch.randn(6, O), torch.randn(6, O)
    for at_delta, expected in ((False, next_obs), (True, next_obs - obs)):
        loss = ModelLoss(ValueAwareConfig(kind="vagram_bounded", iclr_grad_at_delta=at_delta),
                         model, a, O)
        loss.set_data(obs, next_obs)
        torch.testing.assert_close(loss.cache.states, expected)


# ---------------------------------------------------------------------------------------------
# The trainer's hooks
# ---------------------------------------------------------------------------------------------
def test_trainer_passes_row_ids_and_calls_hooks():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 4, generator=g), torch.randn(60, 3, generator=g)
    model = GaussianEnsemble(4, 3, ensemble_size=2, num_layers=1, hid_size=8, num_elites=1)
    trainer = ModelTrainer(model)
    steps, scored = [], []

    def loss_fn(xb, yb, rows):
        torch.testing.assert_close(xb, model.normalize(x)[rows])  # rows index the inputs
        torch.testing.assert_close(yb, y[rows])
        return model.loss(xb, yb, normalized=True)

    def score_fn(xv, yv, rows):
        torch.testing.assert_close(yv, y[rows])
        scored.append(rows.numel())
        return torch.tensor([1.0, 2.0]) / (len(scored))

    hist = trainer.train(x, y, num_epochs=2, batch_size=16, generator=g, loss_fn=loss_fn,
                         score_fn=score_fn, grad_clip_norm=0.5, step_callback=steps.append)
    assert steps == list(range(1, 7))  # 48 training rows / 16 = 3 steps, two epochs
    assert scored == [12, 12, 12]  # before training and after each epoch
    assert hist.elites == [0]


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, kind", [
    ([], "mle"),
    (["+overrides.model_loss_type=mle"], "mle"),
    (["+overrides.model_loss_type=va"], "va"),
    (["dynamics_model=vaml_ensemble"], "vagram_bounded"),
    (["dynamics_model=vaml_ensemble", "dynamics_model.model.use_vaml=true"], "vagram_unbounded"),
    (["dynamics_model=vaml_ensemble", "dynamics_model.model.use_itervaml=true"], "itervaml"),
])
def test_config_selects_the_loss(extra, kind):
    cfg = tiny_cfg(*extra)
    va = value_aware_config(cfg)
    assert va.kind == kind
    assert va.grad_clip_norm == (2.0 if kind == "va" else None)
    sac_clip = mbpo.sac_config(cfg).grad_clip_norm
    assert sac_clip == (2.0 if any("model_loss_type" in e for e in extra) else None)


@pytest.mark.parametrize("extra, message", [
    (["+overrides.model_loss_type=va", "dynamics_model=vaml_ensemble"], "gaussian_mlp_ensemble"),
    (["+overrides.model_loss_type=vaml"], "model_loss_type='vaml': allowed values are 'mle', 'va'"),
    (["dynamics_model.va_norm=l3"], "va_norm"),
    (["+overrides.value_update_interval=-1"], "value_update_interval"),
    (["+overrides.v_update_batch_size=0"], "v_update_batch_size"),
    (["+overrides.model_los_type=va"], "did you mean overrides.model_loss_type"),
    (["dynamics_model=vaml_ensemble", "dynamics_model.model.use_scaling=false"], "use_scaling"),
])
def test_config_errors(extra, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        run(tiny_cfg(*extra), tmp_path)


# ---------------------------------------------------------------------------------------------
# A short CPU run of every variant
# ---------------------------------------------------------------------------------------------
VARIANTS = {
    "va_mle_with_refit": ["+overrides.model_loss_type=mle", "+overrides.v_update_batch_size=20",
                          "+overrides.value_update_interval=2"],
    "ma_l1": ["+overrides.model_loss_type=va", "+overrides.v_update_batch_size=20"],
    "vaml_l2": ["+overrides.model_loss_type=va", "dynamics_model.va_norm=l2",
                "+overrides.v_update_batch_size=20"],
    "vagram_bounded": ["dynamics_model=vaml_ensemble"],
    "vagram_unbounded": ["dynamics_model=vaml_ensemble", "dynamics_model.model.use_vaml=true"],
    "itervaml": ["dynamics_model=vaml_ensemble", "dynamics_model.model.use_itervaml=true"],
    "vagram_original_code": ["dynamics_model=vaml_ensemble",
                             "dynamics_model.iclr_grad_at_delta=true",
                             "dynamics_model.head_cumulative_grads=true",
                             "dynamics_model.head_clip_rule=true",
                             "dynamics_model.model.use_all_vf=false"],
    "distraction_small_model": ["overrides=mbpo_hopper_distraction",
                                "overrides.distraction_dimensions=5",
                                "dynamics_model=vaml_ensemble", "overrides.model_batch_size=32",
                                "overrides.rollout_schedule=[1,2,1,3]",
                                "dynamics_model.model.num_layers=2",
                                "dynamics_model.model.hid_size=8"],
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_runs(name, tmp_path, monkeypatch):
    refits = []
    real = mbpo.refit_critic_on_model

    def spy(step, **kw):
        refits.append(step)
        return real(step, **kw)

    monkeypatch.setattr(mbpo, "refit_critic_on_model", spy)
    extra = VARIANTS[name]
    cfg = tiny_cfg(*(extra if "overrides=" in " ".join(extra) else
                     ["overrides=mbpo_hopper", *extra]))
    best = run(cfg, tmp_path)
    assert math.isfinite(best)
    with open(tmp_path / "model.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4  # 80 steps, a model update every 20
    assert all(math.isfinite(float(r["model_train_loss"])) for r in rows)
    assert bool(refits) == ("model_loss_type" in " ".join(extra))


def test_critic_only_update_leaves_policy_and_alpha_alone():
    a = agent()
    policy = [p.clone() for p in a.policy.parameters()]
    critic = [p.clone() for p in a.critic.parameters()]
    target = [p.clone() for p in a.critic_target.parameters()]
    version, log_alpha = a.critic_version, a.log_alpha.detach().clone()
    g = torch.Generator().manual_seed(0)
    n = 16
    a.update_critic(torch.randn(n, O, generator=g), torch.rand(n, A, generator=g),
                    torch.randn(n, generator=g), torch.randn(n, O, generator=g),
                    torch.zeros(n, dtype=torch.bool), g)
    assert all(torch.equal(p, q) for p, q in zip(policy, a.policy.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(critic, a.critic.parameters(), strict=True))
    # update 0 of the critic-only counter also moves the targets (τ-step), as SAC's update does
    assert not all(torch.equal(p, q)
                   for p, q in zip(target, a.critic_target.parameters(), strict=True))
    assert torch.equal(a.log_alpha.detach(), log_alpha)
    assert a.critic_version == version + 1 and a.critic_only_updates == 1 and a.num_updates == 0


def test_va_loss_reaches_mean_and_logvar_through_the_reparameterised_sample():
    a = agent()
    model = GaussianEnsemble(O + A, O + 1, ensemble_size=2, num_layers=1, hid_size=8)
    loss_fn = ModelLoss(ValueAwareConfig(kind="va"), model, a, O,
                        generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    obs, next_obs = torch.randn(10, O, generator=g), torch.randn(10, O, generator=g)
    loss_fn.set_data(obs, next_obs)
    rows = torch.randint(10, (2, 6), generator=g)
    x = model.normalize(torch.randn(2, 6, O + A, generator=g))
    y = torch.randn(2, 6, O + 1, generator=g)
    loss_fn.loss(x, y, rows).backward()
    head = model.weights[-1].grad  # [E, hid, 2·(O+1)]: mean columns, then log-variance columns
    assert head[..., :O].abs().sum() > 0
    assert head[..., O + 1:2 * O + 1].abs().sum() > 0  # the state log-variances get gradient
    assert all(p.grad is None for p in a.critic.parameters())  # the critic is not trained here


def test_killed_va_mbpo_run_resumes_with_its_counters(tmp_path, monkeypatch):
    from fastmbrl.runs.checkpoint import latest_checkpoint, load_checkpoint

    extra = ["overrides=mbpo_hopper", "overrides.num_steps=120", "+overrides.model_loss_type=va",
             "+overrides.v_update_batch_size=64", "+overrides.value_update_interval=1"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    run(tiny_cfg(*extra), full)
    run_killed_at_evaluation(tiny_cfg(*extra), killed, monkeypatch)
    at_kill = load_checkpoint(latest_checkpoint(killed))["agent"]["critic_only_updates"]
    after = {"n": 0}
    real_update_critic = SAC.update_critic

    def counting_update_critic(self, *args, **kwargs):
        after["n"] += 1
        return real_update_critic(self, *args, **kwargs)

    monkeypatch.setattr(SAC, "update_critic", counting_update_critic)
    run(tiny_cfg(*extra, "resume=true"), killed)
    sa, sb = load_checkpoint(latest_checkpoint(full)), load_checkpoint(latest_checkpoint(killed))
    for key in ("epoch", "env_steps", "updates_made"):
        assert sa[key] == sb[key], key
    # the critic-only counter (it times the target updates of the refits) survives the restart
    assert at_kill > 0 and after["n"] > 0
    assert sb["agent"]["critic_only_updates"] == at_kill + after["n"]
