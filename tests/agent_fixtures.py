"""Shared helpers of the agent-side tests (``test_baselines``, ``test_evaluate``, ``test_training``,
``test_inference``, ``test_cli``).

The main model is :func:`tests.vec_fixtures.tiny_model` ("digits": mlp, 3 epochs), built once per
process. What costs more than a few milliseconds is built once per process too (``functools.cache``,
not a session fixture, which would be rebuilt in every module that imports it), in a scratch folder
removed at exit:

* :func:`digits_checkpoint`: that model saved with ``dynalay_env.model.save_checkpoint``;
* :func:`trained_ppo_run`: a finished tiny PPO run folder (512 timesteps, 8 envs, checkpoints every
  128 steps, validation every 256). Treat it as read-only: ``copy_run`` it before editing it, and
  train a :func:`fresh_run` (about a second) to resume one.

Never trains the default model: every env gets ``model=`` (a model object or the checkpoint path).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynalay_env.core import DynaLayCore
from dynalay_env.env import make_core
from tests.vec_fixtures import tiny_model

REPO = Path(__file__).resolve().parent.parent
#: ``python train_agent.py``: the CLI as a user runs it.
CLI = [sys.executable, str(REPO / "train_agent.py")]
ENV_ID = "DynaLay-Digits-v0"
N_ENVS = 8
#: Tiny PPO: one rollout = n_steps x n_envs = 128 env steps; two epochs of two minibatches.
TINY_PPO: dict[str, Any] = {"n_steps": 16, "batch_size": 64, "n_epochs": 2, "policy_kwargs": "dict(net_arch=[32, 32])"}
ROLLOUT = TINY_PPO["n_steps"] * N_ENVS
#: Tiny DQN: learning starts at once, one gradient step per vector step.
TINY_DQN: dict[str, Any] = {"learning_starts": 64, "buffer_size": 10_000, "batch_size": 32, "train_freq": 1,
                            "gradient_steps": 1, "policy_kwargs": "dict(net_arch=[32, 32])"}
#: The cached run: 512 timesteps, checkpoints every 128 (the newest 2 kept), validation every 256.
RUN_TIMESTEPS = 512
RUN_CHECKPOINT_FREQ = 128
RUN_EVAL_FREQ = 256


@functools.cache
def scratch() -> Path:
    """A per-process scratch folder, removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="dynalay_agent_tests_"))
    atexit.register(shutil.rmtree, path, True)
    return path


def digits_model():
    """The tiny digits main model (read-only)."""
    return tiny_model("digits")[0]


def digits_dataset():
    return tiny_model("digits")[1]


@functools.cache
def digits_checkpoint() -> Path:
    """The tiny digits model as a checkpoint file (what ``--model`` / ``TrainConfig.model`` take)."""
    from dynalay_env.model import save_checkpoint

    model, dataset = tiny_model("digits")
    path = scratch() / "digits_tiny.pt"
    save_checkpoint(path, model, {"name": dataset.name, "fingerprint": dataset.fingerprint})
    return path


def seq_core(num_envs: int, split: str = "val", **options: Any) -> DynaLayCore:
    """A sequential core over a whole digits split (val: 359 examples, test: 359)."""
    model, dataset = tiny_model("digits")
    return make_core(num_envs, dataset=dataset, model=model, split=split, sample_mode="sequential", **options)


def subset_core(num_envs: int, n: int, split: str = "val", **options: Any) -> DynaLayCore:
    """A sequential core over the first ``n`` examples of a digits split (``examples=`` mode)."""
    model, dataset = tiny_model("digits")
    x, y = dataset.as_tensors(split)
    return DynaLayCore(model, None, num_envs, sample_mode="sequential", examples=(x[:n], y[:n]), **options)


@torch.no_grad()
def encoder_stats(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 probability, normalised entropy) of the head on the encoder state, per example."""
    model = digits_model()
    probs = torch.softmax(model.classify(model.encode(x)), 1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1) / np.log(probs.shape[1])
    return probs.amax(1).numpy(), entropy.numpy()


def train_config(run_dir: Path | str, algo: str = "ppo", timesteps: int = RUN_TIMESTEPS, **overrides: Any):
    """A tiny ``TrainConfig`` on digits with the checkpointed tiny model."""
    from agents.training import TrainConfig

    hyperparams = dict(TINY_DQN if algo == "dqn" else TINY_PPO)
    hyperparams.update(overrides.pop("hyperparams", {}))
    options: dict[str, Any] = dict(algo=algo, env_id=ENV_ID, model=str(digits_checkpoint()), timesteps=timesteps,
                                   n_envs=N_ENVS, run_dir=str(run_dir), checkpoint_freq=RUN_CHECKPOINT_FREQ,
                                   eval_freq=RUN_EVAL_FREQ, hyperparams=hyperparams, progress_bar=False)
    options.update(overrides)
    return TrainConfig(**options)


@functools.cache
def trained_ppo_run() -> Path:
    """A finished tiny PPO run folder (read-only; :func:`copy_run` it before changing it)."""
    from agents.training import train

    run_dir = scratch() / "ppo_run"
    train(train_config(run_dir))
    return run_dir


def copy_run(destination: Path) -> Path:
    """A private copy of :func:`trained_ppo_run` at ``destination``, for tests that read or edit a run
    but do not resume it (a resumed copy would log TensorBoard into the original: see test_training)."""
    shutil.copytree(trained_ppo_run(), destination)
    return destination


def fresh_run(run_dir: Path, **overrides: Any) -> Path:
    """A new tiny PPO run trained into ``run_dir`` (same settings as :func:`trained_ppo_run`), for tests
    that resume it."""
    from agents.training import train

    train(train_config(run_dir, **overrides))
    return run_dir


def hidden_files(folder: Path) -> list[Path]:
    """Every file or folder under ``folder`` whose name starts with '.' (the temporaries of atomic writes)."""
    return sorted(p for p in Path(folder).rglob(".*"))


def write_hyperparams(path: Path, entry: dict[str, Any], env_id: str = ENV_ID) -> Path:
    """An rl-zoo3 style hyperparameter file with one entry."""
    import yaml

    path.write_text(yaml.safe_dump({env_id: entry}))
    return path


def scalar_tags(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of every TensorBoard event file under ``run_dir/tb``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for folder in sorted({p.parent for p in (run_dir / "tb").rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(folder))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment of a CLI subprocess: one torch thread and a private default-model cache."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "DYNALAY_MODEL_CACHE": str(tmp_path / "model_cache")}


def sigkill_when(argv: list[str], env: dict[str, str], log_path: Path, ready: Callable[[], bool],
                 timeout: float = 180.0) -> None:
    """Run ``argv`` (from the repository root) until ``ready()`` holds, then SIGKILL it: a crash at a
    moment of the test's choosing. Fails, with the process's output, if it ends first or ``ready``
    never holds within ``timeout`` seconds."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while proc.poll() is None and not ready() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, f"the process ended before it was killed:\n{log_path.read_text()}"
            assert ready(), f"not ready within {timeout} s:\n{log_path.read_text()}"
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
