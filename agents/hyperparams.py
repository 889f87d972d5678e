"""The rl-zoo3 hyperparameter files of the algorithms, read and turned into constructor arguments.

Hyperparameters live in ``agents/hyperparams/<name>.yml``, package data of ``agents`` (shipped in the
wheel and read with :mod:`importlib.resources`), in rl-zoo3's format (one entry per env id:
``n_timesteps``, ``policy``, ``n_envs``, ``normalize``, ``policy_kwargs`` as a string such as
``"dict(net_arch=[64, 64])"``, and the algorithm's own constructor arguments), so the same file drives
the project CLI (:func:`load_hyperparams` + :func:`agents.sb3_backend.make_model`) and
``python -m rl_zoo3.train --gym-packages dynalay_env --conf-file agents/hyperparams/<name>.yml``
(``pip install -e ".[zoo]"``). Files are named by the algorithm's canonical name
(:func:`agents.algorithms.get_algorithm` resolves aliases).
"""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.resources
import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from stable_baselines3.common.utils import LinearSchedule

from agents.interface import AlgoSpec

#: Folder of the rl-zoo3 style hyperparameter files (``<algo>.yml``): package data of ``agents``,
#: found with :mod:`importlib.resources`, so it is there in a source checkout and in an installed
#: wheel alike. ``$DYNALAY_HYPERPARAMS_DIR`` overrides it.
HYPERPARAMS_DIR = Path(str(importlib.resources.files("agents").joinpath("hyperparams")))
HYPERPARAMS_DIR_ENV = "DYNALAY_HYPERPARAMS_DIR"

#: Entries tried, in order, when a file has no entry for the requested env id: rl-zoo3's own
#: fallback (``default``), then the generic DynaLay id.
FALLBACK_KEYS: tuple[str, ...] = ("default", "DynaLay-v0")

#: rl-zoo3 keys that configure the experiment (env, wrappers, budget), not the algorithm's
#: constructor: :func:`agents.sb3_backend.make_model` removes them. ``policy`` becomes the first positional argument.
ZOO_ONLY_KEYS: frozenset[str] = frozenset({
    "n_timesteps", "n_envs", "normalize", "policy", "frame_stack", "env_wrapper", "vec_env_wrapper",
    "callback", "env_kwargs", "monitor_kwargs", "noise_type", "noise_std",
})

#: Keys rl-zoo3 turns into linear schedules when given as ``"lin_<initial value>"``.
SCHEDULE_KEYS: tuple[str, ...] = ("learning_rate", "clip_range", "clip_range_vf", "delta_std")

#: Keys whose string values rl-zoo3 evaluates as Python (``"dict(net_arch=[64, 64])"``); here they
#: go through :func:`parse_python_literal`, which evaluates nothing.
LITERAL_KEYS: tuple[str, ...] = ("policy_kwargs", "replay_buffer_kwargs")


def hyperparams_file(name: str, path: str | os.PathLike | None = None) -> Path:
    """The YAML file :func:`load_hyperparams` reads: ``path`` if it is a file, ``path/<name>.yml`` if
    it is a folder, else ``$DYNALAY_HYPERPARAMS_DIR/<name>.yml`` or the packaged
    ``agents/hyperparams/<name>.yml`` (:data:`HYPERPARAMS_DIR`)."""
    if path is None:
        folder = Path(os.environ.get(HYPERPARAMS_DIR_ENV) or HYPERPARAMS_DIR)
        return folder / f"{name}.yml"
    path = Path(path)
    return path / f"{name}.yml" if path.is_dir() else path


def load_hyperparams(name: str, env_id: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read the rl-zoo3 hyperparameters of the algorithm ``name`` (canonical) for ``env_id``.

    The file (see :func:`hyperparams_file`) maps env ids to entries. The entry is ``env_id``'s own;
    if the file has none, ``default`` (rl-zoo3's fallback), then ``DynaLay-v0`` (the generic id, so
    ``DynaLay-MNIST-v0`` or ``DynaLay-CIFAR10-v0`` get sensible values). A missing file or entry
    raises with the file path and the entries it has.

    Returns a fresh dict in rl-zoo3's form: ``n_timesteps``, ``policy``, ``n_envs``, ``normalize``
    and constructor arguments, with strings kept as written (``policy_kwargs: "dict(...)"``,
    ``learning_rate: "lin_3e-4"``) so the dict can be saved and read by rl-zoo3 again;
    :func:`algorithm_kwargs` converts them. ``policy_kwargs`` strings are checked here (parsed, never
    evaluated) so a bad file fails at load time.
    """
    file = hyperparams_file(name, path)
    if not file.is_file():
        raise FileNotFoundError(f"no hyperparameter file for {name!r} at {file}")
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


def resolve_class_name(dotted: str, what: str) -> type:
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
                return resolve_class_name(name, what)
        raise ValueError(f"{what}: {ast.unparse(node)!r} is not allowed in {text!r}: only literals, dict(...) "
                         f"and torch class names (nn.ReLU, th.optim.Adam) are")

    return convert(tree.body)


def class_values(kwargs: dict[str, Any], what: str) -> dict[str, Any]:
    """In a real YAML mapping, ``activation_fn: nn.ReLU`` arrives as a string: resolve it."""
    out = dict(kwargs)
    for key in ("activation_fn", "optimizer_class"):
        if isinstance(out.get(key), str):
            out[key] = resolve_class_name(out[key], f"{what}.{key}")
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
    :func:`agents.sb3_backend.make_model`.
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


def algorithm_kwargs(spec: AlgoSpec, hyperparams: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Split rl-zoo3 hyperparameters into ``(policy, constructor kwargs)`` for ``spec.cls``.

    Removes :data:`ZOO_ONLY_KEYS`, parses ``policy_kwargs`` / ``replay_buffer_kwargs`` strings
    safely, turns ``"lin_X"`` schedules into linear schedules and ``train_freq`` lists into tuples.
    A key the class does not accept raises ``ValueError`` listing the ones it does. A dotted
    ``policy`` (``"mypkg.policies.MyPolicy"``) is imported, as rl-zoo3 does.
    """
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
            kwargs[key] = class_values(dict(kwargs[key]), key)
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


__all__ = ["FALLBACK_KEYS", "HYPERPARAMS_DIR", "HYPERPARAMS_DIR_ENV", "LITERAL_KEYS", "SCHEDULE_KEYS", "ZOO_ONLY_KEYS",
           "algorithm_kwargs", "class_values", "hyperparams_file", "load_hyperparams", "parse_python_literal",
           "resolve_class_name", "vec_normalize_kwargs"]
