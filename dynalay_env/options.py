"""Every option of the DynaLay env, once: :class:`EnvOptions`.

Each option is one field of a frozen dataclass: its type, its default, its valid values and a
one-line doc (in the field's metadata). ``make_core``, :class:`~dynalay_env.core.DynaLayCore`,
``DynaLayEnv``, ``DynaLayVectorEnv`` and the registered ``gym.make`` ids all take these options, and
the Arguments table of ``DynaLayEnv``'s docstring is :meth:`EnvOptions.option_table` (a test
compares them; paste its output into the docstring after changing an option).

The reward's parameters (``lambda_compute``, ``mu_redundant``, ``correct_reward``, ``wrong_reward``,
``shaping``, ``shaping_gamma``) are options too; their defaults are those of
:class:`~dynalay_env.rewards.RewardParams`. ``reward_kwargs={...}`` is accepted as another way to pass
them (the top-level keyword wins where both are given).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dynalay_env.cotrain import DEFAULT_COTRAIN_EVERY, DEFAULT_COTRAIN_LR, check_options
from dynalay_env.datasets import DEFAULT_DATASET, SPLITS, Dataset
from dynalay_env.device import parse_device
from dynalay_env.latency import LatencyTable
from dynalay_env.model import FPIModel
from dynalay_env.rewards import DEFAULT_REWARD, SHAPINGS, Reward, RewardParams, make_reward

#: Every observation group; :data:`DEFAULT_OBSERVATION_GROUPS` is the env's default observation.
OBSERVATION_GROUPS: tuple[str, ...] = ("hidden", "head", "progress", "last_action", "solver", "history", "router")
#: The groups only a model with a router (expert layers, :class:`~dynalay_env.model.ExpertModel`) can fill.
ROUTER_GROUPS: tuple[str, ...] = ("router",)
#: The default observation: every group but ``history``, which is opt-in until a study shows that it
#: helps (docs/design.md, Observations), and ``router``, which only expert models have.
DEFAULT_OBSERVATION_GROUPS: tuple[str, ...] = ("hidden", "head", "progress", "last_action", "solver")
SAMPLE_MODES: tuple[str, ...] = ("random", "sequential")
MODES: tuple[str, ...] = ("frozen", "cotrain")
#: What the env's compute counts (docs/design.md, Compute).
COSTS: tuple[str, ...] = ("flops", "latency")

#: The reward parameters among the options (the fields of :class:`~dynalay_env.rewards.RewardParams`).
REWARD_PARAM_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RewardParams))
#: A keyword the env accepts besides the fields: the reward parameters as one mapping.
REWARD_KWARGS = "reward_kwargs"
#: Options of the vector faces only (``gym.make_vec(id, num_envs=N, autoreset_mode=...)``).
VECTOR_ONLY_OPTIONS: tuple[str, ...] = ("autoreset_mode", "return_tensors")
#: Options of the ``agent_train`` split only (how much of it episodes see, and how): a ``ValueError``
#: for any other split; a run's evaluation on ``val``/``test`` drops them (``agents.runs.env_options``).
AGENT_TRAIN_OPTIONS: tuple[str, ...] = ("agent_train_size", "augment")
#: Options that can change on a live core (the others size its buffers or spaces).
SETTABLE_OPTIONS: tuple[str, ...] = ("mask_repeats", "compute_budget", "decision_flops")

_REWARD_DEFAULTS = RewardParams()


def _option(default: Any, doc: str, *, choices: Sequence[Any] | None = None, shown: str | None = None) -> Any:
    """A field with its one-line ``doc``, its valid ``choices`` (if a closed set) and how the table
    shows its default (``shown``; else the default's repr)."""
    return field(default=default, metadata={"doc": doc, "choices": None if choices is None else tuple(choices),
                                            "shown": shown})


def _reward_option(name: str, doc: str, **kwargs: Any) -> Any:
    return _option(getattr(_REWARD_DEFAULTS, name), doc, **kwargs)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_decision_flops(value: Any) -> None:
    """``ValueError`` unless ``value`` is a finite number >= 0 (FLOPs per decision of the policy)."""
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"decision_flops must be a finite number >= 0 (FLOPs per decision of the policy), "
                         f"got {value!r}")


