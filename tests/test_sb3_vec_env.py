"""``agents.sb3_vec_env.DynaLayVecEnv``: the Stable-Baselines3 VecEnv over the batched core.

SB3 has no VecEnv checker, so the contract is checked here by hand; trajectories are compared with N
single ``DynaLayEnv`` and with SB3's own ``DummyVecEnv`` of them (same-step autoreset); SB3 and
sb3-contrib algorithms and evaluation helpers must run on it unchanged.
"""

# Tests take the imported fixtures as parameters of the same name (pytest); not redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.evaluation import evaluate_policy as maskable_evaluate_policy
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor

from agents.sb3_vec_env import DynaLayVecEnv
from dynalay_env.env import DynaLayEnv
from tests.vec_fixtures import (  # noqa: F401  (_one_thread, digits_model, any_model: fixtures)
    ATOL,
    COMPARED_INFO_KEYS,
    _one_thread,
    any_model,
    assert_info_matches,
    digits_model,
    random_actions,
)

N = 8


def make_venv(model_and_data, num_envs: int = N, **options) -> DynaLayVecEnv:
    model, dataset = model_and_data
    return DynaLayVecEnv(num_envs, dataset=dataset, model=model, **options)


def make_singles(model_and_data, num_envs: int = N, **options) -> list[DynaLayEnv]:
    model, dataset = model_and_data
    return [DynaLayEnv(dataset=dataset, model=model, **options) for _ in range(num_envs)]


# ---- the VecEnv contract ---------------------------------------------------------------------------


def test_spaces_dtypes_and_shapes(digits_model):
    venv = make_venv(digits_model)
    single = make_singles(digits_model, 1)[0]
    assert isinstance(venv, VecEnv) and venv.num_envs == N
    assert venv.observation_space == single.observation_space
    assert venv.observation_space.dtype == np.float32
    assert venv.action_space == spaces.Discrete(digits_model[0].num_layers + 1)
    dim = venv.observation_space.shape[0]

    venv.seed(0)
    obs = venv.reset()
    assert isinstance(obs, np.ndarray) and obs.dtype == np.float32 and obs.shape == (N, dim)
    assert all(venv.observation_space.contains(o) for o in obs)
    assert len(venv.reset_infos) == N and all(isinstance(d, dict) for d in venv.reset_infos)

    rng = np.random.default_rng(0)
    done_count = 0
    for _ in range(20):
        obs, rewards, dones, infos = venv.step(random_actions(rng, N, venv.action_space.n))
        assert obs.dtype == np.float32 and obs.shape == (N, dim)
        assert all(venv.observation_space.contains(o) for o in obs)
        assert rewards.dtype == np.float32 and rewards.shape == (N,)
        assert dones.dtype == np.bool_ and dones.shape == (N,)
        assert isinstance(infos, list) and len(infos) == N and all(isinstance(d, dict) for d in infos)
        for i, info in enumerate(infos):
            assert ("terminal_observation" in info) == bool(dones[i]), f"env {i}"
            if dones[i]:
                terminal = info["terminal_observation"]
                assert terminal.dtype == np.float32 and terminal.shape == (dim,)
                assert venv.observation_space.contains(terminal)
                assert info["TimeLimit.truncated"] is False
                for key in ("label", "prediction", "correct", "step", "compute", "path", "example", "masked_action"):
                    assert key in info, f"finished env info lacks {key!r}"
                max_steps = venv.core.max_steps
                assert info["path"].shape == info["fpi_iterations"].shape == (max_steps,)
                assert (info["path"][: info["step"]] > 0).all() and (info["path"][info["step"]:] == -1).all()
        done_count += int(dones.sum())
    assert done_count >= N
    venv.close()


def test_step_before_reset_raises(digits_model):
    venv = make_venv(digits_model, 2)
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros(2, dtype=np.int64))


