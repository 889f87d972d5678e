"""The algorithms DynaLay-Gym trains, under rl-zoo3's names, and their hyperparameters: the RL
algorithms of SB3 / sb3-contrib, and the learned non-RL baselines of :mod:`agents.supervised`.

One registry, :data:`ALGORITHMS`, maps a name to an :class:`AlgoSpec` (the SB3 / sb3-contrib class,
its default policy and what it can do). Everything outside this module builds and loads agents
through :meth:`AlgoSpec.build` / :meth:`AlgoSpec.load`, which return the framework-neutral
:class:`agents.interface.Agent` (SB3 is one backend of it, :class:`agents.interface.SB3Agent`):

| name | class | policy | notes |
|---|---|---|---|
| ``ppo`` | ``stable_baselines3.PPO`` | ``MlpPolicy`` | |
| ``a2c`` | ``stable_baselines3.A2C`` | ``MlpPolicy`` | |
| ``dqn`` | ``stable_baselines3.DQN`` | ``MlpPolicy`` | off-policy |
| ``qrdqn`` | ``sb3_contrib.QRDQN`` | ``MlpPolicy`` | off-policy |
| ``trpo`` | ``sb3_contrib.TRPO`` | ``MlpPolicy`` | |
| ``ars`` | :class:`ARS` (``sb3_contrib.ARS``) | ``LinearPolicy`` | needs many evaluation episodes, see below |
| ``ppo_lstm`` | ``sb3_contrib.RecurrentPPO`` | ``MlpLstmPolicy`` | recurrent; alias ``recurrent_ppo`` |
| ``maskable_ppo`` | ``sb3_contrib.MaskablePPO`` | ``MlpPolicy`` | uses action masks; project CLI only (rl-zoo3 has none); alias ``maskableppo`` |
| ``value_exit`` | :class:`agents.supervised.ValueExit` | ``MlpPolicy`` | supervised: regresses the value of continuing, exits below a threshold; project CLI only |
| ``bc`` | :class:`agents.supervised.BC` | ``MlpPolicy`` | supervised: imitates the cost-regularised oracle on PPO's actor net; project CLI only |
| ``dagger`` | :class:`agents.supervised.DAgger` | ``MlpPolicy`` | supervised: DAgger on the same oracle; project CLI only |

Names are looked up case-insensitively (``-`` counts as ``_``).

Hyperparameters live in ``agents/hyperparams/<name>.yml``, package data of ``agents`` (shipped in the
wheel and read with :mod:`importlib.resources`), in rl-zoo3's format
(one entry per env id: ``n_timesteps``, ``policy``, ``n_envs``, ``normalize``, ``policy_kwargs`` as a
string such as ``"dict(net_arch=[64, 64])"``, and the algorithm's own constructor arguments), so the
same file drives the project CLI (:func:`load_hyperparams` + :func:`make_model`) and
``python -m rl_zoo3.train --gym-packages dynalay_env --conf-file agents/hyperparams/<name>.yml``
(``pip install -e ".[zoo]"``). With rl-zoo3, add ``--num-threads 1``: it steps a ``DummyVecEnv`` of
single envs, whose tiny per-example torch calls run several times slower with more than one intra-op
thread on 2 cores; env options go as ``--env-kwargs model:"'/path/main_model.pt'" lambda_compute:0.2``
(the YAML files carry no ``env_kwargs``: rl-zoo3 would let the command line replace them whole and
would build its evaluation env without them).

**ARS** scores each candidate policy by the summed return of ``n_eval_episodes`` episodes. A
DynaLay episode is *one example*: its return is about +1 or -1 (right or wrong) minus a little
compute, so a candidate judged on one episode is judged by whether it happened to draw an easy
example. The YAML therefore gives ARS ``n_eval_episodes: 128`` (the noise of a 128-episode mean is
~1/11 of one episode's; anything under 64 is mostly noise), and few directions (``n_delta: 4``) with
the best half kept (``n_top: 2``) so that an update stays ~2,500 steps. On the
batched adapter, ``evaluate_policy`` spreads the episodes over the envs, so ``n_envs`` dividing
``n_eval_episodes`` (e.g. 64) evaluates a candidate in a handful of batched steps (about 30x faster
than one env); rl-zoo3 instead starts one process per env for ARS when ``n_envs > 1``, which is why
the YAML keeps ``n_envs: 1``. The registry's :class:`ARS` counts env steps correctly with many envs.
"""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.resources
import inspect
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sb3_contrib
import torch
import yaml
from sb3_contrib import QRDQN, TRPO, MaskablePPO, RecurrentPPO
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import LinearSchedule