def check_compute_budget(value: Any) -> None:
    """``ValueError`` unless ``value`` is None or a number > 0 (normalised compute)."""
    if value is not None and (not _is_number(value) or not value > 0):
        raise ValueError(f"compute_budget must be > 0 (normalised compute) or None, got {value}")


def unexpected_keyword(names: Sequence[str], owner: str = "DynaLay env") -> TypeError:
    """The ``TypeError`` for unknown env options, in Python's own wording (``... got an unexpected
    keyword argument 'NAME'``): libraries parse it (TorchRL retries without ``frameskip`` when it
    reads it). The message goes on to list the valid options."""
    first, rest = names[0], list(names[1:])
    more = f" (and {', '.join(map(repr, rest))})" if rest else ""
    hint = ""
    if first in VECTOR_ONLY_OPTIONS:
        hint = f"; {first!r} is an option of the vector env: gym.make_vec(id, num_envs=N, {first}=...)"
        if first == "autoreset_mode":  # Gymnasium's own vector envs take it too
            hint += " (or vector_kwargs={'autoreset_mode': ...} with vectorization_mode='sync' or 'async')"
    return TypeError(f"{owner} got an unexpected keyword argument {first!r}{more}{hint}; valid options: "
                     f"{', '.join(sorted(EnvOptions.names()))}")


