"""The opt-in ``history`` observation group: bounds, zeros at reset, hand-computed values, and the
vector env agreeing with single envs on it."""

# Tests take the imported fixtures as parameters of the same name (pytest); not redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import copy
import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import dynalay_env  # noqa: F401  (registers the env ids)
from dynalay_env.core import HISTORY_FEATURES, DynaLayCore
from dynalay_env.env import DynaLayEnv
from dynalay_env.fpi import anderson_solve, fixed_point_solve
from dynalay_env.model import LayerSpec, MainModel, default_config
from dynalay_env.options import DEFAULT_OBSERVATION_GROUPS, OBSERVATION_GROUPS
from dynalay_env.vector_env import DynaLayVectorEnv
from tests.vec_fixtures import (  # noqa: F401  (_one_thread, digits_model: fixtures)
    ATOL,
    _one_thread,
    digits_model,
    random_actions,
)


def _history(obs: np.ndarray, names: list[str]) -> np.ndarray:
    """The history columns of observations ``[..., obs_dim]``, in HISTORY_FEATURES order."""
    return obs[..., [names.index(f) for f in HISTORY_FEATURES]]


def test_history_is_opt_in_named_and_bounded(digits_model) -> None:
    model, dataset = digits_model
    assert "history" in OBSERVATION_GROUPS and "history" not in DEFAULT_OBSERVATION_GROUPS
    default = DynaLayEnv(dataset=dataset, model=model)
    assert not set(HISTORY_FEATURES) & set(default.unwrapped.observation_names)  # the default is unchanged

    from gymnasium.utils.env_checker import check_env

    env = gym.make("DynaLay-Digits-v0", model=model, max_steps=3, observation_groups=("head", "history")).unwrapped
    names = env.observation_names
    assert names[-len(HISTORY_FEATURES):] == list(HISTORY_FEATURES)
    assert all(f in env.observation_descriptions for f in HISTORY_FEATURES)
    low, high = _history(env.observation_space.low, names), _history(env.observation_space.high, names)
    np.testing.assert_array_equal(high, 1.0)
    np.testing.assert_array_equal(low, [-1.0 if f == "state_cosine" else 0.0 for f in HISTORY_FEATURES])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)  # includes the reset/step determinism checks
    assert not caught

    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=3)
    seen = []
    for _ in range(60):
        assert env.observation_space.contains(obs)
        obs, _, terminated, _, info = env.step(int(random_actions(rng, 1, env.action_space.n, 0.2)[0]))
        seen.append(_history(obs, names))
        if terminated:
            obs, _ = env.reset()
            np.testing.assert_array_equal(_history(obs, names), 0.0)  # every feature 0 at reset
    seen_arr = np.array(seen)
    assert seen_arr[:, 0].any() and (seen_arr[:, 5] > 0).any()  # layers ran and moved the state


def _tiny_core(max_steps: int = 3) -> DynaLayCore:
    torch.manual_seed(0)
    layers = (LayerSpec(2, 3, max_iter=20), LayerSpec(4, 3, max_iter=20))
    model = MainModel(default_config((12,), 5, channels=6, head_hidden=8, layers=layers)).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(16, 12, generator=g), torch.randint(0, 5, (16,), generator=g)
    model.calibrate_normalizer(x)
    return DynaLayCore(model, None, 1, examples=(x, y), max_steps=max_steps, observation_groups=("history",),
                       sample_mode="sequential")


def _first_residual(model: MainModel, k: int, z: torch.Tensor, x_emb: torch.Tensor) -> float:
    """The relative residual of layer k's first iteration from z: a solve cut at one iteration."""
    one = copy.deepcopy(model)
    one.layers[k].max_iter = 1
    return float(one.apply_layer(k, z, x_emb).residual)


def test_history_values_of_a_two_step_episode_by_hand() -> None:
    core = _tiny_core(max_steps=3)
    model = core.model
    obs = core.reset(examples=[5]).numpy()[0]
    np.testing.assert_array_equal(obs, 0.0)
    with torch.no_grad():
        z = model.encode(core.x[5:6])
        x_emb, states, results = z, [z], []
        for k in (0, 1):
            results.append(model.apply_layer(k, states[-1], x_emb))
            states.append(results[-1].state)
        probs = [torch.softmax(model.classify(s), 1)[0].double().numpy() for s in states]
        firsts = [_first_residual(model, k, states[k], x_emb) for k in (0, 1)]
    run = 0
    for t, action in enumerate((1, 2)):
        obs = core.step([action]).obs.numpy()[0]
        p, q = probs[t], probs[t + 1]
        agrees = float(p.argmax() == q.argmax())
        run = (run + 1) * int(agrees)
        m = (p + q) / 2
        js = (np.sum(p * np.log(p / m)) + np.sum(q * np.log(q / m))) / 2 / math.log(2)
        before, after = states[t].double().numpy().ravel(), states[t + 1].double().numpy().ravel()
        change = min(np.linalg.norm(after - before) / np.linalg.norm(after), 1.0)
        cosine = before @ after / (np.linalg.norm(before) * np.linalg.norm(after))
        contraction = float(results[t].residual) / firsts[t]
        expected = [1.0, agrees, run / 3, js, p.max(), change, cosine, min(contraction, 1.0)]
        np.testing.assert_allclose(obs, expected, rtol=1e-4, atol=1e-6, err_msg=f"step {t + 1}")
        assert 0 <= contraction < 1  # the solver contracted
    obs = core.step([0]).obs.numpy()[0]  # EXIT moves nothing: the history stays
    np.testing.assert_allclose(obs, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("solver", [fixed_point_solve, anderson_solve])
def test_solvers_record_the_first_iterations_residual(solver) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 6, generator=g) * 0.2
    z0, u = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)

    def f(z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ w + u)

    full = solver(f, z0, u, tol=1e-5, max_iter=30, flops_per_iteration=1)
    one = solver(f, z0, u, tol=1e-5, max_iter=1, flops_per_iteration=1)
    torch.testing.assert_close(full.first_residual, one.residual)
    assert (full.residual < full.first_residual).all()


def test_vector_env_and_single_envs_give_the_same_history(digits_model) -> None:
    model, dataset = digits_model
    n, seed = 4, 21
    options = {"max_steps": 3, "observation_groups": ("head", "history")}
    venv = DynaLayVectorEnv(n, dataset=dataset, model=model, **options)
    singles = [DynaLayEnv(dataset=dataset, model=model, **options) for _ in range(n)]
    names = venv.observation_names
    obs, _ = venv.reset(seed=seed)
    single_obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(singles)])
    np.testing.assert_allclose(obs, single_obs, atol=ATOL)
    rng = np.random.default_rng(1)
    pending = np.zeros(n, dtype=bool)
    moved = 0
    for _ in range(16):
        actions = random_actions(rng, n, venv.single_action_space.n, 0.2)
        obs, _, terminated, _, _ = venv.step(actions)
        for i, env in enumerate(singles):
            o = env.reset()[0] if pending[i] else env.step(int(actions[i]))[0]
            np.testing.assert_allclose(_history(obs[i], names), _history(o, names), atol=ATOL)
        moved += int((_history(obs, names)[:, 0] > 0).sum())
        pending = terminated.copy()
    assert moved > n
