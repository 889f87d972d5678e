"""Episodes of any policy, or of a mix of policies, as a Minari dataset: offline RL on DynaLay.

Each policy plays ``episodes`` episodes of the single env through Minari's ``DataCollector``, one
policy after the other, in one dataset. Every step keeps its observation, action, reward,
termination and the env's whole ``info`` (fixed keys, dtypes and shapes: ``compute``, ``flops``,
``correct``, ``prediction``, ``label``, ``path``, ...), so ``minari.load_dataset(id)`` and any
offline-RL library that reads Minari (TorchRL's ``MinariExperienceReplay``, d3rlpy) can use it.

Policies are named by :data:`POLICY_FORMS`: the path oracle, a random policy, a threshold rule, a
fixed path, or a trained run folder (``train_agent.py train`` of any algorithm, ``bc`` included).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from agents import baselines
from agents.training import load_run

#: The policy names :func:`make_policy` accepts (``--policy`` of ``train_agent.py export``).
POLICY_FORMS: tuple[str, ...] = ("oracle", "random:P_EXIT", "confidence:T", "entropy:T", "margin:T",
                                 "fixed:1,2,3", "run:RUN_DIR")


def make_policy(spec: str, core: Any, seed: int = 0) -> Any:
    """The policy ``spec`` names (one of :data:`POLICY_FORMS`), ready to play on ``core``'s split.

    ``oracle`` follows each example's cheapest correct path (searched on ``core``'s split, with
    repeats only where the env allows them); ``random:P`` exits with probability ``P`` and else
    applies a uniform layer; ``confidence:T`` / ``entropy:T`` / ``margin:T`` apply layers in order
    until the head's statistic passes ``T``; ``fixed:1,2`` applies that path; ``run:DIR`` is the
    trained agent of a run folder.
    """
    name, _, arg = spec.partition(":")
    try:
        if name == "oracle" and not arg:
            search = baselines.oracle_search(core.model, core.x, core.y, core.max_steps, costs=core.costs,
                                             allow_repeats=not core.mask_repeats)
            return baselines.OraclePolicy(search).bind(core)
        if name == "random" and arg:
            return baselines.RandomPolicy(float(arg), seed).bind(core)
        thresholds = {"confidence": baselines.ConfidencePolicy, "entropy": baselines.EntropyPolicy,
                      "margin": baselines.MarginPolicy}
        if name in thresholds and arg:
            return thresholds[name](float(arg)).bind(core)
        if name == "fixed" and arg:
            return baselines.FixedPathPolicy([int(a) for a in arg.split(",")]).bind(core)
    except ValueError as exc:
        raise ValueError(f"bad policy {spec!r}: {exc}; valid forms: {', '.join(POLICY_FORMS)}") from exc
    if name == "run" and arg:
        return load_run(arg)[1]
    raise ValueError(f"unknown policy {spec!r}; valid forms: {', '.join(POLICY_FORMS)}")


@contextlib.contextmanager
def datasets_path(path: str | os.PathLike | None) -> Iterator[None]:
    """Minari's dataset folder (``MINARI_DATASETS_PATH``) set to ``path`` for the block (None: unchanged)."""
    if path is None:
        yield
        return
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(path).resolve())
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def export_dataset(dataset_id: str, policies: Sequence[str], episodes: int, env_id: str, *,
                   model: str | os.PathLike | None = None, split: str = "agent_train", seed: int = 0,
                   out: str | os.PathLike | None = None, **env_options: Any) -> Any:
    """Record ``episodes`` episodes of each policy in ``policies`` (:data:`POLICY_FORMS`) on
    ``env_id`` (``split``, ``env_options``) and write them as the Minari dataset ``dataset_id``
    under ``out`` (default: Minari's own folder). Returns the ``minari.MinariDataset``.

    Episodes come in blocks, one per policy, in the order given: episode ``j * episodes + e`` is
    episode ``e`` of ``policies[j]`` (the dataset's description says so too). The env is reset with
    ``seed`` once, so the same arguments record the same dataset.
    """
    import minari  # optional dependency: Minari (the peers extra)

    if not policies:
        raise ValueError(f"name at least one policy; valid forms: {', '.join(POLICY_FORMS)}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1 per policy, got {episodes}")
    # A checkpoint path, not an object, so that the dataset's env spec can rebuild the env.
    options = {**env_options, "split": split, **({"model": str(model)} if model is not None else {})}
    with datasets_path(out):
        if dataset_id in minari.list_local_datasets():
            raise ValueError(f"Minari dataset {dataset_id!r} exists already under {minari_root()}; "
                             "pick another id or delete it (minari.delete_dataset)")
        collector = minari.DataCollector(gym.make(env_id, **options), record_infos=True)
        core = collector.unwrapped.core
        collector.reset(seed=seed)  # seeds the example stream once; every episode below starts afresh
        blocks = []
        for j, spec in enumerate(policies):
            policy = make_policy(spec, core, seed=seed + j)
            for _ in range(episodes):
                play_episode(collector, policy)
            blocks.append(f"episodes {j * episodes}-{(j + 1) * episodes - 1}: {spec}")
        description = (f"DynaLay episodes on {env_id} (split {split!r}, options {env_options or {}}), "
                       f"{episodes} per policy; " + "; ".join(blocks) + ". Info per step: "
                       + ", ".join(core.info_arrays()) + ".")
        return collector.create_dataset(dataset_id=dataset_id, algorithm_name=" + ".join(policies),
                                        author="DynaLay-Gym (train_agent.py export)", description=description)


def play_episode(env: Any, policy: Any) -> int:
    """One episode of ``policy`` (an :class:`agents.interface.Agent` or a bound baseline) on the
    single env ``env``; returns its number of steps."""
    obs, info = env.reset()
    state, start = None, np.ones(1, dtype=bool)
    steps, done = 0, False
    while not done:
        action, state = policy.predict(np.asarray(obs)[None], state=state, episode_start=start,
                                       action_masks=np.asarray(info["action_mask"])[None], deterministic=True)
        obs, _, terminated, truncated, info = env.step(int(np.asarray(action).reshape(-1)[0]))
        start = np.zeros(1, dtype=bool)
        steps += 1
        done = terminated or truncated
    return steps


def minari_root() -> Path:
    """Where Minari keeps local datasets now (``MINARI_DATASETS_PATH`` or its default)."""
    from minari.storage.datasets_root_dir import get_dataset_path  # optional dependency: Minari (the peers extra)

    return Path(get_dataset_path())


__all__ = ["POLICY_FORMS", "datasets_path", "export_dataset", "make_policy", "minari_root", "play_episode"]
