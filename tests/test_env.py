"""DynaLayEnv, the single Gymnasium env: checkers, action semantics, properties, masks, errors,
registration and the cached default model."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dynalay_env
from dynalay_env import CUSTOM_ENTRY_POINTS, ENV_IDS
from dynalay_env.datasets import DatasetNotFoundError, load_dataset
from dynalay_env.env import ENV_OPTIONS, DynaLayEnv
from dynalay_env.model import CheckpointError, MainModel, default_config, save_checkpoint
from dynalay_env.options import REWARD_PARAM_NAMES
from tests.env_fixtures import (  # noqa: F401
    digits_model,
    mnist1d_model,
    no_default_model_training,
    obs_value,
    reset_flops,
    step_flops,
    synthetic_model,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = {"digits": digits_model, "synthetic": synthetic_model}


def make(env_id: str = "DynaLay-Digits-v0", model: Any = None, **kwargs: Any) -> gym.Env:
    """``gym.make`` with the session's tiny model of the env's dataset (never the default model)."""
    if model is None:
        dataset = kwargs.get("dataset") or ENV_IDS[env_id]
        model = MODELS[dataset]()
    return gym.make(env_id, model=model, **kwargs)


def digits_env(**kwargs: Any) -> DynaLayEnv:
    return DynaLayEnv(dataset="digits", model=digits_model(), **kwargs)


def worst_step(model: MainModel) -> np.ndarray:
    """Largest normalised compute of one step through each layer (max_iter iterations)."""
    c = model.cost_table()
    return np.array([(c.injection[k] + c.max_iterations[k] * c.iteration[k] + c.head) / c.normalizer
                     for k in range(model.num_layers)])


def taken(info: dict[str, Any], key: str = "path") -> list[int]:
    """``info[key]`` (``path`` or ``fpi_iterations``, padded to ``max_steps``) cut to the steps taken."""
    return info[key][: info["step"]].tolist()


def assert_infos_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


# ---- the two env checkers -------------------------------------------------------------------------

CHECKER_CASES = [
    ("DynaLay-Digits-v0", "digits", {}),
    ("DynaLay-Synthetic-v0", "synthetic", {}),
    ("DynaLay-v0", "digits", {"dataset": "digits"}),
    ("DynaLay-Digits-v0", "digits", {"mask_repeats": True, "compute_budget": 1.5}),
    ("DynaLay-Synthetic-v0", "synthetic", {"mask_repeats": True, "compute_budget": 0.9}),
    ("DynaLay-Digits-v0", "digits", {"observation_groups": ("head", "progress")}),
    ("DynaLay-Synthetic-v0", "synthetic", {"observation_groups": ("hidden", "solver", "last_action"),
                                           "reward": "logprob", "max_steps": 2}),
    ("DynaLay-Digits-v0", "digits", {"reward": "blockdrop", "shaping": "confidence", "split": "val",
                                     "sample_mode": "sequential"}),
]


@pytest.mark.parametrize("env_id,dataset,kwargs", CHECKER_CASES,
                         ids=[f"{c[0]}-{'-'.join(c[2]) or 'default'}" for c in CHECKER_CASES])
def test_env_checkers_pass(env_id: str, dataset: str, kwargs: dict[str, Any]) -> None:
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = make(env_id, MODELS[dataset](), **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped)  # includes the reset/step determinism checks
        sb3_check_env(env.unwrapped, warn=True)
    unexpected = [str(w.message) for w in caught if "infinity" not in str(w.message)]
    assert not unexpected
    if "hidden" not in kwargs.get("observation_groups", ("hidden",)):
        assert not caught  # a bounded observation space draws no warning at all


def test_env_checkers_pass_mnist1d() -> None:
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("DynaLay-MNIST1D-v0", model=mnist1d_model())
    assert env.unwrapped.core.dataset.name == "mnist1d"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")
        gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)


@pytest.mark.parametrize("env_id,files", [
    ("DynaLay-MNIST-v0", ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                          "t10k-labels-idx1-ubyte"]),
    ("DynaLay-FashionMNIST-v0", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    ("DynaLay-CIFAR10-v0", ["data_batch_1", "data_batch_5", "test_batch"]),
])
def test_file_datasets_missing_files(env_id: str, files: list[str], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DYNALAY_DATA_ROOT", raising=False)
    with pytest.raises(DatasetNotFoundError) as exc:
        gym.make(env_id, model=digits_model(), data_root=tmp_path)
    assert isinstance(exc.value, FileNotFoundError)
    message = str(exc.value)
    assert "not found" in message and str(tmp_path) in message
    for name in files:
        assert name in message
    with pytest.raises(DatasetNotFoundError, match="data_root"):  # no folder given at all
        gym.make(env_id, model=digits_model())


# ---- action numbering -------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["digits", "synthetic"])
def test_exit_applies_no_layer(dataset: str) -> None:
    env = DynaLayEnv(dataset=dataset, model=MODELS[dataset]())
    obs0, info0 = env.reset(seed=0, options={"example": 3})
    assert taken(info0) == [] and info0["step"] == 0 and info0["flops"] == reset_flops(env.core.model)
    obs, reward, terminated, truncated, info = env.step(0)
    assert terminated and not truncated
    assert taken(info) == [] and taken(info, "fpi_iterations") == [] and info["step"] == 0
    assert info["compute"] == info0["compute"] and info["flops"] == info0["flops"]
    assert info["prediction"] == info0["prediction"] and info["example"] == 3
    assert reward == (1.0 if info["correct"] else -1.0)  # paper: nothing spent by EXIT
    names = env.observation_names
    same = [i for i, n in enumerate(names) if not n.startswith(("last_action", "last_iterations"))]
    np.testing.assert_array_equal(obs[same], obs0[same])
    assert obs_value(env, obs, "last_action_0") == 1.0


@pytest.mark.parametrize("dataset", ["digits", "synthetic"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_action_k_applies_layer_k_minus_1(dataset: str, k: int) -> None:
    model = MODELS[dataset]()
    env = DynaLayEnv(dataset=dataset, model=model)
    i = 11
    env.reset(seed=1, options={"example": i})
    obs, reward, terminated, truncated, info = env.step(k)
    x, y = load_dataset(dataset).as_tensors("agent_train")
    with torch.no_grad():
        z0 = model.encode(x[i:i + 1])
        result = model.apply_layer(k - 1, z0, z0)
        logits = model.classify(result.state)
    iterations = int(result.iterations[0])
    assert not terminated and not truncated
    assert info["example"] == i and info["label"] == int(y[i])
    assert taken(info) == [k] and taken(info, "fpi_iterations") == [iterations] and info["step"] == 1
    torch.testing.assert_close(env.core.z[0], result.state[0])
    hidden = [n.startswith("hidden_") for n in env.observation_names]
    np.testing.assert_allclose(obs[hidden], model.introspect(result.state)[0].numpy(), rtol=1e-5, atol=1e-6)
    assert info["prediction"] == int(logits.argmax(1)[0])
    assert info["flops"] == pytest.approx(reset_flops(model) + step_flops(model, k, iterations), rel=1e-12)
    assert obs_value(env, obs, f"last_action_{k}") == 1.0
    assert obs_value(env, obs, "last_iterations") == pytest.approx(iterations / model.layers[k - 1].max_iter)


def test_last_iterations_feature_after_exit() -> None:
    env = digits_env()
    env.reset(seed=0, options={"example": 0})
    obs1, *_ = env.step(3)
    obs2, *_ = env.step(0)
    assert obs_value(env, obs2, "last_iterations") == obs_value(env, obs1, "last_iterations")


# ---- properties over random action sequences --------------------------------------------------------


@functools.cache
def property_env(max_steps: int) -> DynaLayEnv:
    return digits_env(max_steps=max_steps)


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), max_steps=st.integers(1, 5),
       actions=st.lists(st.integers(0, 3), min_size=1, max_size=30))
def test_random_action_sequences(seed: int, max_steps: int, actions: list[int]) -> None:
    env = property_env(max_steps)
    model = env.core.model
    normalizer = model.cost_table().normalizer
    obs, info = env.reset(seed=seed)
    assert env.observation_space.contains(obs)
    flops, length, last = reset_flops(model), 0, -1
    assert info["flops"] == flops
    for a in actions:
        prev = info
        obs, reward, terminated, truncated, info = env.step(a)
        length += 1
        assert env.observation_space.contains(obs), obs
        assert np.isfinite(reward) and not truncated
        assert info["compute"] >= prev["compute"]
        if a > 0:
            assert taken(info) == taken(prev) + [a]
            flops += step_flops(model, a, taken(info, "fpi_iterations")[-1])
        else:
            assert taken(info) == taken(prev)
        assert info["flops"] == pytest.approx(flops, rel=1e-12)
        assert info["compute"] == pytest.approx(flops / normalizer, rel=1e-12)
        assert len(taken(info)) == len(taken(info, "fpi_iterations")) == info["step"] <= max_steps
        assert all(1 <= it <= model.layers[p - 1].max_iter
                   for p, it in zip(taken(info), taken(info, "fpi_iterations"), strict=True))
        # Padding past the steps taken: path -1, iterations 0 (the documented fill values).
        assert (info["path"][info["step"]:] == -1).all() and (info["fpi_iterations"][info["step"]:] == 0).all()
        assert terminated == (a == 0 or info["step"] == max_steps)
        repeated = a > 0 and a == last
        assert info["repeated"] == repeated and not info["masked_action"]
        # The default (paper) reward, recomputed from info.
        accuracy = (1.0 if info["correct"] else -1.0) if terminated else 0.0
        expected = accuracy - 0.1 * (info["flops"] - prev["flops"]) / normalizer - 0.05 * repeated
        assert reward == pytest.approx(expected, abs=1e-5)
        last = a
        if terminated:
            assert length <= max_steps
            obs, info = env.reset()
            assert env.observation_space.contains(obs)
            flops, length, last = reset_flops(model), 0, -1


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 2**32 - 1), budget=st.floats(0.2, 4.0), mask_repeats=st.booleans(), data=st.data())
def test_following_masks_never_exceeds_budget(seed: int, budget: float, mask_repeats: bool,
                                              data: st.DataObject) -> None:
    env = digits_env(compute_budget=budget, mask_repeats=mask_repeats, max_steps=5)
    worst = worst_step(env.core.model)
    obs, info = env.reset(seed=seed)
    last = -1
    for _ in range(12):
        mask = env.action_masks()
        assert mask.shape == (env.action_space.n,) and mask.dtype == bool
        np.testing.assert_array_equal(mask, info["action_mask"])
        expected = np.concatenate([[True], info["compute"] + worst <= budget])
        if mask_repeats and last > 0:
            expected[last] = False
        np.testing.assert_array_equal(mask, expected)
        a = data.draw(st.sampled_from(np.flatnonzero(mask).tolist()))
        obs, reward, terminated, _, info = env.step(a)
        assert not info["masked_action"]
        assert info["compute"] <= budget
        last = a
        if terminated:
            obs, info = env.reset()
            last = -1


# ---- masks --------------------------------------------------------------------------------------------


def test_mask_repeats_forbids_the_last_layer() -> None:
    env = digits_env(mask_repeats=True)
    _, info = env.reset(seed=0)
    assert env.action_masks().tolist() == [True] * 4 == info["action_mask"].tolist()
    _, _, _, _, info = env.step(2)
    assert env.action_masks().tolist() == [True, True, False, True] == info["action_mask"].tolist()
    _, _, _, _, info = env.step(3)
    assert env.action_masks().tolist() == [True, True, True, False] == info["action_mask"].tolist()
    # Without mask_repeats nothing is masked.
    env = digits_env()
    env.reset(seed=0)
    env.step(2)
    assert env.action_masks().all()


def test_masked_action_is_executed_as_exit() -> None:
    env = digits_env(mask_repeats=True)
    env.reset(seed=0)
    _, _, _, _, before = env.step(1)
    _, reward, terminated, truncated, info = env.step(1)
    assert terminated and not truncated and info["masked_action"]
    assert taken(info) == [1] and info["flops"] == before["flops"]
    assert reward == pytest.approx((1.0 if info["correct"] else -1.0), abs=1e-6)  # EXIT costs nothing


def test_compute_budget_masks_layers_by_worst_case() -> None:
    model = digits_model()
    worst = worst_step(model)
    start = reset_flops(model) / model.cost_table().normalizer
    budget = float(start + (worst[0] + worst[1]) / 2)  # layer 1 allowed, layers 2 and 3 not
    assert worst[0] < worst[1] < worst[2]
    env = digits_env(compute_budget=budget)
    _, info = env.reset(seed=0)
    assert info["action_mask"].tolist() == [True, True, False, False]
    _, _, terminated, _, info = env.step(3)
    assert terminated and info["masked_action"] and taken(info) == []
    env = digits_env(compute_budget=start * 1.01)  # no layer fits: only EXIT
    _, info = env.reset(seed=0)
    assert info["action_mask"].tolist() == [True, False, False, False]


def test_maskable_ppo_trains_on_the_single_env_and_obeys_its_masks() -> None:
    """A smoke test of MaskablePPO on the Gymnasium env through ``action_masks()``: it trains, and its
    sampled actions never repeat a layer (``mask_repeats``). Whether it learns is checked on the
    synthetic dataset in tests/test_algorithms.py."""
    from sb3_contrib import MaskablePPO

    env = make("DynaLay-Digits-v0", mask_repeats=True)
    agent = MaskablePPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu", verbose=0)
    agent.learn(total_timesteps=256)
    assert agent.num_timesteps >= 256
    layers_taken = 0
    for episode in range(40):
        obs, info = env.reset(seed=episode)
        terminated = False
        while not terminated:
            action, _ = agent.predict(obs, action_masks=env.unwrapped.action_masks(), deterministic=False)
            obs, _, terminated, _, info = env.step(action)
            assert not info["masked_action"], f"episode {episode}: a masked action was sampled"
        path = taken(info)
        layers_taken += len(path)
        assert all(a != b for a, b in zip(path, path[1:], strict=False)), f"repeated layer in {path}"
    assert layers_taken > 0  # the check above had layers to look at


# ---- sampling, seeding, rendering ------------------------------------------------------------------


def test_sequential_visits_each_example_once_in_order() -> None:
    env = digits_env(split="val", sample_mode="sequential")
    n = env.core.num_examples
    assert n == load_dataset("digits").num_examples("val")
    seen = []
    for episode in range(n + 3):
        _, info = env.reset(seed=123) if episode == 0 else env.reset()
        seen.append(info["example"])
        _, _, terminated, _, _ = env.step(0)
        assert terminated
    assert seen[:n] == list(range(n))
    assert seen[n:] == [0, 1, 2]  # the next pass starts over
    _, info = env.reset(seed=5)  # any seed rewinds
    assert info["example"] == 0


def test_reset_with_same_seed_is_identical() -> None:
    env = digits_env(mask_repeats=True)
    obs1, info1 = env.reset(seed=42)
    steps1 = [env.step(a) for a in (2, 1)]
    env.reset()
    env.step(3)
    obs2, info2 = env.reset(seed=42)
    steps2 = [env.step(a) for a in (2, 1)]
    np.testing.assert_array_equal(obs1, obs2)
    assert_infos_equal(info1, info2)
    for s1, s2 in zip(steps1, steps2, strict=True):
        np.testing.assert_array_equal(s1[0], s2[0])
        assert s1[1:4] == s2[1:4]
        assert_infos_equal(s1[4], s2[4])
    assert "step_wall_time" not in info1 and env.unwrapped.last_step_seconds > 0.0  # timing is not in info
    # A fresh env with the same seed replays the same stream of examples across resets.
    other = digits_env(mask_repeats=True)
    a = [env.reset(seed=9)[1]["example"]] + [env.reset()[1]["example"] for _ in range(5)]
    b = [other.reset(seed=9)[1]["example"]] + [other.reset()[1]["example"] for _ in range(5)]
    assert a == b and len(set(a)) > 1


def test_pinned_example_out_of_range() -> None:
    env = digits_env()
    with pytest.raises(ValueError, match=r"indices in \[0, 360\)"):
        env.reset(seed=0, options={"example": 360})


def test_render_ansi_one_line_with_path() -> None:
    env = make("DynaLay-Digits-v0", render_mode="ansi")
    env.reset(seed=0)
    env.step(2)
    env.step(1)
    text = env.render()
    assert isinstance(text, str) and "\n" not in text
    assert text.index("L2(") < text.index("L1(")
    assert "compute" in text and "pred" in text
    assert digits_env().render() is None


@pytest.mark.parametrize("mode", ["human", "rgb", "text"])
def test_bad_render_mode(mode: str) -> None:
    with pytest.raises(ValueError, match="render_mode.*ansi.*rgb_array"):
        DynaLayEnv(dataset="digits", model=digits_model(), render_mode=mode)
    if mode == "human":
        # gym.make shows rgb_array frames in a window instead (its HumanRendering wrapper, needs pygame).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = make("DynaLay-Digits-v0", render_mode=mode)
        assert isinstance(env, gym.wrappers.HumanRendering) and env.unwrapped.render_mode == "rgb_array"
        return
    with pytest.raises(ValueError, match="render_mode.*ansi.*rgb_array"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gym.make warns first, then the env refuses
        make("DynaLay-Digits-v0", render_mode=mode)


# ---- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", [4, -1, 100, np.int64(4), np.array(7)])
def test_out_of_range_action(action: Any) -> None:
    env = digits_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"out of range; valid actions are 0\.\.3 \(0 = EXIT"):
        env.step(action)
    _, _, terminated, _, info = env.step(0)  # the failed call changed nothing
    assert terminated and taken(info) == []


@pytest.mark.parametrize("action", [1.5, 1.0, "1", True, np.bool_(False), None, [1], np.float32(1.0),
                                    np.array([1.0]), np.array([1, 2])])
def test_wrong_action_type(action: Any) -> None:
    env = digits_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be an integer in \[0, 3\]"):
        env.step(action)


@pytest.mark.parametrize("action", [2, np.int64(2), np.int32(2), np.array(2), np.array([2])])
def test_integer_action_forms_accepted(action: Any) -> None:
    env = digits_env()
    env.reset(seed=0)
    _, _, _, _, info = env.step(action)
    assert taken(info) == [2]


def test_step_before_reset_and_after_termination() -> None:
    env = digits_env()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    env.step(0)
    with pytest.raises(RuntimeError, match="terminated; call reset"):
        env.step(1)
    env.reset()
    env.step(1)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"reward": "accuracy"}, ValueError, "unknown reward 'accuracy'; valid rewards: paper, blockdrop, logprob"),
    ({"observation_groups": ("hidden", "logits")}, ValueError,
     "unknown observation group 'logits'; valid: 'hidden', 'head', 'progress', 'last_action', 'solver'"),
    ({"dataset": "mnist2d"}, ValueError, r"unknown dataset 'mnist2d'.*valid datasets: .*digits"),
    ({"split": "training"}, ValueError, "unknown split 'training'; valid: .*'agent_train'"),
    ({"sample_mode": "cyclic"}, ValueError, "unknown sample_mode 'cyclic'; valid: 'random', 'sequential'"),
    ({"mode": "learn"}, ValueError, "unknown mode 'learn'; valid: 'frozen'"),
    ({"reward_kwargs": {"gamma": 0.5}}, ValueError, "ambiguous.*wrong_reward.*shaping_gamma"),
    ({"gamma": 0.5}, TypeError, r"got an unexpected keyword argument 'gamma'; valid options: .*shaping_gamma.*wrong_reward"),
    ({"lambda_compute": -1.0}, ValueError, "must be >= 0"),
    ({"max_steps": 0}, ValueError, "max_steps must be an integer >= 1"),
    ({"device": "mps"}, ValueError, "unsupported device 'mps'; valid: 'cpu', 'cuda'"),
    ({"device": "tpu"}, ValueError, "unsupported device 'tpu'; valid: 'cpu', 'cuda'"),  # not a torch device
])
def test_bad_options_raise_clear_errors(kwargs: dict[str, Any], error: type, match: str) -> None:
    env_id = "DynaLay-v0" if "dataset" in kwargs else "DynaLay-Digits-v0"
    with pytest.raises(error, match=match):
        gym.make(env_id, model=digits_model(), **kwargs)


def test_unknown_make_kwarg_lists_valid_options() -> None:
    with pytest.raises(TypeError, match="lamda_compute") as exc:
        make("DynaLay-Digits-v0", lamda_compute=0.2)
    message = str(exc.value)
    for option in (*ENV_OPTIONS, *REWARD_PARAM_NAMES):
        assert option in message


@pytest.mark.parametrize("build", ["make", "class", "make_vec"])
def test_unknown_option_uses_pythons_wording(build: str) -> None:
    """TorchRL passes ``frameskip`` to every env and drops it only when the TypeError reads
    ``unexpected keyword argument 'frameskip'``, Python's own wording for an unknown keyword."""
    with pytest.raises(TypeError) as exc:
        if build == "make":
            make("DynaLay-Digits-v0", frameskip=1)
        elif build == "class":
            digits_env(frameskip=1)
        else:
            gym.make_vec("DynaLay-Digits-v0", num_envs=2, model=digits_model(), frameskip=1)
    message = str(exc.value)
    assert "got an unexpected keyword argument 'frameskip'" in message
    assert "valid options: " in message and "lambda_compute" in message and "mask_repeats" in message
    # Python's own message, for comparison: the same phrase.
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'frameskip'"):
        (lambda *, a=0: a)(frameskip=1)  # type: ignore[call-arg]