@dataclass(frozen=True)
class EnvOptions:
    """Every option of the DynaLay env, once: type, default, valid values and a one-line doc
    (``dataclasses.fields(EnvOptions)[i].metadata["doc"]``). Validated once, when built.

    Build it with keywords (``EnvOptions(max_steps=3)``), from a mapping that may hold
    ``reward_kwargs`` (:meth:`from_kwargs`, what ``gym.make`` passes), or from ``KEY=VALUE`` strings
    (:meth:`parse_cli`). :meth:`as_kwargs` gives back what ``gym.make`` and ``make_core`` accept.
    """

    dataset: str | Dataset = _option(
        DEFAULT_DATASET, "registered dataset name (``dynalay_env.datasets.list_datasets()``) or a ``Dataset``")
    model: FPIModel | str | os.PathLike | None = _option(
        None, "checkpoint path, ``FPIModel`` object, or None for the default model (user cache, else shipped, "
              "else pre-trained on first use)")
    data_root: str | os.PathLike | None = _option(
        None, "folder of local dataset files (mnist, fashion_mnist, cifar10)")
    split: str = _option("agent_train", "the split episodes are drawn from", choices=SPLITS)
    sample_mode: str = _option(
        "random", "how episodes pick examples: seeded at random, or each once per pass in order", choices=SAMPLE_MODES)
    agent_train_size: int | None = _option(
        None, "``split=\"agent_train\"`` only: episodes draw from its first N examples in a fixed permutation "
              "(the same in every process: ``dynalay_env.sampling.subset_indices``; ``info[\"example\"]`` indexes "
              "that subset, ``core.example_ids`` maps it to the split); None: all of it")
    augment: bool = _option(
        False, "``split=\"agent_train\"`` only, image inputs ``[C, H, W]``: each episode's input is a fresh random "
               "shift, rotation and elastic distortion of its image (``dynalay_env.augment``), seeded by the slot's "
               "seed; labels unchanged, the main model frozen")
    max_steps: int = _option(4, "layers applied before a forced exit (>= 1)")
    reward: str | Callable[..., Any] | Reward = _option(
        DEFAULT_REWARD, "reward name (``dynalay_env.rewards.list_rewards()``) or callable; its parameters are the "
                 "options below or ``reward_kwargs={...}``")
    lambda_compute: float = _reward_option("lambda_compute", "price of one unit of normalised compute (>= 0)")
    mu_redundant: float = _reward_option("mu_redundant", "penalty for re-applying the layer just applied (>= 0)")
    correct_reward: float = _reward_option("correct_reward", "terminal reward of a right answer")
    wrong_reward: float = _reward_option("wrong_reward", "terminal reward of a wrong answer")
    shaping: str | None = _reward_option(
        "shaping", "potential-based shaping (``confidence``: the potential is the head's probability of the label)",
        choices=SHAPINGS)
    shaping_gamma: float = _reward_option(
        "shaping_gamma", "discount of the shaping term, in [0, 1] (the agent's own discount keeps the optimal "
                         "policy)")
    observation_groups: tuple[str, ...] = _option(
        DEFAULT_OBSERVATION_GROUPS, f"subset of ``{', '.join(OBSERVATION_GROUPS)}`` (``router``: models with a "
                                    f"router only; its FLOPs are charged at every visited state)",
        shown="all but ``history`` and ``router``")
    mask_repeats: bool = _option(False, "forbid re-applying the layer just applied")
    compute_budget: float | None = _option(
        None, "forbid layers that could exceed this normalised compute; the worst case counts ``max_iter`` solver "
              "iterations per layer, so with a model of ``solver=\"anderson\"`` its mixing work can take an "
              "episode past the budget")
    decision_flops: float = _option(
        0.0, "FLOPs charged per decision of the policy (>= 0), in the reward only: each step (EXIT included, not "
             "the forced exit at ``max_steps``) adds ``decision_flops`` over the full-depth model's FLOPs to the reward's compute (under either "
             "``cost``); "
             "``info[\"compute\"]`` stays env-only. Settable on a live env (``core.set_option``, ``set_attr``)")
    cost: str = _option(
        "flops", "what compute counts: ``flops`` (multiplications executed: exact, the same on every machine) or "
                 "``latency`` (seconds from a table measured on this device by ``dynalay profile``: "
                 "table-estimated); ``info[\"flops\"]`` stays the FLOPs executed", choices=COSTS)
    latency_table: str | os.PathLike | LatencyTable | None = _option(
        None, "``cost=\"latency\"`` only: a ``LatencyTable`` or the JSON file ``dynalay profile`` wrote; None: the "
              "table beside the model's checkpoint for this device and thread count")
    device: str | torch.device = _option("cpu", "``cpu``, ``cuda`` or ``cuda:N``")
    mode: str = _option(
        "frozen", "the main model is fixed (``frozen``) or keeps learning on the agent's paths (``cotrain``)",
        choices=MODES)
    cotrain_lr: float | None = _option(
        None, "``cotrain`` only: Adam step size of the main model (> 0)", shown=f"None ({DEFAULT_COTRAIN_LR:g})")
    cotrain_every: int | None = _option(
        None, "``cotrain`` only: M, finished episodes per main-model optimiser step (>= 1)",
        shown=f"None ({DEFAULT_COTRAIN_EVERY})")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata["choices"]
            value = getattr(self, f.name)
            if choices is not None and value not in choices:
                raise ValueError(f"unknown {f.name} {value!r}; valid: {', '.join(map(repr, choices))}")
        if not isinstance(self.dataset, (str, Dataset)):
            raise ValueError(f"dataset must be a registered name or a Dataset, got {type(self.dataset).__name__}")
        if not _is_int(self.max_steps) or self.max_steps < 1:
            raise ValueError(f"max_steps must be an integer >= 1, got {self.max_steps!r}")
        object.__setattr__(self, "max_steps", int(self.max_steps))
        self._check_agent_train_options()
        groups = (self.observation_groups,) if isinstance(self.observation_groups, str) else self.observation_groups
        groups = tuple(groups)
        for group in groups:
            if group not in OBSERVATION_GROUPS:
                raise ValueError(f"unknown observation group {group!r}; valid: "
                                 f"{', '.join(map(repr, OBSERVATION_GROUPS))}")
        if not groups:
            raise ValueError(f"observation_groups is empty; choose from {', '.join(OBSERVATION_GROUPS)}")
        # One order for the observation, whatever order they were named in.
        object.__setattr__(self, "observation_groups", tuple(g for g in OBSERVATION_GROUPS if g in groups))
        object.__setattr__(self, "mask_repeats", bool(self.mask_repeats))
        check_compute_budget(self.compute_budget)
        check_decision_flops(self.decision_flops)
        object.__setattr__(self, "decision_flops", float(self.decision_flops))
        parse_device(self.device)
        if self.latency_table is not None:
            if self.cost != "latency":
                raise ValueError(f"latency_table only applies to cost='latency' (this env has cost={self.cost!r})")
            if not isinstance(self.latency_table, (str, os.PathLike, LatencyTable)):
                raise ValueError(f"latency_table must be a LatencyTable or the path of its JSON file, got "
                                 f"{type(self.latency_table).__name__}")
        if self.mode != "cotrain":
            given = [name for name in ("cotrain_lr", "cotrain_every") if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{' and '.join(given)} only {'applies' if len(given) == 1 else 'apply'} to "
                                 f"mode='cotrain' (this env has mode={self.mode!r})")
        check_options(DEFAULT_COTRAIN_LR if self.cotrain_lr is None else self.cotrain_lr,
                      DEFAULT_COTRAIN_EVERY if self.cotrain_every is None else self.cotrain_every)
        self.make_reward()  # checks the reward's name and its parameters

    def _check_agent_train_options(self) -> None:
        """``agent_train_size`` and ``augment``: their types, and only on ``split="agent_train"``."""
        size = self.agent_train_size
        if size is not None:
            if not _is_int(size) or size < 1:
                raise ValueError(f"agent_train_size must be an integer >= 1 (examples of agent_train) or None (all "
                                 f"of them), got {size!r}")
            object.__setattr__(self, "agent_train_size", int(size))
        if not isinstance(self.augment, (bool, np.bool_)):
            raise ValueError(f"augment must be True or False, got {self.augment!r}")
        object.__setattr__(self, "augment", bool(self.augment))
        given = [name for name in AGENT_TRAIN_OPTIONS if getattr(self, name) not in (None, False)]
        if given and self.split != "agent_train":
            raise ValueError(f"{' and '.join(given)} only {'applies' if len(given) == 1 else 'apply'} to "
                             f"split='agent_train' (val and test are never subsampled or augmented; this env has "
                             f"split={self.split!r})")
        if self.augment and self.mode != "frozen":
            raise ValueError(f"augment only applies to mode='frozen' (the co-trainer learns from the stored "
                             f"inputs, not the augmented ones; this env has mode={self.mode!r})")

    # ---- building ----------------------------------------------------------------------------------

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of option ``name`` (a ``KeyError`` names the options for an unknown one)."""
        if name not in _DEFAULTS:
            raise KeyError(f"unknown env option {name!r}; options: {', '.join(_DEFAULTS)}")
        return _DEFAULTS[name]

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every keyword the env accepts for its options: the fields and ``reward_kwargs``."""
        return (*(f.name for f in dataclasses.fields(cls)), REWARD_KWARGS)

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], owner: str = "DynaLay env") -> EnvOptions:
        """Options from keywords, as ``gym.make`` passes them; ``reward_kwargs`` (a mapping of reward
        parameters) is folded into the reward fields, a top-level keyword winning. An unknown keyword
        raises ``TypeError("<owner> got an unexpected keyword argument 'x' ...")`` listing the valid
        names."""
        return cls()._with(dict(kwargs), owner)

    @classmethod
    def resolve(cls, options: EnvOptions | None, kwargs: Mapping[str, Any], owner: str = "DynaLay env") -> EnvOptions:
        """What a face of the env was given: ``options`` changed by ``kwargs`` (``options`` None: the
        defaults). A ``TypeError`` when ``options`` is not an :class:`EnvOptions`."""
        if options is None:
            return cls.from_kwargs(kwargs, owner)
        if not isinstance(options, cls):
            raise TypeError(f"options must be an EnvOptions (or pass the options as keywords), got "
                            f"{type(options).__name__}")
        return options._with(dict(kwargs), owner) if kwargs else options

    def replace(self, **changes: Any) -> EnvOptions:
        """A copy with ``changes`` (the keywords of :meth:`from_kwargs`), validated again."""
        return self._with(changes, "EnvOptions.replace()")

    def _with(self, changes: dict[str, Any], owner: str) -> EnvOptions:
        unknown = [name for name in changes if name not in self.names()]
        if unknown:
            raise unexpected_keyword(unknown, owner)
        reward_kwargs = dict(changes.pop(REWARD_KWARGS, None) or {})
        bad = [name for name in reward_kwargs if name not in REWARD_PARAM_NAMES]
        if bad:
            make_reward(DEFAULT_REWARD, **{name: reward_kwargs[name] for name in bad})  # its ValueError names the valid ones
        return dataclasses.replace(self, **{**reward_kwargs, **changes})

    def as_kwargs(self, *, non_default: bool = False) -> dict[str, Any]:
        """The options as keywords for ``gym.make`` / ``make_core`` (every field, or only those that
        differ from the default with ``non_default=True``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if non_default:
            out = {name: value for name, value in out.items() if not _same(value, _DEFAULTS[name])}
        return out

    @classmethod
    def parse_cli(cls, items: Sequence[str]) -> dict[str, Any]:
        """``["max_steps=3", "mask_repeats=true", "observation_groups=head,progress"]`` -> typed values,
        read by each option's type (``none``/``null`` for None, ``true``/``false`` for booleans, commas
        for the observation groups, JSON for ``reward_kwargs``). Unknown names raise ``TypeError`` as
        :meth:`from_kwargs` does; a value of the wrong type raises ``ValueError``."""
        hints = cls.types()
        out: dict[str, Any] = {}
        for item in items:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"env option {item!r} is not KEY=VALUE")
            if key not in hints:
                raise unexpected_keyword([key])
            out[key] = _parse_value(key, text.strip(), hints[key])
        return out

    @classmethod
    def types(cls) -> dict[str, Any]:
        """The type annotation of every keyword of :meth:`names` (resolved)."""
        hints = typing.get_type_hints(cls)
        return {**{name: hints[name] for name in cls.names() if name in hints},
                REWARD_KWARGS: dict[str, Any] | None}

    @classmethod
    def option_table(cls) -> str:
        """The Arguments table of ``DynaLayEnv``'s docstring (markdown), one row per field."""
        rows = ["| Argument | Default | Meaning |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            shown = f.metadata["shown"] or _shown(f.default)
            doc = f.metadata["doc"]
            if f.metadata["choices"] is not None:
                doc = f"{doc}; one of {', '.join(_shown(c) for c in f.metadata['choices'])}"
            rows.append(f"| ``{f.name}`` | {shown} | {doc} |")
        return "\n".join(rows)

    # ---- derived -----------------------------------------------------------------------------------

    def reward_params(self) -> RewardParams:
        """The reward's parameters (those of a :class:`~dynalay_env.rewards.Reward` object given as
        ``reward``, when no parameter is set here)."""
        given = self.reward_kwargs()
        if isinstance(self.reward, Reward) and not given:
            return self.reward.params
        return RewardParams(**{name: getattr(self, name) for name in REWARD_PARAM_NAMES})

    def reward_kwargs(self) -> dict[str, Any]:
        """The reward parameters that differ from their defaults."""
        return {name: getattr(self, name) for name in REWARD_PARAM_NAMES
                if not _same(getattr(self, name), _DEFAULTS[name])}

    def make_reward(self) -> Reward:
        """The bound :class:`~dynalay_env.rewards.Reward` these options describe."""
        return make_reward(self.reward, **self.reward_kwargs())


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):  # an object whose == is not one bool: not the default
        return False


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return f'``"{value}"``'
    if isinstance(value, float) and value.is_integer() and value == 0:
        return "0"
    return str(value)


def _parse_value(key: str, text: str, hint: Any) -> Any:
    """``text`` read as a value of type ``hint`` (see :meth:`EnvOptions.parse_cli`)."""
    args = set(typing.get_args(hint)) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else {hint}
    lowered = text.lower()
    if type(None) in args and lowered in ("none", "null", ""):
        return None
    if key == REWARD_KWARGS:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"env option {key}: expected a JSON object, got {text!r} ({exc})") from None
        if not isinstance(value, dict):
            raise ValueError(f"env option {key}: expected a JSON object, got {text!r}")
        return value
    if bool in args:
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"env option {key}: expected true or false, got {text!r}")
    if int in args:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"env option {key}: expected an integer, got {text!r}") from None
    if float in args:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"env option {key}: expected a number, got {text!r}") from None
    if typing.get_origin(hint) is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    return text


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(EnvOptions)}
