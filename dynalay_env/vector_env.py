"""``DynaLayVectorEnv``: N DynaLay episodes stepped as one batch, a Gymnasium ``VectorEnv``.

It is a thin face over :class:`~dynalay_env.core.DynaLayCore`: every step makes one batched FPI
solve per chosen layer and one head call, for all N episodes at once. It is what
``gym.make_vec("DynaLay-MNIST1D-v0", num_envs=256)`` returns (the registered
``vector_entry_point``).

Autoreset: Gymnasium's three modes, chosen with the env keyword ``autoreset_mode``
(``gym.make_vec(id, num_envs=N, autoreset_mode=AutoresetMode.SAME_STEP)``; Gymnasium refuses
``vector_kwargs`` for a custom vector entry point) and exposed as ``env.autoreset_mode`` and
``env.metadata["autoreset_mode"]``, as ``SyncVectorEnv`` does:

- ``NEXT_STEP`` (default): the step after an episode ends resets that slot (its action is ignored)
  and returns the first observation of the new episode with reward 0 and ``terminated=False``.
- ``SAME_STEP``: a slot whose episode ends is reset in the same step; the returned observation and
  info are the new episode's, the last ones are in ``info["final_obs"]`` (an object array, the
  observation in each slot that ended, None elsewhere) and ``info["final_info"]`` (the ended slots'
  info, masked by ``info["final_info"]["_KEY"]``), with ``info["_final_obs"]`` and
  ``info["_final_info"]`` marking those slots.
- ``DISABLED``: nothing resets by itself; reset the ended slots with
  ``reset(options={"reset_mask": mask})`` (bool ``[N]``) before stepping them again.

Slot ``i`` of ``reset(seed=s)`` is seeded ``s + i``, so its episodes are those of a single
``DynaLayEnv`` reset with ``seed=s + i``: in every mode the env steps like ``SyncVectorEnv`` of
single envs with the same seeds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dynalay_env.cache import with_expert_model
from dynalay_env.core import DynaLayCore
from dynalay_env.datasets import Dataset
from dynalay_env.env import CoreFacts, given_sources, make_core, observation_space_of
from dynalay_env.model import FPIModel
from dynalay_env.options import EnvOptions
from dynalay_env.render import FrameRenderer


def autoreset_mode_of(value: AutoresetMode | str) -> AutoresetMode:
    """An ``AutoresetMode`` from itself, its value (``"NextStep"``) or its name (``"next_step"``)."""
    if isinstance(value, AutoresetMode):
        return value
    if isinstance(value, str):
        for mode in AutoresetMode:
            if value in (mode.value, mode.name) or value.upper() == mode.name:
                return mode
    valid = ", ".join(f"AutoresetMode.{m.name} ({m.value!r})" for m in AutoresetMode)
    raise ValueError(f"unknown autoreset_mode {value!r}; valid: {valid}")


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


class DynaLayVectorEnv(CoreFacts, VectorEnv):
    """A natively batched vector of :class:`~dynalay_env.env.DynaLayEnv` (same MDP, same options).

    Args:
        num_envs: N >= 1 episode slots.
        dataset: as for ``DynaLayEnv`` (None: the one of ``options``, by default ``mnist1d``).
        model: as for ``DynaLayEnv``.
        autoreset_mode: ``AutoresetMode.NEXT_STEP`` (default), ``SAME_STEP`` or ``DISABLED`` (or
            their values / names as strings); see the module docstring.
        return_tensors: return observations, rewards and terminations as torch tensors on the
            core's device (for torch-native agents: nothing crosses to the host). Info stays numpy.
        options: every other ``DynaLayEnv`` option (reward, masks, split, device, ...) as an
            :class:`~dynalay_env.options.EnvOptions`; ``**kwargs``: the same as keywords (they change
            ``options`` when both are given).

    Info is a dict of arrays with leading dim N and a boolean ``_KEY`` mask per key, as Gymnasium's
    vector envs build it: slot ``i`` of every key has the dtype and shape of the single env's info
    (see the Info table of :class:`~dynalay_env.env.DynaLayEnv`). After a step every slot reports
    every key; after ``reset(options={"reset_mask": mask})`` only the reset slots do (zeros elsewhere,
    as in ``SyncVectorEnv``). ``provenance`` and ``last_step_seconds`` are attributes, as in the
    single env.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, num_envs: int = 1, dataset: str | Dataset | None = None,
                 model: FPIModel | str | os.PathLike | None = None, *, render_mode: str | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP, return_tensors: bool = False,
                 core: DynaLayCore | None = None, options: EnvOptions | None = None, **kwargs: Any) -> None:
        if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; valid: {self.metadata['render_modes']} or None")
        self.autoreset_mode = autoreset_mode_of(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        if core is None:
            core = make_core(int(num_envs), options, **given_sources(dataset, model), **kwargs)
        self.core = core
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
        self._autoreset = np.zeros(self.num_envs, dtype=bool)  # NEXT_STEP: slots to reset at the next step
        self._seeded = False

    # ---- Gymnasium API ---------------------------------------------------------------------------

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every slot, or only those of ``options["reset_mask"]`` (bool ``[N]``, as
        ``SyncVectorEnv``: the others keep their state and report no info).

        ``seed``: an int (slot i gets ``seed + i``) or one seed per slot (None: the slot's example
        stream goes on). ``options={"example": i}`` pins the example index (one int for all slots,
        or one per slot).
        """
        seeds = slot_seeds(seed, self.num_envs)
        options = dict(options or {})
        mask = self._reset_mask(options.pop("reset_mask")) if "reset_mask" in options else None
        slots = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
        if not self._seeded:  # the first reset seeds every slot (None: a fresh random stream)
            self.core.seed(seeds)
            self._seeded = True
        else:
            seeded = [i for i in slots.tolist() if seeds[i] is not None]
            if seeded:
                self.core.seed([seeds[i] for i in seeded], indices=seeded)
        examples = None
        if "example" in options:
            examples = np.broadcast_to(np.asarray(options["example"], dtype=np.int64), (self.num_envs,))[slots]
        if mask is None:
            obs = self.core.reset(examples=examples)
            self._autoreset[:] = False
            return self._out(obs), self._info(self.core.info_arrays())
        self.core.start_episodes(slots, examples=examples)
        self._autoreset[mask] = False
        # The other slots keep their last observation (a finished slot: its final one), as SyncVectorEnv.
        return self._out(self.core.observations_tensor()), _only(self._info(self.core.info_arrays()), mask)

    def _reset_mask(self, mask: Any) -> np.ndarray:
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
            got = f"{type(mask).__name__} {getattr(mask, 'dtype', '')} {getattr(mask, 'shape', '')}".strip()
            raise ValueError(f"options['reset_mask'] must be a numpy bool array of shape ({self.num_envs},), got {got}")
        if not mask.any():
            raise ValueError("options['reset_mask'] must mark at least one slot to reset")
        return mask

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step all slots, resetting ended episodes as ``autoreset_mode`` says (module docstring)."""
        actions = self.core.validate_actions(actions)  # before any autoreset: a bad batch changes nothing
        if self.autoreset_mode is AutoresetMode.NEXT_STEP:
            return self._step_next(actions)
        try:
            out = self.core.step(actions)
        except RuntimeError as err:  # a finished slot stepped (the core checks before changing anything)
            if self.autoreset_mode is AutoresetMode.DISABLED:
                raise RuntimeError(f"{err} (autoreset_mode=DISABLED: reset ended slots with "
                                   "reset(options={'reset_mask': mask}) before stepping them)") from err
            raise
        terminated = out.terminated
        truncated = torch.zeros_like(terminated)
        info = self._info(out.info)
        obs = out.obs
        if self.autoreset_mode is AutoresetMode.SAME_STEP:
            # The ended slots' last observation and info go under final_obs / final_info, and the
            # slots restart now: their observation and info are the new episode's.
            ended = terminated.cpu().numpy()
            if ended.any():
                slots = np.flatnonzero(ended)
                where = torch.as_tensor(slots, device=obs.device)
                final_obs = np.full(self.num_envs, None, dtype=object)
                for i, o in zip(slots.tolist(), obs[where].cpu().numpy(), strict=True):
                    final_obs[i] = o
                final_info = _only(info, ended)
                obs = obs.clone()
                obs[where] = self.core.reset(slots)
                restarted = self.core.info_arrays()
                for key, value in restarted.items():
                    info[key][ended] = value[ended]  # the step's info arrays are fresh: edited in place
                info.update(final_obs=final_obs, _final_obs=ended.copy(), final_info=final_info,
                            _final_info=ended.copy())
        return self._out(obs), self._out(out.reward), self._out(terminated), self._out(truncated), info

    def _step_next(self, actions: torch.Tensor) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        resetting = self._autoreset.copy()
        if resetting.any():
            self.core.start_episodes(np.flatnonzero(resetting))
        out = self.core.step(actions, active=~resetting)
        terminated = out.terminated
        self._autoreset = terminated.cpu().numpy().copy()
        truncated = torch.zeros_like(terminated)
        return (self._out(out.obs), self._out(out.reward), self._out(terminated), self._out(truncated),
                self._info(out.info))

    def _out(self, tensor: torch.Tensor) -> Any:
        return tensor if self.return_tensors else tensor.cpu().numpy()

    def _info(self, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Gymnasium's vector info: each key's array ``[N, ...]`` and its all-True ``_KEY`` mask."""
        info: dict[str, Any] = dict(arrays)
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


def _only(info: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    """``info`` reported by the slots of ``mask`` only, as ``SyncVectorEnv`` builds it: other slots
    hold zeros (None in object arrays) and ``False`` in every ``_KEY`` mask."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key.startswith("_"):
            continue
        kept = np.full(value.shape, None, dtype=object) if value.dtype == object else np.zeros_like(value)
        kept[mask] = value[mask]
        out[key], out[f"_{key}"] = kept, mask.copy()
    return out


__all__ = ["DynaLayVectorEnv", "autoreset_mode_of", "slot_seeds"]


def make_experts_vector_env(num_envs: int = 1, **options: Any) -> DynaLayVectorEnv:
    """The vector entry point of ``DynaLay-MNIST5k-Experts-v0`` (``gym.make_vec``): a
    :class:`DynaLayVectorEnv` with the expert model by default."""
    return DynaLayVectorEnv(num_envs, **with_expert_model(options))
