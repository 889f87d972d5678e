"""Stable-Baselines3 / sb3-contrib as a backend of :mod:`agents.interface`: the agent, model
construction from rl-zoo3 hyperparameters, and the FLOPs of one decision.

**Decision cost.** :func:`sb3_decision_flops` counts the policy's actual ``predict`` forward
(features extractor + actor MLP + action head; DQN's q-net) with
``torch.utils.flop_counter.FlopCounterMode`` over a batch and divides by the batch size. That counter
reports 0 for ``nn.LSTM``, so :func:`lstm_step_flops` adds the recurrent cell analytically.

Importing it registers :func:`wrap_sb3_model`, so :func:`agents.interface.as_agent` turns a bare
SB3 model into an :class:`SB3Agent`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from torch.utils.flop_counter import FlopCounterMode

from agents.hyperparams import algorithm_kwargs
from agents.interface import AlgoSpec, register_agent_wrapper
from dynalay_env.atomic import atomic_path

# ---- decision cost ------------------------------------------------------------------------------


def lstm_step_flops(lstm: torch.nn.LSTM) -> int:
    """FLOPs of one time step of ``lstm`` for one sample (what FlopCounterMode does not count).

    Per layer and direction, with input width ``in`` and hidden width ``h``::

        gates       = 4 x (2 x (in + h) x h  +  2 x h)    # [W_ih W_hh] @ [x; h] as multiply-adds,
                                                           # plus the two bias vectors b_ih, b_hh
        elementwise = 4 x h                               # c' = f*c + i*g (3 per unit), h' = o*tanh(c') (1)

    The sigmoids and tanhs count 0, as FlopCounterMode counts the MLP's activations. Without biases
    the ``2 x h`` term is dropped. Layers above the first read ``h x directions`` inputs.
    """
    if getattr(lstm, "proj_size", 0):
        raise ValueError("lstm_step_flops: LSTMs with proj_size > 0 are not supported")
    h = int(lstm.hidden_size)
    directions = 2 if lstm.bidirectional else 1
    total = 0
    for layer in range(int(lstm.num_layers)):
        width = int(lstm.input_size) if layer == 0 else h * directions
        gates = 4 * (2 * (width + h) * h + (2 * h if lstm.bias else 0))
        total += directions * (gates + 4 * h)
    return total


def sb3_decision_flops(model: Any, batch: int = 16) -> int:
    """FLOPs of one decision of an SB3 / sb3-contrib model: its ``predict`` run on ``batch`` zero
    observations under FlopCounterMode, divided by ``batch``, plus :func:`lstm_step_flops` of the
    actor's LSTM for a recurrent policy (``predict`` runs only the actor's LSTM), unless the counter
    already counts that LSTM (then it is in ``predict``'s count once). The count does not
    depend on the observation's values, only on the network's shapes."""
    space = model.observation_space
    obs = np.zeros((batch, *space.shape), dtype=space.dtype)
    kwargs: dict[str, Any] = {}
    if takes_action_masks(model):
        kwargs["action_masks"] = np.ones((batch, int(model.action_space.n)), dtype=bool)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.predict(obs, state=None, episode_start=np.ones(batch, dtype=bool), deterministic=True, **kwargs)
    flops = counter.get_total_flops() / batch
    lstm = getattr(model.policy, "lstm_actor", None)
    if isinstance(lstm, torch.nn.LSTM) and not _counter_counts_lstm(lstm):
        flops += lstm_step_flops(lstm)
    return int(round(flops))


def _counter_counts_lstm(lstm: torch.nn.LSTM) -> bool:
    """Whether FlopCounterMode counts anything for one step of ``lstm`` alone (it counts 0 in the
    torch versions this was written for). If a future torch counts LSTMs, ``predict``'s count
    already holds the LSTM and :func:`sb3_decision_flops` must not add :func:`lstm_step_flops`."""
    param = next(lstm.parameters())
    x = torch.zeros(1, 1, int(lstm.input_size), dtype=param.dtype, device=param.device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        lstm(x if lstm.batch_first else x.transpose(0, 1))
    return counter.get_total_flops() > 0


def takes_action_masks(model: Any) -> bool:
    """Whether ``model.predict`` accepts ``action_masks`` (sb3-contrib's MaskablePPO does)."""
    return "action_masks" in inspect.signature(model.predict).parameters


# ---- Stable-Baselines3 --------------------------------------------------------------------------


class SB3Agent:
    """An SB3 / sb3-contrib model as an :class:`Agent`. Attributes it does not define (``policy``,
    ``num_timesteps``, ``set_env``, ``load_replay_buffer``, ...) are the model's own, so code and
    callbacks written for the SB3 model keep working; ``model`` is the SB3 model itself."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._decision_flops: int | None = None
        self._masks = takes_action_masks(model)

    _OWN = ("model", "_decision_flops", "_masks")

    def __getattr__(self, name: str) -> Any:
        if name in self._OWN:  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.model, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # Writes go to the model too, so code written for the SB3 model keeps working.
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.model, name, value)

    def learn(self, total_timesteps: int, **kwargs: Any) -> SB3Agent:
        """Train for ``total_timesteps`` env steps (SB3's ``learn``); returns the agent."""
        self.model.learn(total_timesteps=total_timesteps, **kwargs)
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Write the model's zip atomically (``.zip`` is added to a path without a suffix, as SB3 does)."""
        target = Path(path)
        with atomic_path(target if target.suffix else target.with_suffix(".zip")) as tmp:
            self.model.save(str(tmp))

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                action_masks: np.ndarray | None = None, deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """Actions ``[N]`` for observations ``[N, D]`` (SB3's ``predict``); masks are applied by
        algorithms that take them (MaskablePPO).
        """
        kwargs = {"action_masks": action_masks} if self._masks and action_masks is not None else {}
        return self.model.predict(observation, state=state, episode_start=episode_start, deterministic=deterministic,
                                  **kwargs)

    def reset_env_on_next_learn(self) -> None:
        """Make the next ``learn`` reset the env and start from fresh observations (after something
        else has played in the env, e.g. a co-training model phase).

        SB3 has no public call for this: ``learn`` resets the env only when ``reset_num_timesteps``
        (which also zeroes the step count and the schedules' progress) or when ``_last_obs`` is
        None, so this sets that private attribute, here and nowhere else.
        """
        self.model._last_obs = None

    def decision_flops(self) -> int:
        """FLOPs of one decision of the policy network, measured once with ``torch.utils.flop_counter``."""
        if self._decision_flops is None:  # shapes never change, so one measurement holds
            self._decision_flops = sb3_decision_flops(self.model)
        return self._decision_flops


class SB3Backend:
    """Builds and loads SB3 / sb3-contrib models (``spec.cls``) as :class:`SB3Agent`."""

    name = "sb3"

    def build(self, spec: AlgoSpec, env: Any, hyperparams: dict[str, Any], *, seed: int = 0, device: str = "cpu",
              tensorboard_log: str | None = None, verbose: int = 0) -> SB3Agent:
        """A fresh SB3 agent of algorithm ``spec`` on ``env`` from rl-zoo3 style ``hyperparams``
        (the caller has checked the env's masks against ``spec``: :meth:`AlgoSpec.check_compatibility`)."""
        return SB3Agent(construct(spec, env, hyperparams, seed=seed, device=device,
                                  tensorboard_log=tensorboard_log, verbose=verbose))

    def load(self, spec: AlgoSpec, path: str | os.PathLike, *, env: Any = None, device: str = "cpu",
             **kwargs: Any) -> SB3Agent:
        """The SB3 agent saved at ``path`` (``env`` attaches an env to continue training)."""
        return SB3Agent(spec.cls.load(path, env=env, device=device, **kwargs))


SB3_BACKEND = SB3Backend()


def wrap_sb3_model(policy: Any) -> SB3Agent | None:
    """``policy`` as an :class:`SB3Agent` where it is a bare SB3 / sb3-contrib model, else None
    (registered with :func:`agents.interface.register_agent_wrapper`)."""
    return SB3Agent(policy) if isinstance(policy, BaseAlgorithm) else None


register_agent_wrapper(wrap_sb3_model)


def env_mask_options(env: Any) -> dict[str, Any]:
    """``mask_repeats`` / ``compute_budget`` of a DynaLay env (single, SB3 adapter, DummyVecEnv of
    single envs, possibly wrapped); ``{}`` for an env that is not DynaLay's."""
    core = getattr(env, "core", None)
    while core is None and hasattr(env, "venv"):  # SB3 VecEnvWrapper chain
        env = env.venv
        core = getattr(env, "core", None)
    if core is None and getattr(env, "envs", None):  # DummyVecEnv of single envs (as rl-zoo3 builds)
        env = env.envs[0]
    if core is None and hasattr(env, "unwrapped"):
        core = getattr(env.unwrapped, "core", None)
    if core is None:
        return {}
    return {"mask_repeats": bool(getattr(core, "mask_repeats", False)),
            "compute_budget": getattr(core, "compute_budget", None)}


def make_model(spec: AlgoSpec, env: Any, hyperparams: Mapping[str, Any], seed: int = 0, device: str = "cpu",
               tensorboard_log: str | None = None, verbose: int = 0) -> BaseAlgorithm:
    """Build ``spec``'s model on ``env`` from rl-zoo3 hyperparameters (:func:`agents.hyperparams.load_hyperparams`).

    rl-zoo3-only keys (``n_timesteps``, ``n_envs``, ``normalize``, ``frame_stack``, ``env_wrapper``,
    ``callback``, ``env_kwargs``, ...) are dropped: the caller builds the env with ``n_envs`` (and
    ``env_kwargs``), wraps it with :func:`vec_normalize_kwargs` if asked, and calls
    ``model.learn(hyperparams["n_timesteps"])``. ``policy`` (default :attr:`AlgoSpec.policy`) is the
    policy; everything else goes to the constructor. The env's mask options go through
    :meth:`AlgoSpec.check_compatibility` (a recurrent algorithm on a masked DynaLay env raises).
    """
    spec.check_compatibility(env_mask_options(env))
    return construct(spec, env, hyperparams, seed=seed, device=device, tensorboard_log=tensorboard_log,
                     verbose=verbose)


def construct(spec: AlgoSpec, env: Any, hyperparams: Mapping[str, Any], seed: int = 0, device: str = "cpu",
              tensorboard_log: str | None = None, verbose: int = 0) -> Any:
    """``spec.cls(policy, env, **kwargs)`` from rl-zoo3 hyperparameters, without the masks check of
    :func:`make_model` (for backends whose caller has made it once: :func:`agents.training.train`)."""
    policy, kwargs = algorithm_kwargs(spec, hyperparams)
    return spec.cls(policy, env, seed=seed, device=device, tensorboard_log=tensorboard_log, verbose=verbose,
                    **kwargs)



__all__ = ["SB3Agent", "SB3Backend", "SB3_BACKEND", "construct", "wrap_sb3_model",
           "env_mask_options", "lstm_step_flops", "make_model", "sb3_decision_flops", "takes_action_masks"]