def test_attributes_methods_seed_and_wrappers(digits_model):
    venv = make_venv(digits_model, 4)
    k1 = venv.action_space.n
    assert venv.seed(10) == [10, 11, 12, 13]
    venv.reset()
    assert venv.get_attr("render_mode") == [None] * 4
    assert venv.get_attr("render_mode", indices=[0, 2]) == [None, None]
    assert venv.has_attr("action_masks")
    assert not venv.has_attr("no_such_attribute")
    with pytest.raises(AttributeError):
        venv.get_attr("no_such_attribute")

    masks = venv.env_method("action_masks")
    assert isinstance(masks, list) and len(masks) == 4
    assert all(m.shape == (k1,) and m.dtype == np.bool_ and m.all() for m in masks)
    assert len(venv.env_method("action_masks", indices=[1, 3])) == 2
    np.testing.assert_array_equal(np.stack(masks), venv.action_masks())

    venv.set_attr("mask_repeats", True)
    assert venv.get_attr("mask_repeats") == [True] * 4
    venv.step(np.array([1, 2, 3, 1]))
    masks = np.stack(venv.env_method("action_masks"))
    expected = np.ones((4, k1), dtype=bool)
    expected[[0, 1, 2, 3], [1, 2, 3, 1]] = False
    np.testing.assert_array_equal(masks, expected)

    assert venv.env_is_wrapped(Monitor) == [False] * 4
    assert venv.env_is_wrapped(Monitor, indices=[1]) == [False]
    renders = venv.env_method("render")
    assert len(renders) == 4 and all("example" in r for r in renders)


def test_seed_uses_consecutive_seeds(digits_model):
    venv = make_venv(digits_model, 3)
    seeds = venv.seed(123)
    assert seeds == [123, 124, 125]
    obs = venv.reset()
    for i, env in enumerate(make_singles(digits_model, 3)):
        o, _ = env.reset(seed=123 + i)
        np.testing.assert_allclose(obs[i], o, atol=ATOL)
    # The seeds are used by one reset only; the next reset continues each env's stream.
    examples = venv.core.example.tolist()
    venv.reset()
    assert venv.core.example.tolist() != examples
    venv.seed(123)
    venv.reset()
    assert venv.core.example.tolist() == examples


def test_set_attr_max_steps_is_refused_or_honoured(digits_model):
    venv = make_venv(digits_model, 2)
    try:
        venv.set_attr("max_steps", 6)
    except ValueError:
        return
    venv.reset()
    for t in range(6):
        dones = venv.step(np.array([1, 2]))[2]
        assert dones.all() == (t == 5)


# ---- equivalence -----------------------------------------------------------------------------------


def test_adapter_replays_single_envs(any_model):
    """Env i after ``seed(s)`` == a single env reset with ``seed=s+i``; same-step autoreset."""
    seed, steps = 17, 30
    venv = make_venv(any_model)
    singles = make_singles(any_model)
    k1 = venv.action_space.n
    venv.seed(seed)
    obs = venv.reset()
    for i, env in enumerate(singles):
        o, _ = env.reset(seed=seed + i)
        np.testing.assert_allclose(obs[i], o, atol=ATOL)

    rng = np.random.default_rng(6)
    episodes = np.zeros(N, dtype=int)
    for t in range(steps):
        actions = random_actions(rng, N, k1)
        obs, rewards, dones, infos = venv.step(actions)
        for i, env in enumerate(singles):
            where = f"step {t} env {i}"
            o, r, term, trunc, inf = env.step(int(actions[i]))
            assert bool(dones[i]) == (term or trunc), where
            np.testing.assert_allclose(rewards[i], r, atol=ATOL, err_msg=where)
            assert infos[i]["step"] == inf["step"], where
            assert np.isclose(infos[i]["compute"], inf["compute"], atol=ATOL), where
            if term:
                np.testing.assert_allclose(infos[i]["terminal_observation"], o, atol=ATOL, err_msg=where)
                for key in COMPARED_INFO_KEYS:
                    assert_info_matches(infos[i][key], inf[key], key, where)
                o, _ = env.reset()  # SB3: the returned obs is the next episode's first one
            np.testing.assert_allclose(obs[i], o, atol=ATOL, err_msg=where)
        episodes += dones
    assert (episodes >= 3).all(), f"too few episode boundaries per env: {episodes}"