from agents.interface import SB3_BACKEND, Agent, Backend
from agents.supervised import BC, SUPERVISED_BACKEND, DAgger, ValueExit

#: Folder of the rl-zoo3 style hyperparameter files (``<algo>.yml``): package data of ``agents``,
#: found with :mod:`importlib.resources`, so it is there in a source checkout and in an installed
#: wheel alike. ``$DYNALAY_HYPERPARAMS_DIR`` overrides it.
HYPERPARAMS_DIR = Path(str(importlib.resources.files("agents").joinpath("hyperparams")))
HYPERPARAMS_DIR_ENV = "DYNALAY_HYPERPARAMS_DIR"

#: Entries tried, in order, when a file has no entry for the requested env id: rl-zoo3's own
#: fallback (``default``), then the generic DynaLay id.
FALLBACK_KEYS: tuple[str, ...] = ("default", "DynaLay-v0")

#: rl-zoo3 keys that configure the experiment (env, wrappers, budget), not the algorithm's
#: constructor: :func:`make_model` removes them. ``policy`` becomes the first positional argument.
ZOO_ONLY_KEYS: frozenset[str] = frozenset({
    "n_timesteps", "n_envs", "normalize", "policy", "frame_stack", "env_wrapper", "vec_env_wrapper",
    "callback", "env_kwargs", "monitor_kwargs", "noise_type", "noise_std",
})

#: Keys rl-zoo3 turns into linear schedules when given as ``"lin_<initial value>"``.
SCHEDULE_KEYS: tuple[str, ...] = ("learning_rate", "clip_range", "clip_range_vf", "delta_std")

#: Keys whose string values rl-zoo3 evaluates as Python (``"dict(net_arch=[64, 64])"``); here they
#: go through :func:`parse_python_literal`, which evaluates nothing.
LITERAL_KEYS: tuple[str, ...] = ("policy_kwargs", "replay_buffer_kwargs")


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


@dataclass(frozen=True)
class AlgoSpec:
    """One registered algorithm.

    Attributes:
        name: canonical (rl-zoo3) name.
        cls: the SB3 / sb3-contrib algorithm class (or the learner class of :mod:`agents.supervised`).
        policy: default policy name (used when the hyperparameters name none).
        recurrent: the policy keeps a hidden state (``predict`` needs ``state`` / ``episode_start``).
        supports_action_masks: the algorithm reads ``action_masks()`` from the env.
        off_policy: learns from a replay buffer.
        zoo: rl-zoo3 knows this name (``--algo <name>``).
        backend: the framework that builds and loads it (:class:`agents.interface.Backend`); the
            rest of the project only uses :meth:`build` and :meth:`load`, which return an
            :class:`agents.interface.Agent`.
    """

    name: str
    cls: type
    policy: str
    recurrent: bool
    supports_action_masks: bool
    off_policy: bool
    zoo: bool
    backend: Backend = SB3_BACKEND

    def build(self, env: Any, hyperparams: Mapping[str, Any], *, seed: int = 0, device: str = "cpu",
              tensorboard_log: str | None = None, verbose: int = 0) -> Agent:
        """A fresh agent on ``env`` from rl-zoo3 style ``hyperparams`` (see :func:`make_model`)."""
        return self.backend.build(self, env, dict(hyperparams), seed=seed, device=device,
                                  tensorboard_log=tensorboard_log, verbose=verbose)

    def load(self, path: str | os.PathLike, *, env: Any = None, device: str = "cpu", **kwargs: Any) -> Agent:
        """The agent saved at ``path`` (``env``: attach it to continue training)."""
        return self.backend.load(self, path, env=env, device=device, **kwargs)


