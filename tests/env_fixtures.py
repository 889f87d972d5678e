"""Shared helpers of the environment tests (``test_env.py``, ``test_core.py``, ``test_rewards.py``).

Models are built once per process (``functools.cache``), not per module: a session-scoped fixture
imported into several modules would be rebuilt in each of them.

* :func:`digits_model`: a main model (mlp family) pre-trained 3 epochs on ``digits`` (~1 s).
* :func:`synthetic_model`: a main model (conv1d family) pre-trained 1 epoch on ``synthetic`` (~1 s).
* :func:`mnist1d_model`: an *untrained* small conv1d model for MNIST-1D whose compute normaliser is
  calibrated on part of ``val`` (a real MNIST-1D pre-training costs ~25 s per epoch on 2 cores).

Treat the models as read-only. Every test module imports :func:`no_default_model_training`
(autouse): outside tests marked ``slow`` it points ``DYNALAY_MODEL_CACHE`` at a temporary folder
and makes any attempt to pre-train the cached default model fail loudly, so no test can spend a
minute training in the user's cache by forgetting ``model=...``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from dynalay_env import cache as model_cache
from dynalay_env.data import Dataset, load_dataset
from dynalay_env.model import MainModel, default_config

DIGITS_EPOCHS = 3
SYNTHETIC_EPOCHS = 1


@functools.cache
def digits_model() -> MainModel:
    from dynalay_env.pretrain import PretrainConfig, pretrain

    model, _ = pretrain(load_dataset("digits"), config=PretrainConfig(epochs=DIGITS_EPOCHS, seed=0), progress=False)
    return model.eval()


@functools.cache
def synthetic_model() -> MainModel:
    from dynalay_env.pretrain import PretrainConfig, pretrain

    model, _ = pretrain(load_dataset("synthetic"), config=PretrainConfig(epochs=SYNTHETIC_EPOCHS, seed=0),
                        progress=False)
    return model.eval()


@functools.cache
def mnist1d_model() -> MainModel:
    import torch

    ds = load_dataset("mnist1d")
    torch.manual_seed(0)
    model = MainModel(default_config(ds.input_shape, ds.num_classes, channels=8)).eval()
    x_val, _ = ds.as_tensors("val")
    model.calibrate_normalizer(x_val[:256])
    return model


def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def no_default_model_training(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                              tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep tests away from the user's model cache, and from the default model's pre-training."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    monkeypatch.setenv(model_cache.MODEL_CACHE_ENV, str(tmp_path_factory.mktemp("model_cache")))

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("this test would pre-train the default model: pass model=... to the env")

    monkeypatch.setattr(model_cache, "cached_default_model", refuse)
    yield


def obs_value(env: Any, obs: np.ndarray, name: str) -> float:
    """The observation feature called ``name`` (see ``env.unwrapped.observation_names``)."""
    return float(obs[env.unwrapped.observation_names.index(name)])


def step_flops(model: MainModel, action: int, iterations: int) -> float:
    """FLOPs of one step recomputed from the cost table: 0 for EXIT; for action k >= 1,
    injection[k-1] + iterations x iteration[k-1] + the head at the new state."""
    if action == 0:
        return 0.0
    costs = model.cost_table()
    return float(costs.injection[action - 1] + iterations * costs.iteration[action - 1] + costs.head)


def reset_flops(model: MainModel) -> float:
    costs = model.cost_table()
    return float(costs.encoder + costs.head)


def run_episode(env: Any, actions: Sequence[int], **reset_kwargs: Any) -> list[tuple[Any, ...]]:
    """Reset, then step ``actions`` until the episode ends; returns ``[(obs, info)] + [(obs, r, term,
    trunc, info), ...]`` (the reset entry first)."""
    out: list[tuple[Any, ...]] = [env.reset(**reset_kwargs)]
    for a in actions:
        step = env.step(a)
        out.append(step)
        if step[2] or step[3]:
            break
    return out