def test_adapter_matches_dummy_vec_env(digits_model):
    model, dataset = digits_model
    seed = 2
    ours = make_venv(digits_model)
    dummy = DummyVecEnv([lambda: DynaLayEnv(dataset=dataset, model=model)] * N)
    assert ours.seed(seed) == dummy.seed(seed)
    np.testing.assert_allclose(ours.reset(), dummy.reset(), atol=ATOL)
    rng = np.random.default_rng(7)
    for t in range(25):
        actions = random_actions(rng, N, ours.action_space.n)
        o1, r1, d1, i1 = ours.step(actions)
        o2, r2, d2, i2 = dummy.step(actions)
        np.testing.assert_allclose(o1, o2, atol=ATOL, err_msg=f"step {t}")
        np.testing.assert_allclose(r1, r2, atol=ATOL, err_msg=f"step {t}")
        np.testing.assert_array_equal(d1, d2)
        assert (o1.dtype, r1.dtype, d1.dtype) == (o2.dtype, r2.dtype, d2.dtype)
        for i in np.flatnonzero(d1):
            np.testing.assert_allclose(i1[i]["terminal_observation"], i2[i]["terminal_observation"], atol=ATOL)
            for key in COMPARED_INFO_KEYS:
                assert_info_matches(i1[i][key], i2[i][key], key, f"step {t} env {i}")
    # An unseeded reset continues every env's stream in both.
    np.testing.assert_allclose(ours.reset(), dummy.reset(), atol=ATOL)
    dummy.close()


def test_set_options_pins_the_example(digits_model):
    model, dataset = digits_model
    ours = make_venv(digits_model, 2)
    dummy = DummyVecEnv([lambda: DynaLayEnv(dataset=dataset, model=model)] * 2)
    for venv in (ours, dummy):
        venv.seed(0)
        venv.set_options({"example": 5})
    np.testing.assert_allclose(ours.reset(), dummy.reset(), atol=ATOL)


def test_sequential_mode_visits_each_example_once(digits_model):
    venv = make_venv(digits_model, split="val", sample_mode="sequential")
    n = venv.core.num_examples
    k1 = venv.action_space.n
    rng = np.random.default_rng(1)
    venv.seed(0)
    venv.reset()
    visited = venv.core.example.tolist()
    while len(visited) < n + N:
        _, _, dones, infos = venv.step(random_actions(rng, N, k1, 0.5))
        finished = np.flatnonzero(dones)
        visited += venv.core.example[finished].tolist()  # the examples the finished envs restarted on
    assert visited[:n] == list(range(n))
    assert visited[n:n + N] == list(range(N))


# ---- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_envs", [0, -1, True, 1.5])
def test_bad_num_envs(digits_model, num_envs):
    with pytest.raises(ValueError, match="num_envs"):
        make_venv(digits_model, num_envs)


@pytest.mark.parametrize(
    ("actions", "match"),
    [
        (np.zeros(N + 1, dtype=np.int64), r"shape \(8,\)"),
        (np.zeros((N, 2), dtype=np.int64), r"shape \(8,\)"),
        (np.array([0, 0, 0, 0, 0, 4, 0, 0]), "slot 5"),
        (np.array([-1, 0, 0, 0, 0, 0, 0, 0]), "slot 0"),
        (np.zeros(N, dtype=np.float64), "integers"),
    ],
    ids=["too-long", "two-columns", "out-of-range", "negative", "float"],
)
def test_bad_actions(digits_model, actions, match):
    venv, twin = make_venv(digits_model), make_venv(digits_model)
    for env in (venv, twin):
        env.seed(0)
        env.reset()
    with pytest.raises(ValueError, match=match):
        venv.step(actions)
    good = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    for x, y in zip(venv.step(good)[:3], twin.step(good)[:3], strict=True):
        np.testing.assert_array_equal(x, y)


