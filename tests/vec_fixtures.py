"""Shared helpers of ``test_vector_env.py`` and ``test_sb3_vec_env.py``.

The tiny main models are built once per session (cached here) so that both modules share them; each
module still reaches them through its own module-scoped fixture. They are used in eval mode and never
trained further: treat them as read-only.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from dynalay_env.datasets import Dataset, load_dataset
from dynalay_env.model import MainModel

#: Atol of float comparisons between batched and single-env trajectories (float32 math in batches of
#: different sizes may differ by rounding only).
ATOL = 1e-5

#: Info keys compared between a vector slot and the matching single env.
COMPARED_INFO_KEYS = ("example", "label", "prediction", "correct", "step", "compute", "path")


@functools.cache
def tiny_model(dataset_name: str) -> tuple[MainModel, Dataset]:
    """A briefly pre-trained main model (digits: mlp, 3 epochs; synthetic: conv1d, 1 epoch) and its
    dataset. Never triggers the default-model pre-training."""
    from dynalay_env.pretrain import PretrainConfig, pretrain

    dataset = load_dataset(dataset_name)
    epochs = 3 if dataset_name == "digits" else 1
    model, _ = pretrain(dataset, config=PretrainConfig(epochs=epochs, seed=0), progress=False)
    model.eval()
    return model, dataset


def random_actions(rng: np.random.Generator, num_envs: int, num_actions: int, exit_prob: float = 0.3) -> np.ndarray:
    """One int64 action per slot: EXIT with probability ``exit_prob``, else a uniform layer."""
    layers = rng.integers(1, num_actions, size=num_envs)
    return np.where(rng.random(num_envs) < exit_prob, 0, layers).astype(np.int64)


def info_at(info: dict[str, Any], i: int, key: str) -> Any:
    """Slot ``i``'s value of a vector env's info key, in the single env's form (a Python scalar or a
    fixed-size array)."""
    value = info[key][i]
    return value.item() if isinstance(value, np.generic) else value


def assert_info_matches(vec_value: Any, single_value: Any, key: str, where: str) -> None:
    if isinstance(vec_value, np.ndarray) or isinstance(single_value, np.ndarray):
        np.testing.assert_array_equal(vec_value, single_value, err_msg=f"{where}: {key}")
    elif key == "compute":
        assert np.isclose(vec_value, single_value, atol=ATOL), f"{where}: {key} {vec_value} != {single_value}"
    else:
        assert vec_value == single_value, f"{where}: {key} {vec_value!r} != {single_value!r}"


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run with one intra-op torch thread (restored afterwards). The batches here are tiny: on a shared
    2-core machine extra threads only spin and make each step many times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# Fixtures of the vector-env test modules (import them by name into a module to use them there).


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def digits_model() -> tuple[MainModel, Dataset]:
    return tiny_model("digits")


@pytest.fixture(scope="module", params=["digits", "synthetic"])
def any_model(request: pytest.FixtureRequest) -> tuple[MainModel, Dataset]:
    """(model, dataset): the mlp model on digits and the conv1d model on synthetic."""
    return tiny_model(request.param)
