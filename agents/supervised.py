"""Learned non-RL baselines: ``value_exit``, ``bc`` and ``dagger``, a second backend of the registry.

They answer "is RL, the observation or the model the bottleneck?": each learns from the same
observations as the RL agents, by supervised learning, in seconds. Each is an
:class:`agents.interface.Agent` (``learn``, ``save``, ``predict(obs, state, episode_start,
action_masks)``, ``decision_flops()``) built and loaded by :data:`SUPERVISED_BACKEND`, so
``train_agent.py train/evaluate/sweep``, :func:`agents.training.train` / ``load_run`` and
:class:`agents.inference.AdaptiveClassifier` treat them like the SB3 algorithms. Each **trains on
``agent_train``** (the training env's split), **chooses on ``val``** (an operating threshold or a
snapshot of the network, by val accuracy minus ``lambda_compute`` x val mean compute, decisions
counted), and is reported on ``test`` by ``evaluate``.

* :class:`ValueExit` walks the full-depth order (:func:`agents.curves.full_depth_order`) and
  regresses, with a small MLP on the observation, the **value of continuing** at every depth d:
  ``max over d' >= d of correct(d') - correct(d)`` (the best correctness still reachable further
  along the order minus the correctness now; 1 exactly where some later prefix is right and the
  current one is wrong). We chose it over "correct at full depth minus correct now" because a
  perfect predictor of it, thresholded at 0.5, is the prefix oracle (the bound of exit-only
  policies), while the full-depth target calls a state worthless when a later depth would fix it
  and the last one breaks it again. Actions: the next layer of the order, or EXIT when the
  predicted gain is below ``threshold``. One fitted model gives a whole curve over thresholds
  (:meth:`ValueExit.exit_curve`); ``threshold: null`` picks it on val.
* :class:`BC` imitates the **cost-regularised oracle**: from a state, the first action of the
  path minimising ``(wrong answer) + lambda_compute x compute`` (compute in the env's normalised
  units, the same as ``info["compute"]``), found by exhaustive search from that state
  (:class:`OracleTable`: every state is a node of its example's path tree, so one search from the
  reset states through :func:`dynalay_env.paths.enumerate_paths`, the env's one path-cost
  function, batched over all examples per path, covers them all). States are
  visited by the oracle itself.
* :class:`DAgger` labels the states that a mixture of oracle (probability ``beta ** i`` in iteration
  i, so iteration 0 is BC) and the learned policy visits, aggregates all labelled states and refits
  after each iteration; the best iteration on val is kept.

``bc`` and ``dagger`` use the network of PPO's policy: the actor MLP of the PPO hyperparameters for
the env (``agents/hyperparams/ppo.yml`` through :func:`agents.hyperparams.load_hyperparams`; ``net_arch``
and ``activation_fn``) and a linear action head. All three honour action masks (a masked action
becomes EXIT; the oracle's targets respect the masks of the state; training logits are masked).
The path search grows as ``K^max_steps``; more than :data:`MAX_SEARCH_PATHS` paths is refused.

``n_timesteps`` counts *states* the learner collects and labels (one observation each, as one env
step is for RL). The learners need the frozen main model (no co-training). A resumed run keeps the
network, its step count, its seed and random state (and ``dagger`` its iteration) and collects
the remaining states afresh (the labelled data is not in a checkpoint). The callbacks (checkpoints,
validation) run for a collection round only after the fit on it, so every checkpoint holds a fitted
network. ``value_exit`` walks the order only as far as the env's masks (``compute_budget``) let
each example go: its targets and curve count only reachable depths. The progress bar is not shown
(training takes seconds).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.utils import configure_logger

from agents.callbacks import core_of
from agents.curves import exit_cost, full_depth_order, record_core
from agents.evaluate import run_policy
from agents.hyperparams import class_values, load_hyperparams, parse_python_literal, resolve_class_name
from agents.interface import AlgoSpec
from agents.sb3_backend import construct, sb3_decision_flops
from dynalay_env import ENV_IDS
from dynalay_env.atomic import atomic_path
from dynalay_env.core import DynaLayCore
from dynalay_env.model import config_hash, weights_hash
from dynalay_env.options import AGENT_TRAIN_OPTIONS
from dynalay_env.paths import enumerate_paths

#: The largest exhaustive search (paths of length 0..max_steps from one state) :class:`BC` and
#: :class:`DAgger` run; K layers and ``max_steps`` give ``1 + K + ... + K^max_steps`` paths.
MAX_SEARCH_PATHS = 5_000
#: Names of the learners (the registry's ``backend = SUPERVISED_BACKEND`` algorithms).
LEARNERS: tuple[str, ...] = ("value_exit", "bc", "dagger")


# ---- the cost-regularised oracle ----------------------------------------------------------------


def search_path_count(num_layers: int, steps: int, allow_repeats: bool = True) -> int:
    """Paths of length ``0..steps`` the search evaluates (``allow_repeats=False``: no layer twice in
    a row, as ``mask_repeats`` allows)."""
    branching = [num_layers] + [num_layers if allow_repeats else num_layers - 1] * max(steps - 1, 0)
    total, width = 1, 1
    for b in branching[:steps]:
        width *= b
        total += width
    return total


def check_search_size(num_layers: int, max_steps: int, allow_repeats: bool = True, algo: str = "bc") -> int:
    """The number of paths one search from a reset state evaluates; ``ValueError`` when it exceeds
    :data:`MAX_SEARCH_PATHS`, naming the limit and the largest ``max_steps`` within it."""
    count = search_path_count(num_layers, max_steps, allow_repeats)
    if count > MAX_SEARCH_PATHS:
        fits = max((s for s in range(1, max_steps) if search_path_count(num_layers, s, allow_repeats)
                    <= MAX_SEARCH_PATHS), default=0)
        raise ValueError(f"{algo}: max_steps={max_steps} with {num_layers} layers means {count:,} paths per "
                         f"exhaustive oracle search, above the limit MAX_SEARCH_PATHS={MAX_SEARCH_PATHS:,} "
                         f"(agents.supervised); use max_steps <= {fits}")
    return count


#: The searched path tables of the last search per split name: ``split -> (key, [table per chunk])``,
#: the key being the model's weights and config hashes, the dataset, ``max_steps``, the masks and the
#: chunking. The search does not depend on lambda_compute or the seed, so seeds and sweep trials on
#: the same model share it; one entry per split bounds the memory to one search of each split.
_SEARCHES: dict[str, tuple[tuple[Any, ...], list[Any]]] = {}


def _search_key(core: DynaLayCore, chunk: int) -> tuple[Any, ...]:
    """What a search of ``core``'s split depends on: the model by content (weights and config hashes,
    so equal models share it whatever their identity), the dataset, ``max_steps``, the masks, the chunks
    and the cost table charged (``core.costs``: FLOPs or a latency table)."""
    model = core.model
    weights = weights_hash(model) if isinstance(model, torch.nn.Module) else id(model)
    config = config_hash(model.config) if hasattr(model, "config") else None
    return (weights, config, getattr(core.dataset, "fingerprint", None), core.split, core.num_examples,
            core.max_steps, core.mask_repeats, chunk, core.costs)


def _searched(core: DynaLayCore, chunk: int) -> list[Any]:
    """:func:`dynalay_env.paths.enumerate_paths` over ``core``'s split in chunks of ``chunk``
    examples (one table each), cached per split (a frozen model: the learners refuse co-training)."""
    key = _search_key(core, chunk)
    cached = _SEARCHES.get(core.split)
    if cached is None or cached[0] != key:
        _SEARCHES.pop(core.split, None)  # free the old search before running the new one
        tables = [enumerate_paths(core.model, core.x[s:s + chunk], core.y[s:s + chunk], core.max_steps,
                                  allow_repeats=not core.mask_repeats, costs=core.costs)
                  for s in range(0, core.num_examples, chunk)]
        _SEARCHES[core.split] = cached = (key, tables)
    return cached[1]


class OracleTable:
    """The cost-regularised oracle of every state an episode can reach, for every example of a split.

    Every state an episode visits is a node of the path tree of its example: the path prefix it
    applied. One exhaustive search from the reset states (:func:`dynalay_env.paths.enumerate_paths`,
    the env's one path-cost function, batched: one solve per path prefix for all examples at once)
    therefore searches from every state too: the continuations of the node ``p`` are the paths
    that extend ``p``. Dynamic programming from the longest paths up gives, per node and example,
    the first action of the continuation minimising ``(1 - correct at exit) + lambda_compute x
    episode compute`` (normalised env compute, as ``info["compute"]``; what was spent before the node
    is the same for every continuation). The first action must be allowed by the env's masks:
    ``mask_repeats`` (the search skips repeats) and ``compute_budget`` (the core's own rule on the
    node's spent cost); EXIT always is, and wins ties.

    Attributes:
        index: node (tuple of 0-based layers) -> row.
        first: ``[P, n]`` int64, the oracle's action (0 = EXIT, k = layer k) at each node and example.
    """

    @torch.no_grad()
    def __init__(self, core: DynaLayCore, lambda_compute: float, chunk: int = 2048) -> None:
        check_search_size(core.num_layers, core.max_steps, not core.mask_repeats)
        # The largest normalised one-step compute of each layer (max_iter iterations): the budget mask's rule.
        worst_step = [flops / core.normalizer for flops in core.costs.worst_step_flops()]
        firsts = []
        for table in _searched(core, chunk):
            paths = table.paths
            cost = (~table.correct).double() + lambda_compute * table.flops.double() / core.normalizer  # [P, n]
            spent = table.flops.double() / core.normalizer
            index = {p: r for r, p in enumerate(paths)}
            value = cost.clone()              # best cost reachable from each node
            first = torch.zeros(cost.shape, dtype=torch.long)
            for r in sorted(range(len(paths)), key=lambda r: -len(paths[r])):
                parent = paths[r][:-1] if paths[r] else None
                if parent is None:
                    continue
                k, q = paths[r][-1], index[parent]
                allowed = torch.ones(cost.shape[1], dtype=torch.bool)
                if core.compute_budget is not None:  # the core's mask: worst case of layer k fits the budget
                    allowed = spent[q] + worst_step[k] <= core.compute_budget
                better = allowed & (value[r] < value[q])
                value[q] = torch.where(better, value[r], value[q])
                first[q] = torch.where(better, torch.full_like(first[q], k + 1), first[q])
            firsts.append(first)
        self.paths = paths
        self.index = index
        self.first = torch.cat(firsts, 1).numpy()
        self.lambda_compute = float(lambda_compute)

    def actions(self, core: DynaLayCore, rows: np.ndarray) -> np.ndarray:
        """The oracle's action ``[len(rows)]`` for the current states of ``core``'s slots ``rows``
        (``core`` must run the split the table was built on)."""
        sel = torch.as_tensor(rows, device=core.device)
        steps = core.steps[sel].cpu().numpy()
        path = core.path[sel].cpu().numpy()
        nodes = [self.index[tuple(int(a) - 1 for a in p[:s])] for p, s in zip(path, steps, strict=True)]
        return self.first[nodes, core.example[sel].cpu().numpy()]


# ---- playing episodes in a work core ------------------------------------------------------------

#: ``decide(core, rows, obs [n, obs_dim] tensor, masks [n, A] bool tensor) -> (actions [n], targets [n] or None)``
Decide = Callable[[DynaLayCore, np.ndarray, torch.Tensor, torch.Tensor], tuple[np.ndarray, np.ndarray | None]]


def work_core(core: DynaLayCore, split: str, num_envs: int) -> DynaLayCore:
    """A core with ``num_envs`` slots over ``split`` of ``core``'s dataset, with its model and the
    options that shape observations and masks (what the learner sees must be what it will act on),
    and on ``agent_train`` its ``agent_train_size`` subset and ``augment``."""
    if core.dataset is None:
        raise ValueError("the supervised learners need an env built on a dataset (agent_train to learn, val to "
                         "choose), not on raw examples")
    if core.mode != "frozen":
        raise ValueError(f"the supervised learners need a frozen main model, got an env in mode={core.mode!r}")
    agent_train = {name: getattr(core.options, name) for name in AGENT_TRAIN_OPTIONS} if split == "agent_train" else {}
    return DynaLayCore(core.model, core.dataset, num_envs, split=split, sample_mode="sequential",
                       max_steps=core.max_steps, observation_groups=core.observation_groups,
                       mask_repeats=core.mask_repeats, compute_budget=core.compute_budget, device=core.device,
                       **agent_train)


@torch.no_grad()
def play(core: DynaLayCore, examples: np.ndarray, decide: Decide) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Play one episode per example of ``examples`` in ``core`` (``core.num_envs`` at a time),
    asking ``decide`` about every running slot at every decision. Returns the visited states
    (``obs`` ``[S, obs_dim]``, ``masks`` ``[S, A]``, ``target`` ``[S]`` (-1 where ``decide`` gave
    none), ``example``, ``step``, ``correct`` (the prediction at that state is right), ``episode``:
    the position in ``examples``; step-major within each ``num_envs`` chunk) and the finished episodes'
    infos (``correct``, ``compute``, ``step``, ``path``, in the form
    :class:`agents.callbacks.EpisodeMetricsCallback` reads, and ``episode``), in finishing order. The
    state an episode ends in at ``max_steps`` is no decision, so it is only in its info."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "masks", "target", "example", "step", "correct",
                                                           "episode")}
    infos: list[dict[str, Any]] = []
    for first in range(0, len(examples), core.num_envs):
        chunk = np.asarray(examples[first:first + core.num_envs], dtype=np.int64)
        slots = np.arange(chunk.size)
        core.start_episodes(slots, examples=chunk)
        active = np.zeros(core.num_envs, dtype=bool)
        active[slots] = True
        while active.any():
            rows = np.flatnonzero(active)
            sel = torch.as_tensor(rows, device=core.device)
            obs = core.observations_tensor(sel)
            masks = core.action_masks_tensor().index_select(0, sel)
            actions, targets = decide(core, rows, obs, masks)
            parts["obs"].append(obs.cpu().numpy())
            parts["masks"].append(masks.cpu().numpy())
            parts["target"].append(np.full(rows.size, -1, np.int64) if targets is None else np.asarray(targets))
            parts["example"].append(core.example[sel].cpu().numpy())
            parts["step"].append(core.steps[sel].cpu().numpy())
            parts["correct"].append((core.logits[sel].argmax(1) == core.label[sel]).cpu().numpy())
            parts["episode"].append(rows + first)
            full = np.zeros(core.num_envs, dtype=np.int64)
            full[rows] = actions
            out = core.step(full, active=active)
            done = np.flatnonzero(out.terminated.cpu().numpy() & active)
            for i in done:  # the single env's form: the path cut to its steps
                step = int(out.info["step"][i])
                infos.append({"correct": out.info["correct"][i], "compute": out.info["compute"][i], "step": step,
                              "path": out.info["path"][i][:step], "episode": int(first + i)})
            active[done] = False
    return {k: np.concatenate(v) for k, v in parts.items()}, infos


# ---- networks -------------------------------------------------------------------------------------


#: SB3's actor defaults (``net_arch`` and ``activation_fn``), for policy_kwargs that leave them out.
DEFAULT_ACTOR: dict[str, Any] = {"net_arch": [64, 64], "activation_fn": "nn.Tanh"}


def ppo_actor_kwargs(env_id: str | None) -> dict[str, Any]:
    """``{"net_arch", "activation_fn"}`` of PPO's actor for ``env_id``, read from PPO's hyperparameter
    file through :func:`agents.hyperparams.load_hyperparams` (SB3's defaults, ``[64, 64]`` and
    ``nn.Tanh``, where it sets none; ``net_arch=dict(pi=..., vf=...)`` gives ``pi``)."""
    kwargs = load_hyperparams("ppo", env_id or "DynaLay-v0").get("policy_kwargs") or {}
    if isinstance(kwargs, str):
        kwargs = parse_python_literal(kwargs, what="ppo policy_kwargs")
    return _plain_net_kwargs({k: v for k, v in kwargs.items() if k in ("net_arch", "activation_fn")})


def mlp(in_dim: int, out_dim: int, arch: Sequence[int], activation: type) -> torch.nn.Sequential:
    """``in -> [Linear, activation] x len(arch) -> Linear(out)``, as SB3's ``create_mlp`` builds the actor."""
    return torch.nn.Sequential(*create_mlp(in_dim, out_dim, list(arch), activation))


def _plain_net_kwargs(policy_kwargs: Any) -> dict[str, Any]:
    """``net_arch`` (a list; ``dict(pi=...)`` gives ``pi``) and ``activation_fn`` as ``"nn.<Name>"``,
    so the agent's file holds no classes (it loads with ``torch.load(weights_only=True)``)."""
    kwargs = parse_python_literal(policy_kwargs, "policy_kwargs") if isinstance(policy_kwargs, str) else policy_kwargs
    if not isinstance(kwargs, dict) or set(kwargs) - {"net_arch", "activation_fn"}:
        raise ValueError(f"policy_kwargs of bc/dagger may give net_arch and activation_fn only, got {policy_kwargs!r}")
    kwargs = class_values(dict(kwargs), "policy_kwargs")
    arch = kwargs.get("net_arch", DEFAULT_ACTOR["net_arch"])
    arch = arch.get("pi", DEFAULT_ACTOR["net_arch"]) if isinstance(arch, dict) else arch
    activation = kwargs.get("activation_fn")
    return {"net_arch": _widths(arch, "bc/dagger: policy_kwargs.net_arch"),
            "activation_fn": DEFAULT_ACTOR["activation_fn"] if activation is None else f"nn.{activation.__name__}"}


def _widths(arch: Any, what: str) -> list[int]:
    """``arch`` as a list of hidden widths (integers >= 1); ``ValueError`` naming ``what`` otherwise."""
    if isinstance(arch, (str, dict)) or not isinstance(arch, Sequence) or not all(
            isinstance(w, (int, np.integer)) and not isinstance(w, bool) and w >= 1 for w in arch):
        raise ValueError(f"{what} must be a list of hidden layer widths (integers >= 1), e.g. [64, 64], "
                         f"got {arch!r}")
    return [int(w) for w in arch]


def _env_id_of(core: DynaLayCore) -> str:
    """The registered env id of the core's dataset (``DynaLay-v0`` for a dataset without its own)."""
    name = getattr(core.dataset, "name", None)
    return next((i for i, d in ENV_IDS.items() if d == name), "DynaLay-v0")


# ---- the learners ---------------------------------------------------------------------------------


_COMMON = ("lambda_compute", "learning_rate", "n_epochs", "batch_size", "n_envs_collect", "seed", "device",
           "tensorboard_log", "verbose", "_init_setup_model")


def _common(args: dict[str, Any]) -> dict[str, Any]:
    """The :class:`SupervisedAgent` arguments among a subclass constructor's ``locals()`` (the
    subclasses spell every argument out, so that the registry's check of the YAML keys sees them)."""
    return {k: args[k] for k in _COMMON}


def _plain_rng_state(state: dict[str, Any]) -> dict[str, Any]:
    """A NumPy bit generator's state with its 128-bit integers as strings (``torch.load`` with
    ``weights_only=True`` reads plain dicts of str/int; 128-bit ints are kept exact this way)."""
    return {k: _plain_rng_state(v) if isinstance(v, dict) else (str(v) if isinstance(v, int) else v)
            for k, v in state.items()}


def _rng_state_of(state: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`_plain_rng_state`."""
    return {k: _rng_state_of(v) if isinstance(v, dict) else (int(v) if k != "bit_generator" else v)
            for k, v in state.items()}


class SupervisedAgent:
    """What the three learners share: the env and spaces, a network, the val selection, the SB3
    callback protocol of :func:`agents.training.train`, saving and loading.

    Args:
        policy: the network kind (``MlpPolicy``; kept for the rl-zoo3 file format).
        env: the training env (a DynaLay SB3 VecEnv, possibly wrapped, or a core) on ``agent_train``.
        lambda_compute: price of one unit of normalised compute in the oracle's cost and the val
            selection (>= 0). None (the default): the env's own, read from its reward when the env
            is attached, so the learner and the reward it is judged by price compute alike; a
            number overrides it on purpose (a sweep searching the learner's price).
        learning_rate: Adam's step size on the collected states (a constant number > 0).
        n_epochs: passes over the collected states per fit.
        batch_size: states per Adam step.
        n_envs_collect: episode slots of the collection and val cores.
    """

    name = "supervised"
    #: Policy names, as SB3 algorithms list theirs: the one network kind is an MLP on the observation.
    policy_aliases: dict[str, type] = {"MlpPolicy": torch.nn.Sequential}

    def __init__(self, policy: str = "MlpPolicy", env: Any = None, *, lambda_compute: float | None = None,
                 learning_rate: float = 1e-3, n_epochs: int = 20, batch_size: int = 256, n_envs_collect: int = 512,
                 seed: int = 0, device: str = "cpu", tensorboard_log: str | None = None, verbose: int = 0,
                 _init_setup_model: bool = True) -> None:
        if policy not in self.policy_aliases:
            raise ValueError(f"{self.name}: policy must be one of {sorted(self.policy_aliases)}, got {policy!r}")
        if lambda_compute is not None and (isinstance(lambda_compute, bool) or not isinstance(lambda_compute, (int, float))
                                           or not lambda_compute >= 0):
            raise ValueError(f"{self.name}: lambda_compute must be a number >= 0 (price per unit of normalised "
                             f"compute), got {lambda_compute!r}")
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
            raise ValueError(f"{self.name}: learning_rate must be a constant number > 0 (Adam's step size; "
                             f"schedules such as 'lin_1e-3' are for the SB3 algorithms), got {learning_rate!r}")
        for key, value in (("n_epochs", n_epochs), ("batch_size", batch_size), ("n_envs_collect", n_envs_collect)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.name}: {key} must be an integer >= 1, got {value!r}")
        self.policy_name = policy
        #: The price given to the constructor (None: the env's); :attr:`lambda_compute` is the one in force.
        self.lambda_override = None if lambda_compute is None else float(lambda_compute)
        self.lambda_compute: float | None = self.lambda_override
        self.learning_rate = float(learning_rate)
        self.n_epochs, self.batch_size, self.n_envs_collect = n_epochs, batch_size, n_envs_collect
        self.seed = int(seed)
        self.device = torch.device(device)
        self.tensorboard_log = tensorboard_log
        self.verbose = verbose
        self.num_timesteps = 0
        self.rng = np.random.default_rng(seed)
        self.env: Any = None
        self.selection: dict[str, Any] = {}
        self._decision_flops: int | None = None
        if env is not None:
            self.set_env(env)
            if _init_setup_model:
                torch.manual_seed(seed)
                self.policy = self._build_net(self.core).to(self.device)

    # -- env --------------------------------------------------------------------------------------

    def set_env(self, env: Any) -> None:
        """Attach the training env (its core: split ``agent_train``, model, observation layout)."""
        core = env if isinstance(env, DynaLayCore) else core_of(env)
        if core is None:
            raise TypeError(f"{self.name}: expected a DynaLay env (DynaLayVecEnv or DynaLayCore), got {type(env).__name__}")
        if core.mode != "frozen":
            raise ValueError(f"{self.name} learns against a frozen main model; co-training (mode={core.mode!r}) is "
                             f"for the RL algorithms")
        self.env, self.core = env, core
        if self.lambda_override is None:  # one home: the env's reward prices compute
            self.lambda_compute = float(core.reward.params.lambda_compute)
        self.observation_space = spaces.Box(core.observation_low, core.observation_high, dtype=np.float32)
        self.action_space = spaces.Discrete(core.num_actions)
        self.max_steps = core.max_steps
        self.num_layers = core.num_layers

    def get_env(self) -> Any:
        """The attached training env (None after loading without one)."""
        return self.env

    def _check_env(self) -> None:
        if self.env is None:
            raise ValueError(f"{self.name}: no env attached; load it with env=... (or call set_env) to train")

    # -- network ----------------------------------------------------------------------------------

    def _build_net(self, core: DynaLayCore) -> torch.nn.Module:
        return self._net_for(core.observation_dim, core.num_actions)

    def decision_flops(self) -> int:
        """FLOPs of one decision: this agent's ``predict`` forward under FlopCounterMode
        (:func:`agents.sb3_backend.sb3_decision_flops`)."""
        if self._decision_flops is None:
            self._decision_flops = sb3_decision_flops(self)
        return self._decision_flops

    def _forward(self, observation: Any) -> torch.Tensor:
        obs = torch.as_tensor(np.asarray(observation, dtype=np.float32), device=self.device)
        return self.policy(obs.reshape(-1, self.observation_space.shape[0]))

    def _optimizer(self) -> torch.optim.Optimizer:
        """One Adam per ``learn`` (its moments carry over the fits of one learn, so how often the
        network is evaluated in between does not change the training)."""
        return torch.optim.Adam(self.policy.parameters(), lr=self.learning_rate)

    def _fit(self, x: np.ndarray, target: np.ndarray, masks: np.ndarray | None, epochs: int,
             optimizer: torch.optim.Optimizer) -> float:
        """``optimizer`` (from :meth:`_optimizer`) for ``epochs`` passes over ``(x, target)``; returns
        the last epoch's mean loss. Classification (``masks`` given): masked cross-entropy; else mean
        squared error."""
        net = self.policy
        net.train()
        xs = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        ys = torch.as_tensor(target, device=self.device)
        ms = torch.as_tensor(masks, device=self.device) if masks is not None else None
        generator = torch.Generator().manual_seed(int(self.rng.integers(2**31)))
        loss_sum = 0.0
        for _ in range(epochs):
            order = torch.randperm(xs.shape[0], generator=generator).to(self.device)
            loss_sum, batches = 0.0, 0
            for i in range(0, xs.shape[0], self.batch_size):
                b = order[i:i + self.batch_size]
                out = net(xs[b])
                if ms is not None:
                    out = out.masked_fill(~ms[b], -1e9)  # a masked action is never the answer
                    loss = torch.nn.functional.cross_entropy(out, ys[b].long())
                else:
                    loss = torch.nn.functional.mse_loss(out[:, 0], ys[b].float())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_sum, batches = loss_sum + float(loss.detach()), batches + 1
            loss_sum /= max(batches, 1)
        net.eval()
        return loss_sum

    # -- val selection ----------------------------------------------------------------------------

    def val_score(self, accuracy: float, mean_compute: float) -> float:
        """What val selection maximises: accuracy - lambda_compute x mean compute (decisions counted)."""
        return float(accuracy - self.lambda_compute * mean_compute)

    def _val_records(self) -> Any:
        if not hasattr(self, "_val_core"):
            self._val_core = work_core(self.core, "val", self.n_envs_collect)
        return run_policy(self._val_core, self)

    # -- the SB3 callback protocol ----------------------------------------------------------------

    def learn(self, total_timesteps: int, callback: Any = None, reset_num_timesteps: bool = True,
              tb_log_name: str | None = None, progress_bar: bool = False, log_interval: int = 1) -> SupervisedAgent:
        """Collect and label ``total_timesteps`` more states and fit (see the subclass), driving SB3
        callbacks (``agents.training``'s metrics, validation and checkpoints) once per collection round."""
        self._check_env()
        if reset_num_timesteps:
            self.num_timesteps = 0
        self.logger = configure_logger(self.verbose, self.tensorboard_log, tb_log_name or self.name, reset_num_timesteps)
        if callback is None:
            callback = CallbackList([])
        elif isinstance(callback, list):
            callback = CallbackList(callback)
        if not isinstance(callback, BaseCallback):
            raise TypeError(f"callback must be an SB3 BaseCallback or a list of them, got {type(callback).__name__}")
        callback.init_callback(self)
        callback.on_training_start(locals(), globals())
        self._callback = callback
        if int(total_timesteps) > 0:  # learn(0): nothing to collect, the network stays as it is
            self._train(self.num_timesteps + int(total_timesteps))
        callback.on_training_end()
        return self

    def _round_done(self, infos: list[dict[str, Any]], states: int) -> None:
        """One collection round: count its states, run the callbacks, write the logs. Called only
        after the fit (and val choice) on those states, so a checkpoint the callbacks write always
        holds a network fitted on what its ``num_timesteps`` counts."""
        self.num_timesteps += int(states)
        callback = self._callback
        callback.on_rollout_start()
        callback.update_locals({"infos": infos, "dones": np.ones(len(infos), dtype=bool)})
        callback.on_step()
        callback.on_rollout_end()
        self.logger.dump(self.num_timesteps)

    def _train(self, until: int) -> None:
        raise NotImplementedError

    def _draw_examples(self, count: int) -> np.ndarray:
        """``count`` example indices of the training split: shuffled passes over it, without repeats
        within a pass."""
        n = self.core.num_examples
        return np.concatenate([self.rng.permutation(n) for _ in range(-(-count // n))])[:count]

    # -- save / load ------------------------------------------------------------------------------

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra(self, state: dict[str, Any]) -> None:
        pass

    def save(self, path: str | os.PathLike) -> None:
        """Write the network, the hyperparameters, the step count and the val choice to ``path``
        (``torch.save``; :func:`agents.training.train` calls this through an atomic temporary)."""
        state = {"algo": self.name, "policy": self.policy_name, "num_timesteps": int(self.num_timesteps),
                 "hyperparams": self.hyperparams(), "obs_dim": int(self.observation_space.shape[0]),
                 "num_actions": int(self.action_space.n), "max_steps": int(self.max_steps),
                 "num_layers": int(self.num_layers), "net": self.policy.state_dict(),
                 "observation_low": torch.as_tensor(self.observation_space.low),
                 "observation_high": torch.as_tensor(self.observation_space.high),
                 "selection": self.selection, "seed": self.seed,
                 "rng_state": _plain_rng_state(self.rng.bit_generator.state), **self._extra_state()}
        with atomic_path(Path(path)) as tmp:
            torch.save(state, tmp)

    def hyperparams(self) -> dict[str, Any]:
        """The learner's hyperparameters, as saved with it and shown in reports."""
        return {"lambda_compute": self.lambda_compute, "learning_rate": self.learning_rate, "n_epochs": self.n_epochs,
                "batch_size": self.batch_size, "n_envs_collect": self.n_envs_collect}

    @classmethod
    def load(cls, path: str | os.PathLike, env: Any = None, device: str = "cpu", **kwargs: Any) -> SupervisedAgent:
        """The agent saved at ``path``; ``env`` attaches a training env (to continue learning: it
        must have the saved observation size, ``max_steps`` and layer count). The saved seed and
        random state carry on (a resumed run draws what the uninterrupted one would); keyword
        arguments SB3's ``load`` takes (``tensorboard_log``, ``verbose``, ``seed``: a fresh random
        state) override the saved ones."""
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises several types for foreign or hostile files
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = next((line for line in lines if "unsupported global" in line.lower()), lines[0] if lines else "")
            raise ValueError(f"{path} is not a readable {cls.name!r} agent: it may hold only tensors and plain "
                             f"values ({type(exc).__name__}: {reason})") from exc
        if not isinstance(state, dict) or state.get("algo") != cls.name:
            found = state.get("algo") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"{path} holds a {found!r} agent, not {cls.name!r}")
        overrides = {k: v for k, v in kwargs.items() if k in ("tensorboard_log", "verbose", "seed")}
        agent = cls(state["policy"], None, device=device,
                    **{**state["hyperparams"], "seed": int(state.get("seed", 0)), **overrides})
        if "rng_state" in state and "seed" not in overrides:
            agent.rng.bit_generator.state = _rng_state_of(state["rng_state"])
        agent.observation_space = spaces.Box(state["observation_low"].numpy(), state["observation_high"].numpy(),
                                             dtype=np.float32)
        agent.action_space = spaces.Discrete(int(state["num_actions"]))
        agent.max_steps, agent.num_layers = int(state["max_steps"]), int(state["num_layers"])
        agent.policy = agent._net_for(int(state["obs_dim"]), int(state["num_actions"])).to(agent.device)
        agent.policy.load_state_dict(state["net"])
        agent.policy.eval()
        agent.num_timesteps = int(state["num_timesteps"])
        agent.selection = dict(state.get("selection") or {})
        agent._load_extra(state)
        if env is not None:
            saved = agent._shape()
            agent.set_env(env)
            env_shape = {**agent._shape(), "obs_dim": int(agent.observation_space.shape[0])}
            saved["obs_dim"] = int(state["obs_dim"])
            wrong = [f"{k}: saved {saved[k]}, env {env_shape[k]}" for k in saved if saved[k] != env_shape[k]]
            if wrong:
                raise ValueError(f"{path}: the {cls.name} agent does not fit this env ({'; '.join(wrong)}); load it "
                                 f"with an env of the same options it was trained with")
        return agent

    def _shape(self) -> dict[str, Any]:
        """What an env must match to continue this agent (see :meth:`load`)."""
        return {"max_steps": int(self.max_steps), "num_layers": int(self.num_layers)}

    def _net_for(self, obs_dim: int, num_actions: int) -> torch.nn.Module:
        raise NotImplementedError


class ValueExit(SupervisedAgent):
    """Exit when the predicted value of continuing is below ``threshold`` (module docstring).

    Args (besides :class:`SupervisedAgent`'s):
        threshold: exit when the predicted gain ``< threshold``; ``None`` picks it on val, as the
            point of :meth:`exit_curve` maximising accuracy - lambda_compute x compute.
        net_arch: hidden widths of the regressor (ReLU), a list of integers.
    """

    name = "value_exit"

    def __init__(self, policy: str = "MlpPolicy", env: Any = None, *, threshold: float | None = None,
                 net_arch: Sequence[int] = (64, 64), lambda_compute: float | None = None, learning_rate: float = 1e-3,
                 n_epochs: int = 20, batch_size: int = 256, n_envs_collect: int = 512, seed: int = 0,
                 device: str = "cpu", tensorboard_log: str | None = None, verbose: int = 0,
                 _init_setup_model: bool = True) -> None:
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
            raise ValueError(f"value_exit: threshold must be a number or null (chosen on val), got {threshold!r}")
        self.threshold_param = None if threshold is None else float(threshold)
        self.threshold = 0.5 if threshold is None else float(threshold)
        self.net_arch = _widths(net_arch, "value_exit: net_arch")
        super().__init__(policy, env, **_common(locals()))

    def set_env(self, env: Any) -> None:
        """Attach ``env`` and take its full-depth order of layers (the order along which it exits)."""
        super().set_env(env)
        self.order = full_depth_order(self.core.num_layers, self.core.max_steps)

    def _net_for(self, obs_dim: int, num_actions: int) -> torch.nn.Module:
        return mlp(obs_dim, 1, self.net_arch, torch.nn.ReLU)

    def hyperparams(self) -> dict[str, Any]:
        """The shared hyperparameters plus the exit threshold and the network's layer sizes."""
        return {**super().hyperparams(), "threshold": self.threshold_param, "net_arch": self.net_arch}

    def _shape(self) -> dict[str, Any]:
        return {**super()._shape(), "order": tuple(self.order)}

    def _extra_state(self) -> dict[str, Any]:
        return {"threshold_in_use": self.threshold, "order": list(self.order)}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.threshold = float(state["threshold_in_use"])
        self.order = tuple(int(a) for a in state["order"])

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                action_masks: np.ndarray | None = None, deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """The next layer of the full-depth order, or EXIT (0) where the predicted gain is below the
        threshold, the order has ended or the layer is masked. ``state`` is the layers applied so
        far per row ``[N]`` (reset by ``episode_start``); pass it back on the next call."""
        with torch.no_grad():
            gain = self._forward(observation)[:, 0].cpu().numpy()
        n = gain.shape[0]
        steps = np.zeros(n, np.int64) if state is None else np.asarray(state, dtype=np.int64).copy()
        if episode_start is not None:
            steps[np.asarray(episode_start, dtype=bool)] = 0
        order = np.asarray(list(self.order) + [0], dtype=np.int64)
        # In float64, as exit_curve builds its thresholds (NumPy 2 would round a float threshold
        # to float32 against a float32 gain, merging thresholds one float64 ulp apart).
        actions = np.where(gain.astype(np.float64) < self.threshold, 0, order[np.minimum(steps, len(self.order))])
        if action_masks is not None:
            actions = np.where(np.take_along_axis(np.asarray(action_masks, bool), actions[:, None], 1)[:, 0], actions, 0)
        return actions, steps + (actions > 0)

    def _walk(self, core: DynaLayCore, examples: np.ndarray) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        """Every example down the order until it ends or its next layer is masked (the env's
        ``compute_budget``: the walk goes only where the env lets an episode go), recording each
        decision state (:func:`play`)."""
        order = np.asarray(list(self.order) + [0], dtype=np.int64)

        def decide(core: DynaLayCore, rows: np.ndarray, obs: torch.Tensor, masks: torch.Tensor) -> tuple[np.ndarray, None]:
            steps = core.steps[torch.as_tensor(rows, device=core.device)].cpu().numpy()
            actions = order[np.minimum(steps, len(self.order))]
            allowed = masks.cpu().numpy()[np.arange(rows.size), actions]
            return np.where(allowed, actions, 0), None

        return play(core, examples, decide)

    @staticmethod
    def _reach(infos: list[dict[str, Any]], episodes: int) -> np.ndarray:
        """``[episodes]``: the layers a walk applied per episode (the order's length, or fewer where
        the masks stopped it): the deepest depth the env lets that example reach along the order."""
        reach = np.zeros(episodes, np.int64)
        for info in infos:
            reach[info["episode"]] = info["step"]
        return reach

    def gain_targets(self, data: dict[str, np.ndarray], infos: list[dict[str, Any]]) -> np.ndarray:
        """``[S]`` value of continuing of each state a walk (:meth:`_walk`) recorded: the best
        correctness at this or any later reachable depth of the order minus the correctness now (0
        or 1), read from the walk itself (its states and, for an end at ``max_steps``, its infos);
        depths past where the masks stop an episode count for nothing."""
        correct = np.zeros((len(infos), len(self.order) + 1))  # [episode, depth]; unreachable depths stay 0
        correct[data["episode"], data["step"]] = data["correct"]
        ends = np.array([(i["episode"], i["step"], bool(i["correct"])) for i in infos], dtype=np.int64).reshape(-1, 3)
        correct[ends[:, 0], ends[:, 1]] = ends[:, 2]
        best_later = np.maximum.accumulate(correct[:, ::-1], axis=1)[:, ::-1]
        return (best_later - correct)[data["episode"], data["step"]]

    def _train(self, until: int) -> None:
        depth = len(self.order) + (0 if len(self.order) == self.max_steps else 1)  # decisions per walk
        count = max(1, -(-(until - self.num_timesteps) // max(depth, 1)))
        core = work_core(self.core, self.core.split, self.n_envs_collect)
        examples = self._draw_examples(count)
        data, infos = self._walk(core, examples)
        # Where the network's answer matters: not where the order or the masks end the walk.
        decisions = data["step"] < self._reach(infos, examples.size)[data["episode"]]
        targets = self.gain_targets(data, infos)
        self._fit(data["obs"][decisions], targets[decisions], None, self.n_epochs, self._optimizer())
        self._decision_flops = None
        if self.threshold_param is None:
            curve = self.exit_curve(work_core(self.core, "val", self.n_envs_collect))
            score = curve["accuracy"] - self.lambda_compute * curve["mean_compute"]
            best = int(np.argmax(score))
            self.threshold = float(curve["threshold"][best])
            self.selection = {"split": "val", "threshold": self.threshold, "accuracy": float(curve["accuracy"][best]),
                              "mean_compute": float(curve["mean_compute"][best]), "lambda_compute": self.lambda_compute,
                              "n_thresholds": int(curve["threshold"].size)}
        self._round_done(infos, data["step"].size)  # after the fit and the val choice (a checkpoint holds both)

    @torch.no_grad()
    def exit_curve(self, core: DynaLayCore) -> dict[str, np.ndarray]:
        """Accuracy and mean normalised compute (decisions counted) of this model on every example of
        ``core``'s split at every distinct threshold of its predicted gains: one recorded pass
        (:func:`agents.curves.record_core`: correctness and FLOPs per depth) and one walk for the
        observations and how deep the env's masks let each example go (an episode exits there
        whatever the threshold). Arrays ``[m]`` ordered by compute (threshold descending); the last
        point never exits early (only where the masks force it)."""
        record = record_core(core, self.order)
        data, infos = self._walk(core, np.arange(core.num_examples))  # episode i is example i
        depth = record.depth
        reach = self._reach(infos, record.n)
        forced = np.arange(depth + 1)[None, :] >= reach[:, None]  # [n, D + 1] the masks end the walk here
        gains = np.full((record.n, depth), np.inf)
        decide_rows = data["step"] < reach[data["episode"]]
        gains[data["example"][decide_rows], data["step"][decide_rows]] = self._forward(
            data["obs"][decide_rows])[:, 0].cpu().numpy()
        # Exit at depth d < D once gain < threshold: the record value is the running minimum.
        running_min = np.minimum.accumulate(gains, axis=1)
        thresholds = np.unique(np.concatenate([running_min[np.isfinite(running_min)], [-np.inf]]))
        thresholds = np.nextafter(thresholds, np.inf)  # gain < t exits exactly the values <= the record
        thresholds[0] = -np.inf  # never exit early
        flops = exit_cost(record, self.decision_flops()) / record.normalizer
        correct = record.correct.astype(np.float64)
        accuracy, compute = [], []
        for start in range(0, thresholds.size, 256):  # [T, n] exit depths, a block of thresholds at a time
            t = thresholds[start:start + 256]
            passes = np.concatenate([gains[None] < t[:, None, None], np.ones((t.size, record.n, 1), bool)], 2) | forced
            exits = passes.argmax(2)
            accuracy.append(np.take_along_axis(correct[None], exits[..., None], 2)[..., 0].mean(1))
            compute.append(np.take_along_axis(flops[None], exits[..., None], 2)[..., 0].mean(1))
        return {"threshold": thresholds[::-1].copy(), "accuracy": np.concatenate(accuracy)[::-1].copy(),
                "mean_compute": np.concatenate(compute)[::-1].copy()}


class BC(SupervisedAgent):
    """Behaviour cloning of the cost-regularised oracle (module docstring), on PPO's actor network.

    Args (besides :class:`SupervisedAgent`'s):
        policy_kwargs: ``net_arch`` / ``activation_fn`` of the network; None reads PPO's for the env.
        n_snapshots: the network is evaluated on val after each of this many equal parts of the
            epochs; the best snapshot is kept.
    """

    name = "bc"

    def __init__(self, policy: str = "MlpPolicy", env: Any = None, *, policy_kwargs: dict[str, Any] | None = None,
                 n_snapshots: int = 4, lambda_compute: float | None = None, learning_rate: float = 1e-3, n_epochs: int = 20,
                 batch_size: int = 256, n_envs_collect: int = 512, seed: int = 0, device: str = "cpu",
                 tensorboard_log: str | None = None, verbose: int = 0, _init_setup_model: bool = True) -> None:
        self._bc_init(policy_kwargs, n_snapshots)
        super().__init__(policy, env, **_common(locals()))

    def _bc_init(self, policy_kwargs: dict[str, Any] | None, n_snapshots: int) -> None:
        if isinstance(n_snapshots, bool) or not isinstance(n_snapshots, int) or n_snapshots < 1:
            raise ValueError(f"{self.name}: n_snapshots must be an integer >= 1, got {n_snapshots!r}")
        self.n_snapshots = n_snapshots
        self.policy_kwargs = None if policy_kwargs is None else _plain_net_kwargs(policy_kwargs)

    def hyperparams(self) -> dict[str, Any]:
        """The shared hyperparameters plus the oracle snapshots and the policy network's arguments."""
        return {**super().hyperparams(), "n_snapshots": self.n_snapshots, "policy_kwargs": self.policy_kwargs}

    def set_env(self, env: Any) -> None:
        """Attach ``env``; check that its oracle search stays small, and take PPO's actor network for it."""
        super().set_env(env)
        check_search_size(self.core.num_layers, self.core.max_steps, not self.core.mask_repeats, self.name)
        if self.policy_kwargs is None:  # PPO's actor for this env, fixed from now on (and saved)
            self.policy_kwargs = ppo_actor_kwargs(_env_id_of(self.core))

    def _net_for(self, obs_dim: int, num_actions: int) -> torch.nn.Module:
        kwargs = {**DEFAULT_ACTOR, **(self.policy_kwargs or {})}
        activation = resolve_class_name(kwargs["activation_fn"], "policy_kwargs.activation_fn")
        return mlp(obs_dim, num_actions, kwargs["net_arch"], activation)

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                action_masks: np.ndarray | None = None, deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """The most likely allowed action (sampled from the masked softmax unless ``deterministic``)."""
        with torch.no_grad():
            logits = self._forward(observation)
            if action_masks is not None:
                logits = logits.masked_fill(~torch.as_tensor(np.asarray(action_masks, bool), device=logits.device),
                                            -torch.inf)
            if deterministic:
                actions = logits.argmax(1)
            else:
                actions = torch.distributions.Categorical(logits=logits).sample()
        return actions.cpu().numpy().astype(np.int64), state

    def _oracle(self, core: DynaLayCore, rows: np.ndarray, obs: torch.Tensor,
                masks: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        targets = self._table.actions(core, rows)
        return targets, targets

    def _collect(self, states: int, decide: Decide) -> tuple[dict[str, np.ndarray], list[tuple[list[Any], int]]]:
        """Play fresh ``agent_train`` episodes with ``decide`` until at least ``states`` states are
        labelled (one collection round per ``n_envs_collect`` episodes; the last round keeps whole
        episodes, the fewest that reach ``states``, so no depth is over-represented). Returns the
        states and ``(infos, states)`` per round, for :meth:`_rounds_done` once the fit is done."""
        core = work_core(self.core, self.core.split, self.n_envs_collect)
        parts: list[dict[str, np.ndarray]] = []
        rounds: list[tuple[list[Any], int]] = []
        got = 0
        while got < states:
            data, infos = play(core, self._draw_examples(self.n_envs_collect), decide)
            lengths = np.bincount(data["episode"], minlength=self.n_envs_collect)  # states per episode
            episodes = int(np.searchsorted(np.cumsum(lengths), states - got)) + 1  # the fewest that reach it
            keep = data["episode"] < episodes
            parts.append({k: v[keep] for k, v in data.items()})
            rounds.append(([i for i in infos if i["episode"] < episodes], int(keep.sum())))
            got += int(keep.sum())
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, rounds

    def _rounds_done(self, rounds: list[tuple[list[Any], int]]) -> None:
        """:meth:`_round_done` for each collection round, after the fit on its states."""
        for infos, states in rounds:
            self._round_done(infos, states)

    def _fit_and_select(self, data: dict[str, np.ndarray], optimizer: torch.optim.Optimizer,
                        candidates: list[tuple[Any, Any, Any]], label: dict[str, Any]) -> None:
        """Fit on ``data`` with ``optimizer`` in ``n_snapshots`` equal parts of ``n_epochs``; after
        each, score the network on val and add ``(score, state_dict, summary)`` to ``candidates``
        (the summary: ``label``, the snapshot number from 1, val accuracy and mean compute)."""
        parts = self.n_snapshots
        epochs = [self.n_epochs // parts + (i < self.n_epochs % parts) for i in range(parts)]
        for snapshot, e in enumerate(epochs, 1):
            if e:
                self._fit(data["obs"], data["target"], data["masks"], e, optimizer)
            val = self._val_records()
            candidates.append((self.val_score(val.accuracy, val.mean_compute),
                               {k: v.clone() for k, v in self.policy.state_dict().items()},
                               {**label, "snapshot": snapshot, "accuracy": val.accuracy,
                                "mean_compute": val.mean_compute}))

    def _keep_best(self, candidates: list[tuple[Any, Any, Any]]) -> None:
        """Load the candidate with the best val score; ``selection`` gets its summary and ``of``
        (how many were scored)."""
        best = max(range(len(candidates)), key=lambda i: candidates[i][0])
        self.policy.load_state_dict(candidates[best][1])
        self.selection = {"split": "val", "lambda_compute": self.lambda_compute, **candidates[best][2],
                          "of": len(candidates)}
        self._decision_flops = None

    def _train(self, until: int) -> None:
        self._table = OracleTable(self.core, self.lambda_compute)
        data, rounds = self._collect(until - self.num_timesteps, self._oracle)
        candidates: list[tuple[Any, Any, Any]] = []
        self._fit_and_select(data, self._optimizer(), candidates, {})
        self._keep_best(candidates)
        self._rounds_done(rounds)  # after the fit and the choice (a checkpoint holds the chosen network)


class DAgger(BC):
    """DAgger on the cost-regularised oracle (module docstring).

    Args (besides :class:`BC`'s):
        n_iterations: collection rounds; each collects ``1/n_iterations`` of the states and refits
            on everything collected so far (``n_epochs`` per iteration).
        beta: the oracle drives with probability ``beta ** i`` in iteration ``i`` (iteration 0: the
            oracle alone), else the learned policy (greedy, masked).

    The iterations done are saved with the agent: a resumed run continues at the next iteration
    (the remaining states split over the remaining iterations), not at ``beta ** 0``; learning on
    past ``n_iterations`` adds one iteration per ``learn``.
    ``selection["iteration"]`` is the chosen network's iteration ``i``.
    """

    name = "dagger"

    def __init__(self, policy: str = "MlpPolicy", env: Any = None, *, n_iterations: int = 4, beta: float = 0.5,
                 policy_kwargs: dict[str, Any] | None = None, n_snapshots: int = 1, lambda_compute: float | None = None,
                 learning_rate: float = 1e-3, n_epochs: int = 20, batch_size: int = 256, n_envs_collect: int = 512,
                 seed: int = 0, device: str = "cpu", tensorboard_log: str | None = None, verbose: int = 0,
                 _init_setup_model: bool = True) -> None:
        if isinstance(n_iterations, bool) or not isinstance(n_iterations, int) or n_iterations < 1:
            raise ValueError(f"dagger: n_iterations must be an integer >= 1, got {n_iterations!r}")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
            raise ValueError(f"dagger: beta must be a number in [0, 1], got {beta!r}")
        self.n_iterations, self.beta = n_iterations, float(beta)
        self.iterations_done = 0
        self._bc_init(policy_kwargs, n_snapshots)
        SupervisedAgent.__init__(self, policy, env, **_common(locals()))

    def hyperparams(self) -> dict[str, Any]:
        """BC's hyperparameters plus DAgger's iterations and its mixing rate ``beta``."""
        return {**super().hyperparams(), "n_iterations": self.n_iterations, "beta": self.beta}

    def _extra_state(self) -> dict[str, Any]:
        return {"iterations_done": int(self.iterations_done)}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.iterations_done = int(state.get("iterations_done", 0))

    def _train(self, until: int) -> None:
        total = until - self.num_timesteps
        if self.num_timesteps == 0:
            self.iterations_done = 0  # a fresh run
        first = self.iterations_done
        left = max(self.n_iterations - first, 1)  # past n_iterations (learning on): one more iteration
        sizes = [total // left + (j < total % left) for j in range(left)]
        last = first + int(np.count_nonzero(sizes)) - 1  # the sizes that are 0 come last
        self._table = OracleTable(self.core, self.lambda_compute)
        optimizer = self._optimizer()
        data: dict[str, np.ndarray] | None = None
        candidates: list[tuple[Any, Any, Any]] = []
        for i, size in enumerate(sizes, first):
            if not size:
                continue
            mix = self.beta ** i

            def decide(core: DynaLayCore, rows: np.ndarray, obs: torch.Tensor, masks: torch.Tensor,
                       mix: float = mix) -> tuple[np.ndarray, np.ndarray]:
                targets = self._table.actions(core, rows)
                if mix >= 1.0:
                    return targets, targets
                learned, _ = self.predict(obs.cpu().numpy(), action_masks=masks.cpu().numpy())
                return np.where(self.rng.random(rows.size) < mix, targets, learned), targets

            new, rounds = self._collect(size, decide)
            data = new if data is None else {k: np.concatenate([data[k], new[k]]) for k in data}
            self._fit_and_select(data, optimizer, candidates, {"iteration": i})
            self.iterations_done = i + 1
            if i == last:  # the chosen network is what the run ends with
                self._keep_best(candidates)
            self._rounds_done(rounds)  # after the fit (a checkpoint holds a network fitted on its states)


class SupervisedBackend:
    """Builds and loads the learners of this module (``spec.cls``) for the registry: ``build``
    goes through :func:`agents.sb3_backend.construct` (the rl-zoo3 hyperparameters split into the
    class's keyword arguments, as for SB3), ``load`` through the class's :meth:`~SupervisedAgent.load`."""

    name = "supervised"

    def build(self, spec: AlgoSpec, env: Any, hyperparams: dict[str, Any], *, seed: int = 0, device: str = "cpu",
              tensorboard_log: str | None = None, verbose: int = 0) -> SupervisedAgent:
        """A fresh learner of algorithm ``spec`` on ``env`` from ``hyperparams``."""
        return construct(spec, env, hyperparams, seed=seed, device=device, tensorboard_log=tensorboard_log,
                         verbose=verbose)

    def load(self, spec: AlgoSpec, path: str | os.PathLike, *, env: Any = None, device: str = "cpu",
             **kwargs: Any) -> SupervisedAgent:
        """The learner saved at ``path`` (``env`` attaches a training env)."""
        return spec.cls.load(path, env=env, device=device, **kwargs)


SUPERVISED_BACKEND = SupervisedBackend()

__all__ = ["BC", "DAgger", "LEARNERS", "MAX_SEARCH_PATHS", "OracleTable", "SUPERVISED_BACKEND", "SupervisedAgent",
           "SupervisedBackend", "ValueExit", "check_search_size", "play", "ppo_actor_kwargs",
           "search_path_count", "work_core"]