def test_bad_seed_list_for_core(digits_model):
    venv = make_venv(digits_model, 3)
    with pytest.raises(ValueError, match="2 seeds for 3"):
        venv.core.seed([1, 2])


# ---- SB3 / sb3-contrib run on it unchanged ---------------------------------------------------------

SMALL_NET = {"net_arch": [16, 16]}
#: evaluate_policy on an env without (Vec)Monitor warns that episode stats come from its own sums.
NO_MONITOR_WARNING = "ignore:Evaluation environment is not wrapped with a ``Monitor`` wrapper:UserWarning"


@pytest.mark.filterwarnings(NO_MONITOR_WARNING)
@pytest.mark.parametrize(
    ("algo", "kwargs"),
    [
        (PPO, {"n_steps": 16, "batch_size": 32, "n_epochs": 2}),
        (A2C, {"n_steps": 8}),
        (DQN, {"learning_starts": 64, "buffer_size": 1_000, "batch_size": 32, "train_freq": 4,
               "target_update_interval": 50}),
    ],
    ids=["ppo", "a2c", "dqn"],
)
def test_sb3_algorithms_train_and_evaluate(digits_model, algo, kwargs):
    venv = make_venv(digits_model, 4)
    model = algo("MlpPolicy", venv, policy_kwargs=SMALL_NET, seed=0, device="cpu", verbose=0, **kwargs)
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256

    rewards, lengths = evaluate_policy(model, venv, n_eval_episodes=8, return_episode_rewards=True)
    assert len(rewards) == len(lengths) == 8
    assert all(1 <= n <= venv.core.max_steps for n in lengths)

    monitored = VecMonitor(venv)
    mean, std = evaluate_policy(model, monitored, n_eval_episodes=8)
    assert np.isfinite(mean) and np.isfinite(std)


@pytest.mark.filterwarnings(NO_MONITOR_WARNING)
def test_vec_monitor_and_plain_evaluation_agree(digits_model):
    """Deterministic policy, same seed: VecMonitor's episode stats equal evaluate_policy's own sums."""
    venv = make_venv(digits_model, 4)
    model = PPO("MlpPolicy", venv, policy_kwargs=SMALL_NET, n_steps=16, batch_size=32, seed=0, device="cpu")
    venv.seed(3)
    plain = evaluate_policy(model, venv, n_eval_episodes=12, return_episode_rewards=True)
    monitored = VecMonitor(make_venv(digits_model, 4))
    monitored.seed(3)
    wrapped = evaluate_policy(model, monitored, n_eval_episodes=12, return_episode_rewards=True)
    np.testing.assert_allclose(plain[0], wrapped[0], atol=1e-4)
    assert plain[1] == wrapped[1]


@pytest.mark.filterwarnings(NO_MONITOR_WARNING)
def test_maskable_ppo_trains_and_evaluates(digits_model):
    venv = make_venv(digits_model, 4, mask_repeats=True)
    model = MaskablePPO("MlpPolicy", venv, policy_kwargs=SMALL_NET, n_steps=16, batch_size=32, n_epochs=2,
                        seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256

    # Predictions respect the batched masks.
    venv.seed(0)
    obs = venv.reset()
    for _ in range(10):
        masks = venv.action_masks()
        actions, _ = model.predict(obs, action_masks=masks, deterministic=False)
        assert masks[np.arange(4), actions].all()
        obs, _, _, infos = venv.step(actions)
        assert not any(info.get("masked_action", False) for info in infos)

    monitored = VecMonitor(venv)
    rewards, lengths = maskable_evaluate_policy(model, monitored, n_eval_episodes=8, return_episode_rewards=True,
                                                use_masking=True)
    assert len(rewards) == len(lengths) == 8
    mean, _ = maskable_evaluate_policy(model, venv, n_eval_episodes=4, use_masking=True)
    assert np.isfinite(mean)