def test_vector_option_on_the_single_env_says_where_it_belongs() -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'autoreset_mode'; 'autoreset_mode' is an "
                                        r"option of the vector env: gym\.make_vec\(id, num_envs=N, autoreset_mode"):
        make("DynaLay-Digits-v0", autoreset_mode="SameStep")


def documented_info_table() -> dict[str, tuple[str, str]]:
    """``{key: (dtype, shape)}`` parsed from the Info table of ``DynaLayEnv``'s docstring."""
    doc = DynaLayEnv.__doc__ or ""
    section = doc[doc.index("## Info"):doc.index("## Arguments")]
    rows = re.findall(r"^\s*\| ``(\w+)`` \| (\w+) \| ([^|]+) \|", section, flags=re.M)
    return {key: (dtype, shape.strip()) for key, dtype, shape in rows}


@pytest.mark.parametrize("max_steps", [1, 4, 6])
def test_info_has_fixed_keys_dtypes_and_shapes(max_steps: int) -> None:
    """Every info (reset, layer steps, EXIT, forced exit, masked action) has the documented keys,
    dtypes and shapes: ``path``/``fpi_iterations`` padded to ``max_steps``, the rest Python scalars."""
    table = documented_info_table()
    assert set(table) >= {"example", "label", "prediction", "correct", "step", "compute", "flops", "path",
                          "fpi_iterations", "action_mask", "masked_action", "repeated"}
    env = digits_env(max_steps=max_steps, mask_repeats=True)
    k1 = env.action_space.n
    sizes = {"()": (), "(max_steps,)": (max_steps,), "(K+1,)": (k1,)}
    infos = []
    for seed, actions in ((0, [0]), (1, [1, 1]), (2, [1, 2, 3, 1, 2, 3])):
        _, info = env.reset(seed=seed)
        infos.append(info)
        for a in actions:
            *_, terminated, _, info = env.step(a)
            infos.append(info)
            if terminated:
                break
    assert any(i["masked_action"] for i in infos) == (max_steps > 1)  # a repeat is masked once it can happen
    assert any(i["step"] == max_steps for i in infos)
    for info in infos:
        assert set(info) == set(table), set(info) ^ set(table)
        for key, (dtype, shape) in table.items():
            value = info[key]
            assert isinstance(value, np.ndarray) if shape != "()" else type(value) in (int, float, bool), key
            value = np.asarray(value)
            assert value.dtype == np.dtype(dtype), f"{key}: {value.dtype} != {dtype}"
            assert value.shape == sizes[shape], f"{key}: {value.shape} != {shape}"


