"""Endurance: stepping the vector env holds no Python objects or tensors beyond what it started with.

Memory figures over millions of steps (RSS) are in ``benchmarks/memory_soak.py``; this test checks the
part a test can check quickly and exactly: after warm-up, a few thousand env steps leave the Python
heap traced by ``tracemalloc`` and the number of live tensors unchanged. It fails on a core that keeps
something per step (shown with a deliberately leaking core).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
import torch

from dynalay_env.core import DynaLayCore
from dynalay_env.vector_env import DynaLayVectorEnv
from tests.env_fixtures import digits, digits_model, no_default_model_training  # noqa: F401  (autouse)

N_ENVS, WARMUP, STEPS = 64, 15, 50  # 3,200 env steps measured
#: Python heap growth tolerated over the measured steps: interpreter caches, not per-step data
#: (a leak of one small array per step already exceeds it).
TRACED_SLACK_BYTES = 32 * 1024


def live_tensors() -> int:
    # type(), not isinstance(): isinstance reads __class__, which some lazy module objects warn on.
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


def growth(step: Callable[[np.ndarray], object], num_actions: int) -> tuple[int, int]:
    """(traced Python bytes, live tensors) gained over ``STEPS`` random steps after ``WARMUP``."""
    rng = np.random.default_rng(0)
    for _ in range(WARMUP):
        step(rng.integers(0, num_actions, N_ENVS))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0], live_tensors()
        for _ in range(STEPS):
            step(rng.integers(0, num_actions, N_ENVS))
        gc.collect()
        after = tracemalloc.get_traced_memory()[0], live_tensors()
    finally:
        tracemalloc.stop()
    return after[0] - before[0], after[1] - before[1]


def vector_env() -> DynaLayVectorEnv:
    env = DynaLayVectorEnv(N_ENVS, dataset=digits(), model=digits_model(), mask_repeats=True)
    env.reset(seed=0)
    return env


def test_vector_env_steps_hold_no_memory() -> None:
    env = vector_env()
    traced, tensors = growth(env.step, env.single_action_space.n)
    assert tensors == 0, f"{tensors} more live tensors after {STEPS * N_ENVS} env steps"
    assert traced < TRACED_SLACK_BYTES, f"the Python heap grew by {traced} bytes over {STEPS * N_ENVS} env steps"


def test_the_check_fails_on_a_leaking_core(monkeypatch: pytest.MonkeyPatch) -> None:
    kept: list[object] = []
    original = DynaLayCore.step

    def leaking_step(self: DynaLayCore, *args: object, **kwargs: object) -> object:
        out = original(self, *args, **kwargs)
        kept.append(out)  # the step's tensors, and the info arrays the vector env reads from it
        return out

    monkeypatch.setattr(DynaLayCore, "step", leaking_step)
    env = vector_env()
    traced, tensors = growth(env.step, env.single_action_space.n)
    assert len(kept) == WARMUP + STEPS
    assert traced >= TRACED_SLACK_BYTES
    assert tensors >= STEPS


def test_soak_summary_gives_plain_and_held_rss_growth() -> None:
    """The soak's summary reports the growth of plain RSS and of the held RSS (after ``malloc_trim``),
    each from the first rollout to its maximum and to the end."""
    from benchmarks.memory_soak import held_rss_mb, summarise

    rows = [{"env_steps": 16, "rss_mb": 100.0, "held_rss_mb": 90.0},
            {"env_steps": 32, "rss_mb": 104.0, "held_rss_mb": 90.9},
            {"env_steps": 48, "rss_mb": 101.0, "held_rss_mb": 90.45}]
    text = summarise("ppo", rows)
    assert "RSS after the first rollout 100.0 MB; max after it 104.0 MB (+4.00%); at 48 timesteps 101.0 MB (+1.00%)" in text
    assert ("held RSS after the first rollout 90.0 MB; max after it 90.9 MB (+1.00%); at 48 timesteps 90.5 MB "
            "(+0.50%)") in text
    assert "RSS 104.0 MB at 32 env steps -> 101.0 MB at 48: -2.88%" in summarise("vector", rows)
    assert held_rss_mb() > 0
