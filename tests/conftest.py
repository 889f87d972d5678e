"""Shared fixtures of the DynaLay-Gym test suite.

* Every session runs with ``DYNALAY_CACHE_DIR`` pointing at a fresh temporary folder (autouse), so no
  test reads or writes the user's dataset cache. Tests that need their own folder can still
  monkeypatch the variable per test; it is restored afterwards.
* ``digits`` is the small embedded dataset (1797 examples, loads in milliseconds).
* ``tiny_digits_model`` is one main model pre-trained briefly on digits, shared by the session
  (about a second on 2 CPU cores). Treat it as read-only: copy it (``copy.deepcopy``) before
  changing weights.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dynalay_env import datasets as data

# Tiny tensors: one thread is faster than two fighting over two cores (and deterministic).
torch.set_num_threads(1)

#: Epoch budget of the session's quick pre-training (enough for clearly-above-chance accuracy).
TINY_PRETRAIN_EPOCHS = 8


@pytest.fixture(scope="session", autouse=True)
def _session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point DYNALAY_CACHE_DIR at a session temp folder; restore the previous value afterwards."""
    cache = tmp_path_factory.mktemp("dynalay_cache")
    old = os.environ.get(data.CACHE_DIR_ENV)
    os.environ[data.CACHE_DIR_ENV] = str(cache)
    data.clear_cache()
    try:
        yield cache
    finally:
        if old is None:
            os.environ.pop(data.CACHE_DIR_ENV, None)
        else:
            os.environ[data.CACHE_DIR_ENV] = old
        data.clear_cache()


@pytest.fixture(scope="session")
def digits(_session_cache_dir: Path) -> data.Dataset:
    """The embedded ``digits`` dataset (64 features, 10 classes)."""
    return data.load_dataset("digits", cache_dir=_session_cache_dir)


@pytest.fixture(scope="session")
def tiny_digits_model(digits: data.Dataset):
    """A main model pre-trained for a few epochs on digits (default config, seed 0). Read-only."""
    from dynalay_env.pretrain import PretrainConfig, pretrain

    model, history = pretrain(digits, config=PretrainConfig(epochs=TINY_PRETRAIN_EPOCHS, seed=0), progress=False)
    model.eval()
    return model


@pytest.fixture
def float64_default() -> Iterator[None]:
    """Run a test with torch's default dtype set to float64 (restored afterwards)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)