ALGORITHMS: dict[str, AlgoSpec] = {spec.name: spec for spec in (
    AlgoSpec("ppo", PPO, "MlpPolicy", recurrent=False, supports_action_masks=False, off_policy=False, zoo=True),
    AlgoSpec("a2c", A2C, "MlpPolicy", recurrent=False, supports_action_masks=False, off_policy=False, zoo=True),
    AlgoSpec("dqn", DQN, "MlpPolicy", recurrent=False, supports_action_masks=False, off_policy=True, zoo=True),
    AlgoSpec("qrdqn", QRDQN, "MlpPolicy", recurrent=False, supports_action_masks=False, off_policy=True, zoo=True),
    AlgoSpec("trpo", TRPO, "MlpPolicy", recurrent=False, supports_action_masks=False, off_policy=False, zoo=True),
    AlgoSpec("ars", ARS, "LinearPolicy", recurrent=False, supports_action_masks=False, off_policy=False, zoo=True),
    AlgoSpec("ppo_lstm", RecurrentPPO, "MlpLstmPolicy", recurrent=True, supports_action_masks=False,
             off_policy=False, zoo=True),
    AlgoSpec("maskable_ppo", MaskablePPO, "MlpPolicy", recurrent=False, supports_action_masks=True,
             off_policy=False, zoo=False),
    # Learned non-RL baselines (agents.supervised), on the framework-neutral backend.
    AlgoSpec("value_exit", ValueExit, "MlpPolicy", recurrent=False, supports_action_masks=True, off_policy=False,
             zoo=False, backend=SUPERVISED_BACKEND),
    AlgoSpec("bc", BC, "MlpPolicy", recurrent=False, supports_action_masks=True, off_policy=False, zoo=False,
             backend=SUPERVISED_BACKEND),
    AlgoSpec("dagger", DAgger, "MlpPolicy", recurrent=False, supports_action_masks=True, off_policy=False,
             zoo=False, backend=SUPERVISED_BACKEND),
)}

#: Other accepted spellings (after lower-casing and ``-`` -> ``_``).
ALIASES: dict[str, str] = {
    "recurrent_ppo": "ppo_lstm",
    "recurrentppo": "ppo_lstm",
    "maskableppo": "maskable_ppo",
    "ppo_mask": "maskable_ppo",
}


def available_algorithms() -> list[str]:
    """Canonical names of the registered algorithms, in registry order."""
    return list(ALGORITHMS)


def get_algorithm(name: str) -> AlgoSpec:
    """The :class:`AlgoSpec` for ``name`` (canonical or alias, any case).

    Raises ``ValueError`` naming the bad value and listing the valid names and aliases.
    """
    if isinstance(name, AlgoSpec):
        return name
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else None
    key = ALIASES.get(key, key)
    if key not in ALGORITHMS:
        aliases = ", ".join(f"{a} -> {c}" for a, c in ALIASES.items())
        raise ValueError(f"unknown algorithm {name!r}; valid: {', '.join(ALGORITHMS)} (aliases: {aliases})")
    return ALGORITHMS[key]


# ---- hyperparameters --------------------------------------------------------------------------


def hyperparams_file(algo: str, path: str | os.PathLike | None = None) -> Path:
    """The YAML file :func:`load_hyperparams` reads: ``path`` if it is a file, ``path/<algo>.yml`` if
    it is a folder, else ``$DYNALAY_HYPERPARAMS_DIR/<algo>.yml`` or the packaged
    ``agents/hyperparams/<algo>.yml`` (:data:`HYPERPARAMS_DIR`)."""
    spec = get_algorithm(algo)
    if path is None:
        folder = Path(os.environ.get(HYPERPARAMS_DIR_ENV) or HYPERPARAMS_DIR)
        return folder / f"{spec.name}.yml"
    path = Path(path)
    return path / f"{spec.name}.yml" if path.is_dir() else path


