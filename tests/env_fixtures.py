"""Shared helpers of the environment tests (``test_env.py``, ``test_core.py``, ``test_rewards.py``).

Models are built once per process (``functools.cache``), not per module: a session-scoped fixture
imported into several modules would be rebuilt in each of them.

* :func:`digits_model`: a main model (mlp family) pre-trained 3 epochs on ``digits`` (~1 s).
* :func:`synthetic_model`: a main model (conv1d family) pre-trained 1 epoch on ``synthetic`` (~1 s).
* :func:`learning_synthetic_model`: a main model pre-trained 8 epochs on ``synthetic`` (~10 s), on which
  depth pays; the learning checks (``tests/learning.py``) share it.
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
from dynalay_env.datasets import Dataset, load_dataset
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
def learning_synthetic_model() -> MainModel:
    """8 epochs on synthetic: on val the head is right 38% of the time on the encoder state and 52%
    after layers 1-3, so an agent can learn where depth pays."""
    from dynalay_env.pretrain import PretrainConfig, pretrain

    model, _ = pretrain(load_dataset("synthetic"), config=PretrainConfig(epochs=8, seed=0), progress=False)
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


def check_charged_equals_executed(core: Any, steps: int, seed: int = 0, exit_prob: float = 0.3) -> int:
    """Drive ``core`` with random mixed actions (partial resets of the finished slots in between) and
    assert that each reset and each step charges, summed over slots, exactly the FLOPs that
    ``FlopCounterMode`` saw run. The expected value comes from the counter, never from what the core
    reports. A co-training update is measured by a nested counter and left out (episodes do not pay
    for it), and so are padding rows (:mod:`dynalay_env.buckets`, tallied apart). Returns the FLOPs
    counted in all."""
    from torch.utils.flop_counter import FlopCounterMode

    from dynalay_env import buckets

    def padded() -> int:  # the padding rows' FLOPs since the last call
        flops = buckets.padding_stats().padded_flops
        buckets.reset_padding_stats()
        return flops

    update_flops = [0]
    trainer = getattr(core, "cotrainer", None)
    if trainer is not None:
        original = trainer.update

        def counted_update(*args: Any, **kwargs: Any) -> Any:
            padded_before = buckets.padding_stats().padded_flops
            with FlopCounterMode(display=False) as inner:
                out = original(*args, **kwargs)
            # The update's padding rows are in padded() below: leave them out here.
            update_flops[0] += inner.get_total_flops() - (buckets.padding_stats().padded_flops - padded_before)
            return out

        trainer.update = counted_update
    rng = np.random.default_rng(seed)
    core.seed([seed + i for i in range(core.num_envs)])
    total = 0
    padded()
    with FlopCounterMode(display=False) as counter:
        core.reset()
    charged = core.info_arrays()["flops"].sum()
    assert counter.get_total_flops() - padded() == charged > 0
    total += charged
    for _ in range(steps):
        before = core.info_arrays()["flops"]
        actions = np.where(rng.random(core.num_envs) < exit_prob, 0, rng.integers(1, core.num_actions, core.num_envs))
        update_flops[0] = 0
        with FlopCounterMode(display=False) as counter:
            out = core.step(actions)
        ran = counter.get_total_flops() - update_flops[0] - padded()
        assert ran == (out.info["flops"] - before).sum(), (actions, ran)
        total += ran
        done = np.flatnonzero(out.terminated.cpu().numpy())
        if done.size:
            with FlopCounterMode(display=False) as counter:
                core.reset(done)
            charged = core.info_arrays()["flops"][done].sum()
            assert counter.get_total_flops() - padded() == charged > 0
            total += charged
    return total


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
