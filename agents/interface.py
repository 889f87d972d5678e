"""The algorithm interface every learner implements, whatever its framework.

The registry (:mod:`agents.algorithms`), training into a run folder (:func:`agents.training.train`),
:func:`agents.training.load_run`, evaluation (:func:`agents.evaluate.run_policy`) and
:class:`agents.inference.AdaptiveClassifier` only use these two protocols:

* :class:`Agent` -- a trained (or training) policy: ``learn``, ``save``,
  ``predict(obs, state, episode_start, action_masks) -> (actions, state)`` and
  ``decision_flops()``, the FLOPs of one decision (one call of the policy for one observation).
* :class:`Backend` -- how a framework builds an agent from hyperparameters on an env and loads a
  saved one.

Stable-Baselines3 / sb3-contrib is one implementation (:class:`SB3Agent`, :data:`SB3_BACKEND`);
the supervised baselines of :mod:`agents.supervised` are a second (``SUPERVISED_BACKEND``); another
framework adds its own backend and registers its algorithms with it.

**Decision cost.** A decision is one call of the policy: every step it chooses, EXIT included; the
forced exit at ``max_steps`` is not a decision. :func:`sb3_decision_flops` counts the policy's
actual ``predict`` forward (features extractor + actor MLP + action head; DQN's q-net) with
``torch.utils.flop_counter.FlopCounterMode`` over a batch and divides by the batch size. That
counter reports 0 for ``nn.LSTM``, so :func:`lstm_step_flops` adds the recurrent cell analytically.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Agent(Protocol):
    """A policy that chooses DynaLay actions; framework-neutral."""

    num_timesteps: int

    def learn(self, total_timesteps: int, **kwargs: Any) -> Any:
        """Train for ``total_timesteps`` more env steps on the env it was built or loaded with."""

    def save(self, path: str | os.PathLike) -> None:
        """Write everything :meth:`Backend.load` needs into the file ``path``."""

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                action_masks: np.ndarray | None = None, deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """Actions ``[N]`` for observations ``[N, obs_dim]``; ``state`` is the recurrent state (None
        for a feed-forward policy), ``episode_start`` bool ``[N]``, ``action_masks`` bool
        ``[N, num_actions]`` (ignored by a policy that does not use masks)."""

    def decision_flops(self) -> int:
        """FLOPs of one decision: one forward of the policy for one observation."""


class Backend(Protocol):
    """How one framework builds and loads :class:`Agent` objects."""

    name: str

    def build(self, spec: Any, env: Any, hyperparams: dict[str, Any], *, seed: int = 0, device: str = "cpu",
              tensorboard_log: str | None = None, verbose: int = 0) -> Agent:
        """A fresh agent of algorithm ``spec`` (an :class:`~agents.algorithms.AlgoSpec`) on ``env``."""

    def load(self, spec: Any, path: str | os.PathLike, *, env: Any = None, device: str = "cpu",
             **kwargs: Any) -> Agent:
        """The agent saved at ``path`` (attached to ``env`` when given, to continue training)."""


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
    from torch.utils.flop_counter import FlopCounterMode

    space = model.observation_space
    obs = np.zeros((batch, *space.shape), dtype=space.dtype)
    kwargs: dict[str, Any] = {}
    if _takes_action_masks(model):
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
    from torch.utils.flop_counter import FlopCounterMode

    param = next(lstm.parameters())
    x = torch.zeros(1, 1, int(lstm.input_size), dtype=param.dtype, device=param.device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        lstm(x if lstm.batch_first else x.transpose(0, 1))
    return counter.get_total_flops() > 0


def _takes_action_masks(model: Any) -> bool:
    import inspect

    return "action_masks" in inspect.signature(model.predict).parameters


# ---- Stable-Baselines3 --------------------------------------------------------------------------


class SB3Agent:
    """An SB3 / sb3-contrib model as an :class:`Agent`. Attributes it does not define (``policy``,
    ``num_timesteps``, ``set_env``, ``load_replay_buffer``, ...) are the model's own, so code and
    callbacks written for the SB3 model keep working; ``model`` is the SB3 model itself."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._decision_flops: int | None = None
        self._masks = _takes_action_masks(model)

    _OWN = ("model", "_decision_flops", "_masks")

    def __getattr__(self, name: str) -> Any:
        if name in self._OWN:  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.model, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # Writes go to the model too (e.g. resetting ``_last_obs`` between co-training phases).
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
        from pathlib import Path

        from agents.callbacks import atomic_save

        target = Path(path)
        atomic_save(target if target.suffix else target.with_suffix(".zip"), self.model.save)

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                action_masks: np.ndarray | None = None, deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """Actions ``[N]`` for observations ``[N, D]`` (SB3's ``predict``); masks are applied by
        algorithms that take them (MaskablePPO).
        """
        kwargs = {"action_masks": action_masks} if self._masks and action_masks is not None else {}
        return self.model.predict(observation, state=state, episode_start=episode_start, deterministic=deterministic,
                                  **kwargs)

    def decision_flops(self) -> int:
        """FLOPs of one decision of the policy network, measured once with ``torch.utils.flop_counter``."""
        if self._decision_flops is None:  # shapes never change, so one measurement holds
            self._decision_flops = sb3_decision_flops(self.model)
        return self._decision_flops


class SB3Backend:
    """Builds and loads SB3 / sb3-contrib models (``spec.cls``) as :class:`SB3Agent`."""

    name = "sb3"

    def build(self, spec: Any, env: Any, hyperparams: dict[str, Any], *, seed: int = 0, device: str = "cpu",
              tensorboard_log: str | None = None, verbose: int = 0) -> SB3Agent:
        """A fresh SB3 agent of algorithm ``spec`` on ``env`` from rl-zoo3 style ``hyperparams``."""
        from agents.algorithms import make_model

        return SB3Agent(make_model(spec.name, env, hyperparams, seed=seed, device=device,
                                   tensorboard_log=tensorboard_log, verbose=verbose))

    def load(self, spec: Any, path: str | os.PathLike, *, env: Any = None, device: str = "cpu",
             **kwargs: Any) -> SB3Agent:
        """The SB3 agent saved at ``path`` (``env`` attaches an env to continue training)."""
        return SB3Agent(spec.cls.load(path, env=env, device=device, **kwargs))


SB3_BACKEND = SB3Backend()


def as_agent(policy: Any) -> Any:
    """``policy`` as an :class:`Agent` where it is a bare SB3 model; anything else unchanged."""
    from stable_baselines3.common.base_class import BaseAlgorithm

    return SB3Agent(policy) if isinstance(policy, BaseAlgorithm) else policy


def decision_flops_of(policy: Any) -> int:
    """FLOPs per decision of ``policy``: its ``decision_flops()``, 0 for one without (a fixed
    program such as a fixed path makes no data-dependent decision worth charging)."""
    policy = as_agent(policy)
    method = getattr(policy, "decision_flops", None)
    return int(method()) if callable(method) else 0


__all__ = ["Agent", "Backend", "SB3Agent", "SB3Backend", "SB3_BACKEND", "as_agent", "decision_flops_of",
           "lstm_step_flops", "sb3_decision_flops"]