def load_hyperparams(algo: str, env_id: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read the rl-zoo3 hyperparameters of ``algo`` for ``env_id``.

    The file (see :func:`hyperparams_file`) maps env ids to entries. The entry is ``env_id``'s own;
    if the file has none, ``default`` (rl-zoo3's fallback), then ``DynaLay-v0`` (the generic id, so
    ``DynaLay-MNIST-v0`` or ``DynaLay-CIFAR10-v0`` get sensible values). A missing file or entry
    raises with the file path and the entries it has.

    Returns a fresh dict in rl-zoo3's form: ``n_timesteps``, ``policy``, ``n_envs``, ``normalize``
    and constructor arguments, with strings kept as written (``policy_kwargs: "dict(...)"``,
    ``learning_rate: "lin_3e-4"``) so the dict can be saved and read by rl-zoo3 again;
    :func:`make_model` converts them. ``policy_kwargs`` strings are checked here (parsed, never
    evaluated) so a bad file fails at load time.
    """
    file = hyperparams_file(algo, path)
    if not file.is_file():
        raise FileNotFoundError(f"no hyperparameter file for {get_algorithm(algo).name!r} at {file}")
    with open(file, encoding="utf-8") as f:
        table = yaml.safe_load(f)
    if not isinstance(table, Mapping):
        raise ValueError(f"{file}: expected a mapping of env id -> hyperparameters, got {type(table).__name__}")
    for key in (env_id, *FALLBACK_KEYS):
        if key in table:
            entry = table[key]
            break
    else:
        raise KeyError(f"{file} has no entry for {env_id!r} nor a fallback {list(FALLBACK_KEYS)}; "
                       f"entries: {sorted(map(str, table))}")
    if not isinstance(entry, Mapping):
        raise ValueError(f"{file}: entry {key!r} must be a mapping, got {type(entry).__name__}")
    hyperparams = copy.deepcopy(dict(entry))  # YAML anchors share objects between entries
    for count in ("n_timesteps", "n_envs"):  # `!!float 2e5` reads as 200000.0; rl-zoo3 int()s it too
        value = hyperparams.get(count)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
                raise ValueError(f"{file} [{key}] {count} must be a whole number >= 1, got {value!r}")
            hyperparams[count] = int(value)
    for literal in LITERAL_KEYS:
        if isinstance(hyperparams.get(literal), str):
            parse_python_literal(hyperparams[literal], what=f"{file} [{key}] {literal}")
    return hyperparams


_TORCH_PREFIXES: dict[str, Any] = {
    "nn": torch.nn, "th.nn": torch.nn, "torch.nn": torch.nn,
    "optim": torch.optim, "th.optim": torch.optim, "torch.optim": torch.optim,
}


def _resolve_class_name(dotted: str, what: str) -> type:
    """``nn.ReLU`` / ``th.optim.Adam`` -> the class; only torch.nn modules and torch.optim optimizers."""
    prefix, _, attr = dotted.rpartition(".")
    module = _TORCH_PREFIXES.get(prefix)
    obj = getattr(module, attr, None) if module is not None else None
    if isinstance(obj, type) and (issubclass(obj, torch.nn.Module) or issubclass(obj, torch.optim.Optimizer)):
        return obj
    raise ValueError(f"{what}: {dotted!r} is not a torch.nn module or torch.optim optimizer class "
                     f"(write e.g. nn.ReLU, nn.Tanh or th.optim.Adam)")


def parse_python_literal(text: str, what: str = "value") -> Any:
    """Parse rl-zoo3's Python-literal strings without evaluating code.

    Accepts literals (numbers, strings, True/False/None, lists, tuples, dicts), ``dict(key=...)``
    calls, and torch class names (``nn.ReLU``, ``th.nn.Tanh``, ``th.optim.Adam``); anything else
    (other calls, names, attributes, operators) raises ``ValueError``. Example::

        parse_python_literal("dict(net_arch=dict(pi=[64, 64], vf=[64, 64]), activation_fn=nn.Tanh)")
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"{what}: cannot parse {text!r}: {exc.msg}") from None

    def dotted_name(node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            base = dotted_name(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None

    def convert(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List):
            return [convert(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(convert(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise ValueError(f"{what}: '**' unpacking is not allowed in {text!r}")
            return {convert(k): convert(v) for k, v in zip(node.keys, node.values, strict=True)}
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = convert(node.operand)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            if node.args or any(k.arg is None for k in node.keywords):
                raise ValueError(f"{what}: only dict(key=value, ...) is allowed, in {text!r}")
            return {k.arg: convert(k.value) for k in node.keywords}
        if isinstance(node, (ast.Attribute, ast.Name)):
            name = dotted_name(node)
            if name is not None:
                return _resolve_class_name(name, what)
        raise ValueError(f"{what}: {ast.unparse(node)!r} is not allowed in {text!r}: only literals, dict(...) "
                         f"and torch class names (nn.ReLU, th.optim.Adam) are")

    return convert(tree.body)


def _class_values(kwargs: dict[str, Any], what: str) -> dict[str, Any]:
    """In a real YAML mapping, ``activation_fn: nn.ReLU`` arrives as a string: resolve it."""
    out = dict(kwargs)
    for key in ("activation_fn", "optimizer_class"):
        if isinstance(out.get(key), str):
            out[key] = _resolve_class_name(out[key], f"{what}.{key}")
    return out


def _schedule(value: Any, key: str) -> Any:
    """``"lin_3e-4"`` -> a linear schedule from 3e-4 (start) to 0 (end), as rl-zoo3 builds it."""
    if not isinstance(value, str):
        return value
    kind, _, initial = value.partition("_")
    try:
        start = float(initial)
    except ValueError:
        start = None
    if kind != "lin" or start is None:
        raise ValueError(f"{key}: schedule {value!r} not understood; write a number or 'lin_<initial value>'")
    return LinearSchedule(start=start, end=0.0, end_fraction=1.0)


def vec_normalize_kwargs(hyperparams: Mapping[str, Any]) -> dict[str, Any] | None:
    """``VecNormalize`` keyword arguments from rl-zoo3's ``normalize`` key, or None when it is off.

    ``normalize: true`` -> ``{}`` (observations and rewards), a mapping or a ``"dict(norm_obs=True,
    norm_reward=False)"`` string -> those arguments; ``gamma`` is copied from the hyperparameters as
    rl-zoo3 does. The caller wraps its VecEnv (``VecNormalize(env, **kwargs)``) before
    :func:`make_model`.
    """
    value = hyperparams.get("normalize", False)
    if value is False or value is None:
        return None
    if value is True:
        kwargs: dict[str, Any] = {}
    elif isinstance(value, str):
        kwargs = parse_python_literal(value, what="normalize")
    elif isinstance(value, Mapping):
        kwargs = dict(value)
    else:
        raise ValueError(f"normalize must be a bool, a mapping or a 'dict(...)' string, got {value!r}")
    if not isinstance(kwargs, dict):
        raise ValueError(f"normalize must describe VecNormalize arguments, got {value!r}")
    if "gamma" in hyperparams and "gamma" not in kwargs:
        kwargs["gamma"] = hyperparams["gamma"]
    return kwargs


def algorithm_kwargs(algo: str, hyperparams: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Split rl-zoo3 hyperparameters into ``(policy, constructor kwargs)`` for ``algo``'s class.

    Removes :data:`ZOO_ONLY_KEYS`, parses ``policy_kwargs`` / ``replay_buffer_kwargs`` strings
    safely, turns ``"lin_X"`` schedules into linear schedules and ``train_freq`` lists into tuples.
    A key the class does not accept raises ``ValueError`` listing the ones it does. A dotted
    ``policy`` (``"mypkg.policies.MyPolicy"``) is imported, as rl-zoo3 does.
    """
    spec = get_algorithm(algo)
    hp = dict(hyperparams)
    policy = hp.get("policy", spec.policy)
    if isinstance(policy, str) and "." in policy:
        module_name, _, class_name = policy.rpartition(".")
        policy = getattr(importlib.import_module(module_name), class_name)
    kwargs = {k: v for k, v in hp.items() if k not in ZOO_ONLY_KEYS}
    for key in LITERAL_KEYS:
        if isinstance(kwargs.get(key), str):
            kwargs[key] = parse_python_literal(kwargs[key], what=key)
        if isinstance(kwargs.get(key), Mapping):
            kwargs[key] = _class_values(dict(kwargs[key]), key)
    for key in SCHEDULE_KEYS:
        if key in kwargs:
            kwargs[key] = _schedule(kwargs[key], key)
    if isinstance(kwargs.get("train_freq"), list):
        kwargs["train_freq"] = tuple(kwargs["train_freq"])
    accepted = set(inspect.signature(spec.cls.__init__).parameters) - {"self", "policy", "env", "_init_setup_model"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f"{spec.name} ({spec.cls.__name__}) does not accept hyperparameter(s) {unknown}; "
                         f"valid: {sorted(accepted)} plus rl-zoo3's {sorted(ZOO_ONLY_KEYS)}")
    return policy, kwargs


def _env_mask_options(env: Any) -> dict[str, Any]:
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


def make_model(algo: str, env: Any, hyperparams: Mapping[str, Any], seed: int = 0, device: str = "cpu",
               tensorboard_log: str | None = None, verbose: int = 0) -> BaseAlgorithm:
    """Build ``algo``'s SB3 model on ``env`` from rl-zoo3 hyperparameters (see :func:`load_hyperparams`).

    rl-zoo3-only keys (``n_timesteps``, ``n_envs``, ``normalize``, ``frame_stack``, ``env_wrapper``,
    ``callback``, ``env_kwargs``, ...) are dropped: the caller builds the env with ``n_envs`` (and
    ``env_kwargs``), wraps it with :func:`vec_normalize_kwargs` if asked, and calls
    ``model.learn(hyperparams["n_timesteps"])``. ``policy`` (default :attr:`AlgoSpec.policy`) is the
    policy; everything else goes to the constructor. The env's mask options go through
    :func:`check_compatibility` (a recurrent algorithm on a masked DynaLay env raises).
    """
    spec = get_algorithm(algo)
    check_compatibility(spec.name, _env_mask_options(env))
    policy, kwargs = algorithm_kwargs(spec.name, hyperparams)
    return spec.cls(policy, env, seed=seed, device=device, tensorboard_log=tensorboard_log, verbose=verbose,
                    **kwargs)


def check_compatibility(algo: str, env_kwargs: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` saying why ``algo`` cannot train on an env built with ``env_kwargs``.

    * A recurrent policy (``ppo_lstm``) with action masks (``mask_repeats=True`` or a
      ``compute_budget``): sb3-contrib has no recurrent maskable PPO.
    * Other algorithms without mask support may run with masks: the env executes a masked action
      as EXIT and flags it (``info["masked_action"]``), so the agent learns the rule from its
      reward. A ``UserWarning`` says so.
    * ``maskable_ppo`` without any mask option is allowed: every action is then allowed (masks are
      all true) and it behaves as ``ppo``.
    """
    spec = get_algorithm(algo)
    if not isinstance(env_kwargs, Mapping):
        raise TypeError(f"env_kwargs must be a mapping, got {type(env_kwargs).__name__}")
    reasons = []
    if env_kwargs.get("mask_repeats"):
        reasons.append("mask_repeats=True")
    if env_kwargs.get("compute_budget") is not None:
        reasons.append(f"compute_budget={env_kwargs['compute_budget']!r}")
    if not reasons or spec.supports_action_masks:
        return
    if spec.recurrent:
        raise ValueError(f"{spec.name} ({spec.cls.__name__}) cannot use action masks ({', '.join(reasons)}): "
                         "sb3-contrib has no recurrent maskable PPO; use maskable_ppo or drop the masks")
    warnings.warn(f"{spec.name} ignores action masks ({', '.join(reasons)}): a masked action is executed as "
                  "EXIT (info['masked_action']); use maskable_ppo to respect them", UserWarning, stacklevel=2)


__all__ = [
    "ALGORITHMS", "ALIASES", "AlgoSpec", "FALLBACK_KEYS", "HYPERPARAMS_DIR", "ZOO_ONLY_KEYS", "algorithm_kwargs",
    "available_algorithms", "check_compatibility", "get_algorithm", "hyperparams_file", "load_hyperparams",
    "make_model", "parse_python_literal", "vec_normalize_kwargs",
]
