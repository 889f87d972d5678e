"""A Stable-Baselines3 ``VecEnv`` over the batched DynaLay core (no loop of single envs).

SB3's conventions: ``reset()`` returns observations only; ``step_wait()`` returns
``(obs, rewards, dones, infos)`` with a list of per-env info dicts, and a finished env is reset in
the same step, its last observation in ``infos[i]["terminal_observation"]``. ``seed(s)`` seeds env
``i`` with ``s + i`` at the next reset, as SB3 does, so its episodes are those of a
``DummyVecEnv`` of single ``DynaLayEnv`` seeded the same way.

``env_method("action_masks")`` returns one mask per env, so sb3-contrib's ``MaskablePPO`` and
``evaluate_policy`` run on it unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from dynalay_env.core import DynaLayCore
from dynalay_env.datasets import DEFAULT_DATASET, Dataset
from dynalay_env.env import make_core, observation_space_of
from dynalay_env.model import FPIModel

# Keys copied from the core's info arrays into a finished env's info dict.
_EPISODE_KEYS = ("example", "label", "prediction", "correct", "step", "compute", "flops", "masked_action", "repeated",
                 "noisy_label", "severity")


class DynaLayVecEnv(VecEnv):
    """``num_envs`` DynaLay episodes stepped as one batch, for SB3 algorithms.

    Args:
        num_envs: number of parallel episodes (SB3's ``n_envs``).
        dataset: as for :class:`dynalay_env.env.DynaLayEnv`.
        model: as for :class:`dynalay_env.env.DynaLayEnv`.
        **options: every other option of :class:`dynalay_env.env.DynaLayEnv`.
        core: an existing :class:`DynaLayCore` instead of building one.

    Per-step infos: a running env's dict holds ``step`` and ``compute``; a finished env's holds
    the episode's ``label, prediction, correct, step, compute, flops, path, fpi_iterations,
    example, masked_action, repeated, noisy_label, severity`` as the single env gives them (``path`` and
    ``fpi_iterations`` padded to ``max_steps``: -1 and 0 past ``step``),
    ``terminal_observation`` and ``TimeLimit.truncated`` (always False). The model's id is
    ``get_attr("provenance")``.
    """

    def __init__(self, num_envs: int = 1, dataset: str | Dataset = DEFAULT_DATASET,
                 model: FPIModel | str | os.PathLike | None = None, *, core: DynaLayCore | None = None,
                 **options: Any) -> None:
        if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        self.core = core if core is not None else make_core(int(num_envs), dataset=dataset, model=model, **options)
        if self.core.num_envs != num_envs:
            raise ValueError(f"core has {self.core.num_envs} slots but num_envs={num_envs}")

        self.render_mode = None
        super().__init__(int(num_envs), observation_space_of(self.core), spaces.Discrete(self.core.num_actions))
        self._actions: np.ndarray | None = None
        self._seeded = False

    # ---- SB3 VecEnv API --------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        """Start a new episode in every slot; returns the observations ``[num_envs, D]``."""
        if any(s is not None for s in self._seeds) or not self._seeded:
            self.core.seed(self._seeds)
            self._seeded = True
        pinned = [opts.get("example") for opts in self._options]
        self._reset_seeds()
        self._reset_options()
        if any(p is not None for p in pinned):
            if any(p is None for p in pinned):
                raise ValueError("set_options({'example': i}) must pin the example of every env or of none")
            obs = self.core.reset(examples=np.asarray(pinned, dtype=np.int64)).cpu().numpy()
        else:
            obs = self.core.reset().cpu().numpy()
        info = self.core.info_arrays()
        self.reset_infos = [{"example": int(e), "label": int(y), "compute": float(c)}
                            for e, y, c in zip(info["example"], info["label"], info["compute"], strict=True)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Store the actions ``[num_envs]`` for :meth:`step_wait`."""
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        """Step every slot; ended episodes reset at once (SB3's convention, with ``terminal_observation``).

        Returns ``(obs [num_envs, D], rewards [num_envs], dones [num_envs], infos)``.
        """
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions)")
        out = self.core.step(self._actions.reshape(-1) if self._actions.size == self.num_envs else self._actions)
        self._actions = None
        obs = out.obs.cpu().numpy()
        rewards = out.reward.cpu().numpy()
        dones = out.terminated.cpu().numpy()
        info = out.info
        infos: list[dict[str, Any]] = [{"step": s, "compute": c}
                                       for s, c in zip(info["step"].tolist(), info["compute"].tolist(), strict=True)]
        finished = np.flatnonzero(dones)
        if finished.size:
            # Whole columns to Python lists at once, not one .item() per finished env and key.
            columns = {key: info[key][finished].tolist() for key in _EPISODE_KEYS}
            paths = info["path"][finished]  # fresh arrays: rows are handed out as they are
            iterations = info["fpi_iterations"][finished]
            for j, i in enumerate(finished.tolist()):
                d = infos[i]
                for key in _EPISODE_KEYS:
                    d[key] = columns[key][j]
                d["path"] = paths[j]
                d["fpi_iterations"] = iterations[j]
                d["terminal_observation"] = obs[i].copy()
                d["TimeLimit.truncated"] = False
            # Same-step autoreset: the returned observation is the new episode's first one.
            obs[finished] = self.core.reset(finished).cpu().numpy()
        return obs, rewards, dones, infos

    def close(self) -> None:
        """Nothing to release: the core lives in this process."""
        pass

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The attribute ``attr_name`` of the core (or this adapter) for each slot in ``indices``."""
        idx = self._indices(indices)
        if attr_name == "render_mode":
            return [None for _ in idx]
        source = self.core if hasattr(self.core, attr_name) else self
        return [getattr(source, attr_name) for _ in idx]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set a live option for all envs (see ``DynaLayCore.set_option``)."""
        if indices is not None and len(self._indices(indices)) != self.num_envs:
            raise ValueError("DynaLayVecEnv envs share one core: set attributes for all envs at once (indices=None)")
        self.core.set_option(attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call ``method_name`` of the core for each slot in ``indices`` (``action_masks`` and ``render``
        are answered per slot).
        """
        idx = self._indices(indices)
        if method_name == "action_masks":
            masks = self.core.action_masks()
            return [masks[i] for i in idx]
        if method_name == "render":
            return [self.core.trace(i) for i in idx]
        method = getattr(self.core, method_name)
        result = method(*method_args, **method_kwargs)
        return [result for _ in idx]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """Always False: the slots are not Gymnasium envs, so no wrapper applies."""
        return [False for _ in self._indices(indices)]

    def action_masks(self) -> np.ndarray:
        """``[num_envs, K+1]`` bool masks in one call."""
        return self.core.action_masks()

    def get_images(self) -> Sequence[np.ndarray | None]:
        """No images (``render_mode`` is None); one None per slot."""
        return [None for _ in range(self.num_envs)]
