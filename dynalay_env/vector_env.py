"""``DynaLayVectorEnv``: N DynaLay episodes stepped as one batch, a Gymnasium ``VectorEnv``.

It is a thin face over :class:`~dynalay_env.core.DynaLayCore`: every step makes one batched FPI
solve per chosen layer and one head call, for all N episodes at once. It is what
``gym.make_vec("DynaLay-MNIST1D-v0", num_envs=256)`` returns (the registered
``vector_entry_point``).

Autoreset follows Gymnasium's default, ``AutoresetMode.NEXT_STEP``: the step after an episode ends
resets that slot (its action is ignored) and returns the first observation of the new episode with
reward 0 and ``terminated=False``. Slot ``i`` of ``reset(seed=s)`` is seeded ``s + i``, so its
episodes are those of a single ``DynaLayEnv`` reset with ``seed=s + i``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dynalay_env.core import DynaLayCore
from dynalay_env.data import DEFAULT_DATASET, Dataset
from dynalay_env.env import make_core, observation_space_of
from dynalay_env.model import FPIModel
from dynalay_env.render import FrameRenderer


def slot_seeds(seed: int | Sequence[int | None] | None, num_envs: int) -> list[int | None]:
    """Per-slot seeds from Gymnasium's convention: an int ``s`` gives ``s, s+1, ..., s+N-1``."""
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(num_envs)]
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ValueError(f"got {len(seeds)} seeds for {num_envs} environments; pass one int or {num_envs} seeds")
    return seeds


class DynaLayVectorEnv(VectorEnv):
    """A natively batched vector of :class:`~dynalay_env.env.DynaLayEnv` (same MDP, same options).

    Args:
        num_envs: N >= 1 episode slots.
        dataset: as for ``DynaLayEnv``.
        model: as for ``DynaLayEnv``.
        return_tensors: return observations, rewards and terminations as torch tensors on the
            core's device (for torch-native agents: nothing crosses to the host). Info stays numpy.
        **options: every other ``DynaLayEnv`` option (reward, masks, split, device, ...).

    Info is a dict of arrays with leading dim N and a boolean ``_key`` mask per key (all True: every
    slot reports every key each step). ``info["autoreset"]`` marks the slots that were reset by this
    step.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, num_envs: int = 1, dataset: str | Dataset = DEFAULT_DATASET,
                 model: FPIModel | str | os.PathLike | None = None, *, render_mode: str | None = None,
                 return_tensors: bool = False, core: DynaLayCore | None = None, **options: Any) -> None:
        if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; valid: {self.metadata['render_modes']} or None")
        self.core = core if core is not None else make_core(int(num_envs), dataset=dataset, model=model, **options)
        if self.core.num_envs != num_envs:
            raise ValueError(f"core has {self.core.num_envs} slots but num_envs={num_envs}")
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self._renderer: FrameRenderer | None = None  # made on the first rgb_array frame
        self.return_tensors = return_tensors
        self.single_observation_space = observation_space_of(self.core)
        self.single_action_space = spaces.Discrete(self.core.num_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._seeded = False

    # ---- Gymnasium API ---------------------------------------------------------------------------

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every slot. ``seed``: an int (slot i gets ``seed + i``) or one seed per slot.
        ``options={"example": i}`` pins the example index (one int for all slots, or one per slot)."""
        seeds = slot_seeds(seed, self.num_envs)
        if seed is not None or not self._seeded:
            self.core.seed(seeds)
            self._seeded = True
        examples = None
        if options and "example" in options:
            examples = np.broadcast_to(np.asarray(options["example"], dtype=np.int64), (self.num_envs,))
        obs = self.core.reset(examples=examples)
        self._autoreset[:] = False
        return self._out(obs), self._info(self.core.info_arrays(), reset=np.ones(self.num_envs, dtype=bool))

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step all slots; slots whose episode ended on the previous step are reset instead."""
        actions = self.core.validate_actions(actions)  # before any autoreset: a bad batch changes nothing
        resetting = self._autoreset.copy()
        if resetting.any():
            self.core.reset(np.flatnonzero(resetting))
        out = self.core.step(actions, active=~resetting)
        terminated = out.terminated
        self._autoreset = terminated.cpu().numpy().copy()
        truncated = torch.zeros_like(terminated)
        info = self._info(out.info, reset=resetting)
        return self._out(out.obs), self._out(out.reward), self._out(terminated), self._out(truncated), info

    def _out(self, tensor: torch.Tensor) -> Any:
        return tensor if self.return_tensors else tensor.cpu().numpy()

    def _info(self, arrays: dict[str, Any], reset: np.ndarray) -> dict[str, Any]:
        info: dict[str, Any] = dict(arrays)
        info["autoreset"] = reset
        info["step_wall_time"] = np.full(self.num_envs, self.core.last_step_seconds)
        info["provenance"] = np.full(self.num_envs, self.core.provenance, dtype=object)
        for key in list(info):
            info[f"_{key}"] = np.ones(self.num_envs, dtype=bool)
        return info

    # ---- masks, attributes, rendering ------------------------------------------------------------

    def action_masks(self) -> np.ndarray:
        """``[N, K+1]`` bool: which actions each slot may take (MaskablePPO convention)."""
        return self.core.action_masks()

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call ``name`` on the env and return one result per slot (as ``SyncVectorEnv`` does)."""
        if name == "action_masks":
            return tuple(self.core.action_masks())
        if name == "render":
            frames = self.render() if self.render_mode == "rgb_array" else None
            return frames if frames is not None else tuple(self.core.trace(i) for i in range(self.num_envs))
        attr = getattr(self.core if hasattr(self.core, name) else self, name)
        value = attr(*args, **kwargs) if callable(attr) else attr
        return tuple(value for _ in range(self.num_envs))

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """The value of attribute ``name`` for every slot (one shared core: the same value each time)."""
        return self.call(name)

    def set_attr(self, name: str, values: Any) -> None:
        """Set a live option shared by all slots (see ``DynaLayCore.set_option``)."""
        if isinstance(values, (list, tuple)):
            if len(set(map(repr, values))) > 1:
                raise ValueError(f"DynaLayVectorEnv slots share one core: {name!r} must be equal in every slot")
            values = values[0]
        self.core.set_option(name, values)

    def render(self) -> tuple[str, ...] | tuple[np.ndarray, ...] | None:
        """One result per slot, as Gymnasium's vector envs do: ``ansi`` traces or ``rgb_array`` frames
        (``uint8 [360, 640, 3]``, drawn one after the other on one figure); None without a render mode."""
        if self.render_mode == "ansi":
            return tuple(self.core.trace(i) for i in range(self.num_envs))
        if self.render_mode == "rgb_array":
            if self._renderer is None:
                self._renderer = FrameRenderer(self.core)
            return tuple(self._renderer.frame(i) for i in range(self.num_envs))
        return None

    @property
    def observation_names(self) -> list[str]:
        """The name of every observation feature, in observation order."""
        return self.core.observation_names


__all__ = ["DynaLayVectorEnv", "slot_seeds"]