def test_checkpoint_of_another_dataset_rejected(tmp_path: Path) -> None:
    ds = load_dataset("digits")
    path = tmp_path / "digits.pt"
    provenance = save_checkpoint(path, digits_model(), {"name": ds.name, "fingerprint": ds.fingerprint})
    with pytest.raises(CheckpointError, match="trained on dataset 'digits', but 'synthetic' was requested"):
        gym.make("DynaLay-Synthetic-v0", model=path)
    # The right dataset loads from the path (str or Path) and replays the object's episodes.
    by_path = gym.make("DynaLay-Digits-v0", model=str(path))
    by_object = make("DynaLay-Digits-v0")
    assert by_path.unwrapped.core.provenance == by_object.unwrapped.core.provenance == provenance
    o1, i1 = by_path.reset(seed=4)
    o2, i2 = by_object.reset(seed=4)
    np.testing.assert_allclose(o1, o2, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(by_path.step(2)[4]["fpi_iterations"], by_object.step(2)[4]["fpi_iterations"])
    assert by_path.unwrapped.provenance == provenance and "provenance" not in i1
    with pytest.raises(FileNotFoundError, match="no main-model checkpoint"):
        gym.make("DynaLay-Digits-v0", model=tmp_path / "missing.pt")


def test_uncalibrated_model_rejected() -> None:
    model = MainModel(default_config((64,), 10)).eval()
    with pytest.raises(ValueError, match="normaliser is not set"):
        gym.make("DynaLay-Digits-v0", model=model)


def test_bad_model_type_rejected() -> None:
    with pytest.raises(ValueError, match="model must be a checkpoint path, an FPIModel"):
        gym.make("DynaLay-Digits-v0", model=42)


def test_model_of_other_dataset_object_rejected() -> None:
    with pytest.raises(ValueError, match="model expects inputs"):
        gym.make("DynaLay-Synthetic-v0", model=digits_model())


# ---- registration and options -------------------------------------------------------------------------


def test_every_id_is_registered() -> None:
    for env_id, dataset in ENV_IDS.items():
        spec = gym.spec(env_id)
        expected = CUSTOM_ENTRY_POINTS.get(env_id, ("dynalay_env.env:DynaLayEnv",
                                                    "dynalay_env.vector_env:DynaLayVectorEnv"))
        assert (spec.entry_point, spec.vector_entry_point) == expected
        assert spec.kwargs == ({} if dataset is None else {"dataset": dataset})
        assert spec.max_episode_steps is None
    assert {"DynaLay-v0", "DynaLay-MNIST1D-v0", "DynaLay-Digits-v0", "DynaLay-Synthetic-v0"} <= set(ENV_IDS)


def test_make_with_module_prefix() -> None:
    env = gym.make("dynalay_env:DynaLay-Digits-v0", model=digits_model())
    assert isinstance(env.unwrapped, DynaLayEnv)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert dynalay_env.DynaLayEnv is DynaLayEnv


def test_make_kwargs_reach_the_env() -> None:
    default = make("DynaLay-Digits-v0")
    env = make("DynaLay-Digits-v0", lambda_compute=0.3, mask_repeats=True, max_steps=2, split="val",
               sample_mode="sequential", device="cpu", mode="frozen", compute_budget=50.0)
    core = env.unwrapped.core
    assert core.reward.name == "paper" and core.reward.params.lambda_compute == 0.3
    assert default.unwrapped.core.reward.params.lambda_compute == 0.1
    assert core.mask_repeats and core.max_steps == 2 and core.split == "val" and core.sample_mode == "sequential"
    assert core.device.type == "cpu" and core.mode == "frozen" and core.compute_budget == 50.0
    assert core.num_examples == load_dataset("digits").num_examples("val")
    # lambda_compute changes the reward by -(0.3 - 0.1) x the step's compute.
    same = make("DynaLay-Digits-v0", lambda_compute=0.3)
    default.reset(seed=3)
    same.reset(seed=3)
    _, r_default, _, _, info = default.step(2)
    _, r_same, _, _, info_same = same.step(2)
    step_compute = (info["flops"] - reset_flops(digits_model())) / digits_model().cost_table().normalizer
    assert r_same - r_default == pytest.approx(-0.2 * step_compute, abs=1e-6)
    # max_steps reached: forced exit.
    env.reset(seed=0)
    env.step(1)
    _, _, terminated, _, info = env.step(2)
    assert terminated and taken(info) == [1, 2]


def test_reward_options_by_name_and_kwargs() -> None:
    env = make("DynaLay-Digits-v0", reward="logprob", reward_kwargs={"mu_redundant": 0.2}, lambda_compute=0.4)
    params = env.unwrapped.core.reward.params
    assert env.unwrapped.core.reward.name == "logprob" and params.mu_redundant == 0.2 and params.lambda_compute == 0.4


def test_observation_groups_option() -> None:
    full = make("DynaLay-Digits-v0")
    env = make("DynaLay-Digits-v0", observation_groups=["progress", "head"])
    names = env.unwrapped.observation_names
    assert names == [f"prob_{c}" for c in range(10)] + ["top1_prob", "margin", "entropy", "step_fraction", "compute"]
    assert env.observation_space.shape == (15,) and full.observation_space.shape[0] > 15
    obs, _ = env.reset(seed=0)
    assert obs.shape == (15,) and obs.dtype == np.float32
    assert obs[:10].sum() == pytest.approx(1.0, abs=1e-5)
    assert set(env.unwrapped.observation_descriptions) <= set(full.unwrapped.observation_descriptions)


# ---- the cached default model (slow: trains a default model for real, through the real cache) --------

#: The digits recipe cut to a few epochs: what is tested is train-once-and-cache (the lock, the
#: atomic rename, the reuse), not the recipe's accuracy (test_pretrain covers that). The recipe is
#: part of the cache key, so this model never mixes with the real default's.
_SHORT_EPOCHS = 2
_SHORTEN_RECIPE = f"""
from dynalay_env import pretrain
pretrain.DATASET_RECIPES["digits"] = {{**pretrain.DATASET_RECIPES["digits"], "epochs": {_SHORT_EPOCHS}}}
"""

_CHILD = _SHORTEN_RECIPE + """
import torch
torch.set_num_threads(1)  # two processes on two cores; torch's default thread pools would fight
import gymnasium as gym, dynalay_env
env = gym.make("DynaLay-Digits-v0")
env.reset(seed=0)
env.step(1)
print("PROVENANCE", env.unwrapped.core.provenance)
"""


@pytest.mark.slow
def test_default_model_is_trained_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from dynalay_env import pretrain
    from dynalay_env.cache import default_model_path

    monkeypatch.setitem(pretrain.DATASET_RECIPES, "digits",
                        {**pretrain.DATASET_RECIPES["digits"], "epochs": _SHORT_EPOCHS})
    ds = load_dataset("digits")
    # In this process: the first make trains and caches, the second reuses the file.
    monkeypatch.setenv("DYNALAY_MODEL_CACHE", str(tmp_path / "cache_a"))
    path = default_model_path(ds)
    assert str(path).startswith(str(tmp_path))
    start = time.perf_counter()
    with caplog.at_level("WARNING", logger="dynalay_env.cache"):
        env = gym.make("DynaLay-Digits-v0")
    first_seconds = time.perf_counter() - start
    assert path.is_file() and (path.parent / "pretrain.json").is_file()
    assert json.loads((path.parent / "pretrain.json").read_text())["dataset"] == "digits"
    assert sum("pre-training one" in r.getMessage() for r in caplog.records) == 1
    mtime = path.stat().st_mtime_ns
    caplog.clear()
    start = time.perf_counter()
    with caplog.at_level("WARNING", logger="dynalay_env.cache"):
        again = gym.make("DynaLay-Digits-v0")
    second_seconds = time.perf_counter() - start
    assert not caplog.records and path.stat().st_mtime_ns == mtime
    assert env.unwrapped.core.provenance == again.unwrapped.core.provenance
    assert not list(path.parent.glob(".train-*"))  # no half-written leftovers
    print(f"default digits model: first make {first_seconds:.1f} s, cached make {second_seconds:.2f} s")

    # Two processes started at once: both succeed, one trains, the other waits and reuses it.
    child_env = {**os.environ, "DYNALAY_MODEL_CACHE": str(tmp_path / "cache_b"), "OMP_NUM_THREADS": "1",
                 "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD], cwd=REPO_ROOT, env=child_env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    both_seconds = time.perf_counter() - start
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    stderr = "".join(err for _, err in outputs)
    assert stderr.count("pre-training one") == 1, stderr
    provenances = {line for out, _ in outputs for line in out.splitlines() if line.startswith("PROVENANCE")}
    assert len(provenances) == 1
    monkeypatch.setenv("DYNALAY_MODEL_CACHE", str(tmp_path / "cache_b"))
    shared = default_model_path(ds)
    assert shared.is_file() and not list(shared.parent.glob(".train-*"))
    print(f"two processes at once: {both_seconds:.1f} s")


def test_default_model_cache_key_changes_with_the_recipe(monkeypatch):
    """A changed pre-training recipe (or layer code) must not be served the model of the old one."""
    import dataclasses

    from dynalay_env import pretrain
    from dynalay_env.cache import default_model_path

    ds = load_dataset("digits")
    before = default_model_path(ds)
    assert default_model_path(ds) == before  # deterministic
    original = pretrain.recipe_for
    monkeypatch.setattr(pretrain, "recipe_for", lambda name: dataclasses.replace(original(name), epochs=3))
    assert default_model_path(ds) != before
