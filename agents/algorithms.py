"""The algorithms DynaLay-Gym trains, under rl-zoo3's names, and their hyperparameters: the RL
algorithms of SB3 / sb3-contrib, and the learned non-RL baselines of :mod:`agents.supervised`.

One registry, :data:`ALGORITHMS`, maps a name to an :class:`~agents.interface.AlgoSpec` (the SB3 /
sb3-contrib class, its default policy, what it can do and its backend): :func:`register_algorithm`
adds one, :func:`get_algorithm` finds one by name or alias, :func:`list_algorithms` lists them.
Everything outside this module builds and loads agents through :meth:`AlgoSpec.build` /
:meth:`AlgoSpec.load`, which return the framework-neutral :class:`agents.interface.Agent` (SB3 is
one backend of it, :class:`agents.sb3_backend.SB3Agent`):

| name | class | policy | notes |
|---|---|---|---|
| ``ppo`` | ``stable_baselines3.PPO`` | ``MlpPolicy`` | |
| ``a2c`` | ``stable_baselines3.A2C`` | ``MlpPolicy`` | |
| ``dqn`` | ``stable_baselines3.DQN`` | ``MlpPolicy`` | off-policy |
| ``qrdqn`` | ``sb3_contrib.QRDQN`` | ``MlpPolicy`` | off-policy |
| ``trpo`` | ``sb3_contrib.TRPO`` | ``MlpPolicy`` | |
| ``ars`` | :class:`ARS` (``sb3_contrib.ARS``) | ``LinearPolicy`` | needs many evaluation episodes see below |
| ``ppo_lstm`` | ``sb3_contrib.RecurrentPPO`` | ``MlpLstmPolicy`` | recurrent; alias ``recurrent_ppo`` |
| ``maskable_ppo`` | ``sb3_contrib.MaskablePPO`` | ``MlpPolicy`` | uses action masks; project CLI only (rl-zoo3 has none); alias ``maskableppo`` |
| ``value_exit`` | :class:`agents.supervised.ValueExit` | ``MlpPolicy`` | supervised: regresses the value of continuing, exits below a threshold; project CLI only |
| ``bc`` | :class:`agents.supervised.BC` | ``MlpPolicy`` | supervised: imitates the cost-regularised oracle on PPO's actor net; project CLI only |
| ``dagger`` | :class:`agents.supervised.DAgger` | ``MlpPolicy`` | supervised: DAgger on the same oracle; project CLI only |

Names are looked up case-insensitively (``-`` counts as ``_``).

Hyperparameters: ``agents/hyperparams/<name>.yml`` in rl-zoo3's format (:mod:`agents.hyperparams`).
With rl-zoo3, add ``--num-threads 1``: it steps a ``DummyVecEnv`` of single envs, whose tiny
per-example torch calls run slower with more than one intra-op thread; env options go as
``--env-kwargs model:"'/path/main_model.pt'" lambda_compute:0.2`` (the YAML files carry no
``env_kwargs``: rl-zoo3 would let the command line replace them whole and would build its evaluation
env without them).

**ARS** scores each candidate policy by the summed return of ``n_eval_episodes`` episodes. A
DynaLay episode is *one example*: its return is about +1 or -1 (right or wrong) minus a little
compute, so a candidate judged on one episode is judged by whether it happened to draw an easy
example. The YAML therefore gives ARS ``n_eval_episodes: 128`` (the standard error of a mean over 128
episodes is 1/sqrt(128), about 1/11, of one episode's), and few directions (``n_delta: 4``) with the
best half kept (``n_top: 2``). On the batched adapter, ``evaluate_policy`` spreads the episodes over
the envs, so ``n_envs`` dividing ``n_eval_episodes`` (e.g. 64) evaluates a candidate in a handful of
batched steps; rl-zoo3 instead starts one process per env for ARS when ``n_envs > 1``, which is why
the YAML keeps ``n_envs: 1``. :class:`ARS` counts env steps correctly with many envs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sb3_contrib
from sb3_contrib import QRDQN, TRPO, MaskablePPO, RecurrentPPO
from stable_baselines3 import A2C, DQN, PPO

from agents.interface import AlgoSpec, Backend
from agents.sb3_backend import SB3_BACKEND
from agents.supervised import BC, SUPERVISED_BACKEND, DAgger, ValueExit
from dynalay_env.registry import unknown_name


class ARS(sb3_contrib.ARS):
    """sb3-contrib's ARS, with ``num_timesteps`` counting each env step once on a multi-env VecEnv.

    sb3-contrib's synchronous evaluation adds ``n_envs`` to ``num_timesteps`` on every callback of
    ``evaluate_policy``, which fires once per env per step: on the batched adapter with 64 envs,
    ``learn(n)`` would stop after ~n/64 real steps. Here each callback adds 1 (one env step), so
    ``n_timesteps`` means the same with 1 env (rl-zoo3) and with 64 (project CLI). Models load with
    ``sb3_contrib.ARS.load`` as well.
    """

    def _trigger_callback(self, _locals: dict[str, Any], _globals: dict[str, Any], callback: Any,
                          n_envs: int) -> None:
        self.num_timesteps += 1
        callback.on_step()


ALGORITHMS: dict[str, AlgoSpec] = {}

#: Other accepted spellings (after lower-casing and ``-`` -> ``_``).
ALIASES: dict[str, str] = {
    "recurrent_ppo": "ppo_lstm",
    "recurrentppo": "ppo_lstm",
    "maskableppo": "maskable_ppo",
    "ppo_mask": "maskable_ppo",
}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_algorithm(spec: AlgoSpec, *, aliases: tuple[str, ...] = (), overwrite: bool = False) -> AlgoSpec:
    """Add ``spec`` to the registry under ``spec.name`` (and ``aliases``); returns it.

    Refuses a name already registered unless ``overwrite`` (so built-ins are not shadowed by accident),
    and a name that is not a lower-case identifier as :func:`get_algorithm` spells it.
    """
    if not isinstance(spec, AlgoSpec):
        raise TypeError(f"register_algorithm expects an AlgoSpec, got {type(spec).__name__}")
    for name in (spec.name, *aliases):
        if not isinstance(name, str) or not name or _key(name) != name:
            raise ValueError(f"algorithm name {name!r} must be a non-empty lower-case string without '-' or spaces")
        if (name in ALGORITHMS or name in ALIASES) and not overwrite:
            raise ValueError(f"algorithm {name!r} is already registered; pass overwrite=True to replace it")
    ALGORITHMS[spec.name] = spec
    for alias in aliases:
        ALIASES[alias] = spec.name
    return spec


def list_algorithms() -> list[str]:
    """Canonical names of the registered algorithms, in registry order."""
    return list(ALGORITHMS)


def get_algorithm(name: str | AlgoSpec) -> AlgoSpec:
    """The :class:`~agents.interface.AlgoSpec` for ``name`` (canonical or alias, any case; a spec is
    returned as it is).

    Raises ``ValueError`` naming the bad value and listing the valid names and aliases, in the words
    of the env's registries (:func:`dynalay_env.registry.unknown_name`).
    """
    if isinstance(name, AlgoSpec):
        return name
    key = _key(name) if isinstance(name, str) else None
    key = ALIASES.get(key, key)
    if key not in ALGORITHMS:
        aliases = ", ".join(f"{a} -> {c}" for a, c in ALIASES.items())
        raise unknown_name("algorithm", name, ALGORITHMS, extra=f" (aliases: {aliases})")
    return ALGORITHMS[key]


def check_compatibility(algo: str | AlgoSpec, env_kwargs: Mapping[str, Any]) -> None:
    """:meth:`AlgoSpec.check_compatibility` of the algorithm named ``algo``."""
    get_algorithm(algo).check_compatibility(env_kwargs)


#: The built-in algorithms: name, class, default policy, recurrent, supports action masks,
#: off-policy, known to rl-zoo3, backend.
_BUILT_IN: tuple[tuple[str, type, str, bool, bool, bool, bool, Backend], ...] = (
    ("ppo", PPO, "MlpPolicy", False, False, False, True, SB3_BACKEND),
    ("a2c", A2C, "MlpPolicy", False, False, False, True, SB3_BACKEND),
    ("dqn", DQN, "MlpPolicy", False, False, True, True, SB3_BACKEND),
    ("qrdqn", QRDQN, "MlpPolicy", False, False, True, True, SB3_BACKEND),
    ("trpo", TRPO, "MlpPolicy", False, False, False, True, SB3_BACKEND),
    ("ars", ARS, "LinearPolicy", False, False, False, True, SB3_BACKEND),
    ("ppo_lstm", RecurrentPPO, "MlpLstmPolicy", True, False, False, True, SB3_BACKEND),
    ("maskable_ppo", MaskablePPO, "MlpPolicy", False, True, False, False, SB3_BACKEND),
    # Learned non-RL baselines (agents.supervised), on the framework-neutral backend.
    ("value_exit", ValueExit, "MlpPolicy", False, True, False, False, SUPERVISED_BACKEND),
    ("bc", BC, "MlpPolicy", False, True, False, False, SUPERVISED_BACKEND),
    ("dagger", DAgger, "MlpPolicy", False, True, False, False, SUPERVISED_BACKEND),
)
for _name, _cls, _policy, _recurrent, _masks, _off_policy, _zoo, _backend in _BUILT_IN:
    register_algorithm(AlgoSpec(_name, _cls, _policy, recurrent=_recurrent, supports_action_masks=_masks,
                                off_policy=_off_policy, zoo=_zoo, backend=_backend))

__all__ = ["ALGORITHMS", "ALIASES", "ARS", "AlgoSpec", "check_compatibility", "get_algorithm", "list_algorithms",
           "register_algorithm"]
