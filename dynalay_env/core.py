"""The DynaLay MDP, written once: a batch of N episodes held as tensors.

:class:`DynaLayCore` is the single source of truth for the MDP. ``DynaLayEnv`` (N = 1), the
Gymnasium vector env and the Stable-Baselines3 VecEnv adapter are thin faces over it.

One episode = one example of a split. Each slot ``i`` of the batch runs its own sequence of
episodes:

* ``reset(indices)`` draws an example for each slot, encodes it and runs the head on the encoder
  state (the observation needs the head's statistics), so those costs are counted at reset.
* ``step(actions)`` applies every slot's action at once: EXIT (0) classifies the current state;
  action ``k >= 1`` solves ``layers[k-1]``. Slots are grouped by layer, one batched solve per
  group, then one head call over every slot that moved. A slot that reaches ``max_steps`` is
  classified (forced exit). Both end the episode with ``terminated=True``.

Compute (docs/design.md; charged by :meth:`~dynalay_env.model.CostTable.step_flops`): encoder + for
each step (injection + executed iterations x FLOPs per iteration)
+ the head at every visited state, in FLOPs, and normalised by the model's ``compute_normalizer``.
Only work that ran is counted: the FPI solver drops converged samples from its batch.

Host synchronisation. On an accelerator a step waits for the device only where a solve needs a
batch size on the host: :meth:`DynaLayCore.group_sizes` (how many slots chose each layer) and the FPI
solver's shrinking active set, because executed work must equal counted work. Observations,
rewards, masks and ``info`` stay on the device (``info`` becomes numpy when a key is read); device
action batches are checked with asynchronous assertions. The faces' return values (Gymnasium's
numpy, the SB3 adapter's ``step_wait``) are the documented host-facing calls.

Example sampling is reproducible per slot (:mod:`dynalay_env.sampling`): a batch of N slots
seeded ``s, s+1, ...`` replays exactly the episodes of N single envs seeded the same way, and
``"sequential"`` visits every example of the split once per pass. ``agent_train_size`` plays a
fixed subset of ``agent_train``; ``augment`` feeds the model a fresh distortion of each episode's
image (:mod:`dynalay_env.augment`), reproducible per slot in the same way.

Modes. ``frozen`` (default): the main model never changes, and the MDP is stationary and
deterministic given the seeds. ``cotrain``: the main model keeps learning on the paths the agent
chooses (:mod:`dynalay_env.cotrain`): every ``cotrain_every`` finished episodes, one batched
optimiser step of size ``cotrain_lr`` on their path-robust cross-entropy, taken at the end of the
``step()`` that finished them. The core holds the one model and the one optimiser; the compute
normaliser and the observation bounds stay fixed. This mode is **non-stationary** by design (an
example's observations and rewards drift as the model learns), so the determinism check and the
batch-vs-single-env equivalence do not hold for it and are only tested in ``frozen`` mode.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dynalay_env.augment import augment_images, check_image_shape
from dynalay_env.cotrain import DEFAULT_COTRAIN_EVERY, DEFAULT_COTRAIN_LR, CoTrainer
from dynalay_env.datasets import Dataset
from dynalay_env.datasets.variants import example_info
from dynalay_env.latency import latency_costs
from dynalay_env.model import CostTable, FPIModel, MainModel, head_and_introspection
from dynalay_env.observations import HISTORY_FEATURES, history_features, observation_layout
from dynalay_env.options import OBSERVATION_GROUPS, REWARD_PARAM_NAMES, ROUTER_GROUPS, SETTABLE_OPTIONS, EnvOptions
from dynalay_env.rewards import RewardInputs
from dynalay_env.sampling import ExampleSampler, seed_to_key, subset_indices

EXIT_ACTION = 0
class LazyInfo(Mapping[str, Any]):
    """Per-slot info of one step (leading dim N): device tensors that become numpy arrays when read.

    Building it copies the state on the device and never waits for it; reading a key copies that
    one array to the host (a synchronisation on an accelerator), once. The arrays are fresh: later
    steps never change them. ``tensors()`` gives the device tensors without any copy to the host.
    """

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        self._tensors = tensors
        self._arrays: dict[str, np.ndarray] = {}

    def __getitem__(self, key: str) -> np.ndarray:
        array = self._arrays.get(key)
        if array is None:
            array = self._arrays[key] = self._tensors[key].cpu().numpy()
        return array

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def tensors(self) -> dict[str, Tensor]:
        """A shallow copy of the info as device tensors (leading dim N), with no numpy conversion."""
        return dict(self._tensors)

    def __repr__(self) -> str:
        return f"LazyInfo({', '.join(self._tensors)})"


@dataclass
class StepOutput:
    """Result of one batched step, as tensors on the core's device (leading dim N).

    ``obs`` float32 ``[N, obs_dim]`` (the states reached; for terminated slots the terminal
    observation), ``reward`` float32 ``[N]``, ``terminated`` bool ``[N]``. ``info`` maps the keys of
    :meth:`DynaLayCore.info_tensors` to numpy arrays, made from device tensors only when read
    (:class:`LazyInfo`).
    """

    obs: Tensor
    reward: Tensor
    terminated: Tensor
    info: dict[str, Any]


def available_observation_groups(model: FPIModel) -> tuple[str, ...]:
    """The observation groups ``model`` can fill, in observation order: every group, less
    ``router`` for a model without a router."""
    has_router = callable(getattr(getattr(model, "router", None), "flops", None))
    return tuple(g for g in OBSERVATION_GROUPS if has_router or g not in ROUTER_GROUPS)


def observed_router(model: FPIModel, cost: str) -> torch.nn.Module:
    """The router the ``router`` observation group reads: ``model.router`` (states
    ``[N, *state_shape]`` -> layer logits ``[N, K]``, with a ``flops()`` per sample). Raises
    ``ValueError`` for a model without one, or under ``cost="latency"`` (no latency table times it)."""
    if "router" not in available_observation_groups(model):
        raise ValueError(f"observation group 'router' needs a model with a router (expert layers, e.g. "
                         f"DynaLay-MNIST5k-Experts-v0); {type(model).__name__} has none. Valid groups for it: "
                         f"{', '.join(available_observation_groups(model))}")
    if cost != "flops":
        raise ValueError(f"observation group 'router' is charged in FLOPs; cost={cost!r} has no entry for the "
                         f"router. Use cost='flops' with it")
    return model.router  # type: ignore[attr-defined]


class DynaLayCore:
    """N DynaLay episodes as tensors. See the module docstring and ``DynaLayEnv`` for the MDP.

    Its jobs are split where they stand alone: the options and their checks
    (:class:`~dynalay_env.options.EnvOptions`), which example each slot plays
    (:class:`~dynalay_env.sampling.ExampleSampler`), the observation's layout and the ``history``
    features (:mod:`dynalay_env.observations`), the reward formulas (:mod:`dynalay_env.rewards`)
    and co-training (:mod:`dynalay_env.cotrain`). What stays here is the transition itself:
    ``reset``, ``step`` with its reward inputs, the observation vector, masks and ``info``. They
    read and write the same per-slot state tensors in one pass per step, so splitting them further
    would hand those tensors between objects on every step without separating any concern.

    Args:
        model: the main model (:class:`~dynalay_env.model.FPIModel`), used in eval mode.
        dataset: the dataset whose ``options.split`` provides the examples; ``None`` when
            ``examples`` is given instead.
        num_envs: N, the number of episode slots.
        options: the env's options (:class:`~dynalay_env.options.EnvOptions`: split, sampling,
            ``max_steps``, reward, observation groups, masks, device, mode, ...); or give them as
            keywords (``**kwargs``), checked by
            :meth:`~dynalay_env.options.EnvOptions.from_kwargs`. Its ``dataset`` and ``model`` fields
            say where ``dataset`` and ``model`` came from; the core uses the objects it is given.
        provenance: id of (model, dataset, version), copied into ``info``.
        examples: ``(x [n, *input_shape], y [n])`` tensors to draw episodes from instead of a
            dataset split (e.g. a batch of raw inputs at inference time; ``y`` may be dummy labels).

    ``compute_budget`` masks layers whose worst case (``max_iter`` iterations,
    :meth:`~dynalay_env.model.CostTable.worst_step_flops`) would take the episode's normalised
    compute above the budget. ``decision_flops`` is charged in the reward only: every step is one
    decision (EXIT included; the forced exit at ``max_steps`` is none), so the reward's
    ``step_compute`` grows by ``decision_flops / normalizer`` per step and its ``total_compute`` by
    that times the decisions so far; ``info["compute"]``, the observation and the masks stay
    env-only. ``mode="cotrain"`` needs ``split="agent_train"`` and a ``torch.nn.Module`` model with
    trainable FPI layers (non-stationary, see the module docstring).
    """

    def __init__(self, model: FPIModel, dataset: Dataset | None, num_envs: int = 1, *,
                 options: EnvOptions | None = None, provenance: str = "",
                 examples: tuple[Tensor, Tensor] | None = None, **kwargs: Any) -> None:
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if options is None:  # record where the model and the data came from: the objects themselves
            kwargs = {"model": model, **({"dataset": dataset} if dataset is not None else {}), **kwargs}
        options = EnvOptions.resolve(options, kwargs, owner="DynaLayCore.__init__()")
        if (dataset is None) == (examples is None):
            raise ValueError("pass exactly one of dataset (with split) or examples=(x, y)")
        if dataset is not None and (tuple(model.input_shape) != tuple(dataset.input_shape)
                                    or model.num_classes != dataset.num_classes):
            raise ValueError(f"model expects inputs {tuple(model.input_shape)} with {model.num_classes} classes, "
                             f"dataset {dataset.name!r} has {tuple(dataset.input_shape)} with "
                             f"{dataset.num_classes} classes")
        #: The options this core was built with (:class:`~dynalay_env.options.EnvOptions`); the
        #: settable ones follow :meth:`set_option`.
        self.options = options
        self.device = torch.device(options.device)
        self.model = model
        self.dataset = dataset
        self.num_envs = int(num_envs)
        self.split = options.split
        self.sample_mode = options.sample_mode
        self.max_steps = options.max_steps
        self.reward = options.make_reward()
        self.observation_groups = options.observation_groups
        self.mask_repeats = options.mask_repeats
        self.compute_budget = options.compute_budget
        self.decision_flops = options.decision_flops
        self.mode = options.mode
        self.provenance = provenance

        self.num_layers = model.num_layers
        self.num_actions = self.num_layers + 1
        self.num_classes = model.num_classes
        flops_table = model.cost_table()
        if not flops_table.normalizer > 0:
            raise ValueError("the model's compute normaliser is not set (cost_table().normalizer <= 0); "
                             "calibrate it with MainModel.calibrate_normalizer on the val split")
        #: The router whose probabilities the ``router`` group observes (None when not observed).
        self.router: torch.nn.Module | None = None
        if "router" in self.observation_groups:
            self.router = observed_router(model, options.cost)
            flops_table = flops_table.with_per_state_flops(self.router.flops())
        #: The model's FLOP costs: ``flops`` (and ``info["flops"]``) count what executed, whatever the
        #: cost; with the ``router`` group, the router at every visited state too.
        self.flops_table = flops_table
        if options.cost == "latency":
            if options.latency_table is None:
                raise ValueError("cost='latency' needs latency_table: a LatencyTable or the JSON file that "
                                 "`dynalay profile` wrote (make_core and gym.make find the one beside the model's "
                                 "checkpoint)")
            if not isinstance(model, MainModel):
                raise ValueError(f"cost='latency' needs a MainModel (its latency table is per layer), got "
                                 f"{type(model).__name__}")
            costs: CostTable = latency_costs(options.latency_table, model, device=self.device)
        else:
            costs = flops_table
        #: The cost table compute is charged from (``options.cost``: FLOPs, or table-estimated seconds);
        #: ``costs.unit`` names it. ``normalizer``: the full-depth model in that unit.
        self.costs = costs
        self.normalizer = float(costs.normalizer)
        self.flops_normalizer = float(flops_table.normalizer)
        dev = self.device
        if len(costs.max_iterations) != self.num_layers:
            raise ValueError(f"cost_table().max_iterations must give one value per layer ({self.num_layers}), "
                             f"got {costs.max_iterations}")
        self._max_iter = torch.tensor(costs.max_iterations, dtype=torch.float64, device=dev)
        # The largest one-step cost of each layer: injection + max_iter iterations + the head.
        self._worst_step = torch.tensor(costs.worst_step_flops(), dtype=torch.float64, device=dev) / self.normalizer
        self._reset_cost = costs.reset_flops()

        if dataset is not None:
            x, y = dataset.as_tensors(self.split, dev)
        else:
            x, y = (torch.as_tensor(t, device=dev) for t in examples)  # type: ignore[union-attr]
            if tuple(x.shape[1:]) != tuple(model.input_shape) or y.shape != x.shape[:1]:
                raise ValueError(f"examples must be x [n, {', '.join(map(str, model.input_shape))}] and y [n], got "
                                 f"{tuple(x.shape)} and {tuple(y.shape)}")
            y = y.long()
        split_size = int(y.shape[0])
        info_arrays = example_info(dataset, self.split, split_size)
        if dataset is None and (options.agent_train_size is not None or options.augment):
            raise ValueError("agent_train_size and augment apply to a dataset's agent_train split, not to "
                             "examples=(x, y)")
        #: int64 ``[num_examples]``: the split index of each example the env plays (``info["example"]``
        #: indexes this array); all of them unless ``agent_train_size`` takes a subset.
        self.example_ids = subset_indices(split_size, options.agent_train_size)
        if options.agent_train_size is not None:
            ids = torch.as_tensor(self.example_ids, device=dev)
            x, y = x.index_select(0, ids), y.index_select(0, ids)
            info_arrays = {key: np.asarray(value)[self.example_ids] for key, value in info_arrays.items()}
        #: Each episode's input is a fresh distortion of its image (:mod:`dynalay_env.augment`).
        self.augment = options.augment
        if self.augment:
            check_image_shape(model.input_shape, owner=f"augment=True (dataset {getattr(dataset, 'name', '?')!r})")
        self.x, self.y = x, y
        self.num_examples = int(y.shape[0])
        # Per-example facts of a task variant (noisy_label bool, severity int64; False / -1 otherwise).
        self._example_info = {key: torch.as_tensor(np.array(value), device=dev) for key, value in info_arrays.items()}
        if self.num_examples == 0:
            raise ValueError(f"split {self.split!r} of dataset {getattr(dataset, 'name', 'examples')!r} is empty")

        self._allocate_state()

        #: The slots' example streams (:class:`~dynalay_env.sampling.ExampleSampler`).
        self.sampler = ExampleSampler(self.num_envs, self.num_examples, self.sample_mode)
        self._build_observation_layout()
        self.last_step_seconds = 0.0
        self.cotrainer = self._make_cotrainer(options.cotrain_lr, options.cotrain_every)

    def _allocate_state(self) -> None:
        """The per-slot state tensors (leading dim N) on the device; every slot starts done."""
        n, state_shape, dev = self.num_envs, tuple(self.model.state_shape), self.device
        self.state_shape = state_shape
        self.z = torch.zeros(n, *state_shape, device=dev)
        self.x_emb = torch.zeros(n, *state_shape, device=dev)
        self.logits = torch.zeros(n, self.num_classes, device=dev)
        self.example = torch.zeros(n, dtype=torch.long, device=dev)
        self.label = torch.zeros(n, dtype=torch.long, device=dev)
        self.steps = torch.zeros(n, dtype=torch.long, device=dev)
        self.flops = torch.zeros(n, dtype=torch.float64, device=dev)
        # The charged cost in the unit of ``costs``; under cost="flops" the same tensor as ``flops``.
        self.spent = self.flops if self.costs is self.flops_table else torch.zeros_like(self.flops)
        self.last_action = torch.full((n,), -1, dtype=torch.long, device=dev)
        self.last_residual = torch.zeros(n, device=dev)
        self.last_iterations = torch.zeros(n, dtype=torch.long, device=dev)
        self.last_max_iter = torch.ones(n, dtype=torch.float64, device=dev)  # max_iter of the last solved layer
        self.path = torch.full((n, self.max_steps), -1, dtype=torch.long, device=dev)
        self.path_iterations = torch.zeros(n, self.max_steps, dtype=torch.long, device=dev)
        self.done = torch.ones(n, dtype=torch.bool, device=dev)  # a slot must be reset before stepping
        # The introspection of each slot's state, kept beside it: the observation reads it, and only
        # the slots whose state changed are introspected again.
        self.hidden = torch.zeros(n, int(self.model.introspect(self.z[:1]).shape[1]), device=dev)
        self.router_probs = torch.zeros(n, self.num_layers, device=dev) if self.router is not None else None
        # The history group's features of each slot (HISTORY_FEATURES), updated when a layer moves
        # the state; kept only when the group is observed.
        self._track_history = "history" in self.observation_groups
        self.history = torch.zeros(n, len(HISTORY_FEATURES), device=dev)
        self._history_low = torch.tensor([-1.0 if f == "state_cosine" else 0.0 for f in HISTORY_FEATURES], device=dev)
        self._history_high = torch.ones(len(HISTORY_FEATURES), device=dev)

    def _make_cotrainer(self, lr: float | None, every: int | None) -> CoTrainer | None:
        """The :class:`~dynalay_env.cotrain.CoTrainer` of ``cotrain`` mode (None when frozen)."""
        if self.mode != "cotrain":
            return None
        if self.dataset is None or self.split != "agent_train":
            where = "examples=(x, y)" if self.dataset is None else f"split={self.split!r}"
            raise ValueError(f"mode='cotrain' learns from the agent_train split only (val and test are "
                             f"never trained on); got {where}. Evaluate with mode='frozen'.")
        return CoTrainer(self.model, self.x, self.y,  # type: ignore[arg-type]
                         lr=DEFAULT_COTRAIN_LR if lr is None else lr,
                         every=DEFAULT_COTRAIN_EVERY if every is None else every)

    # ---- observation layout ----------------------------------------------------------------------

    def _build_observation_layout(self) -> None:
        hidden_dim = int(self.model.introspect(self.z[:1]).shape[1])
        max_compute = self._reset_cost / self.normalizer + self.max_steps * float(self._worst_step.max())
        layout = observation_layout(self.observation_groups, hidden_dim, self.num_classes, self.num_actions,
                                    max_compute)
        #: The columns of the observation that each enabled group holds, in observation order.
        self.observation_group_slices: dict[str, slice] = layout.group_slices
        self.observation_names: list[str] = layout.names
        self.observation_descriptions = layout.descriptions
        self.observation_low = layout.low
        self.observation_high = layout.high
        self._action_ids = torch.arange(self.num_actions, device=self.device)
        self._observation_low = torch.as_tensor(self.observation_low, device=self.device)
        self._observation_high = torch.as_tensor(self.observation_high, device=self.device)

    @property
    def observation_dim(self) -> int:
        """Length of one observation vector: the features of the enabled observation groups."""
        return len(self.observation_names)

    # ---- sampling --------------------------------------------------------------------------------

    def seed(self, seeds: Sequence[int | None], indices: Sequence[int] | np.ndarray | None = None) -> None:
        """Seed the slots ``indices`` (default all): restarts their example stream. In
        ``sequential`` mode any seed also rewinds the shared cursor to the split's start."""
        idx = np.arange(self.num_envs) if indices is None else np.asarray(indices, dtype=np.int64)
        if len(seeds) != len(idx):
            raise ValueError(f"got {len(seeds)} seeds for {len(idx)} slots")
        self.sampler.restart(idx, [seed_to_key(s) for s in seeds], rewind=True)

    # ---- reset and step --------------------------------------------------------------------------

    def warm_up(self) -> int:
        """Run the main model once at every batch size the bucketed CPU kernels can meet in this
        core (up to ``num_envs`` rows; :meth:`dynalay_env.model.MainModel.warm_bucketed_shapes`),
        before a long run: its memory is then flat from the first step instead of growing while
        rarer group sizes first occur (``benchmarks/results/memory_soak_ppo_cpu.json``). Returns the
        number of sizes run (0 for a model with nothing bucketed). Results and compute are unchanged."""
        warm = getattr(self.model, "warm_bucketed_shapes", None)
        return 0 if warm is None else int(warm(self.x, self.num_envs))

    @torch.no_grad()
    def reset(self, indices: Sequence[int] | np.ndarray | None = None,
              examples: Sequence[int] | np.ndarray | None = None) -> Tensor:
        """Start new episodes in slots ``indices`` (default all); returns their observations
        ``[len(indices), obs_dim]`` (float32 tensor on the device). ``examples`` pins the example
        indices instead of drawing them (indices into the examples the env plays: the
        ``agent_train_size`` subset where one is set). With ``augment`` every started episode encodes
        a fresh distortion of its image, keyed by its slot's seed and episode count."""
        start = time.perf_counter()
        idx = self.start_episodes(indices, examples)
        obs = self.observations_tensor(idx) if idx.numel() else torch.zeros((0, self.observation_dim),
                                                                           device=self.device)
        self.last_step_seconds = time.perf_counter() - start
        return obs

    @torch.no_grad()
    def start_episodes(self, indices: Sequence[int] | np.ndarray | None = None,
                       examples: Sequence[int] | np.ndarray | None = None) -> Tensor:
        """:meth:`reset` without building the observations (for a caller that reads them later, or
        never: a vector env's next-step autoreset). Returns the started slots, int64 ``[n]`` on the
        device."""
        start = time.perf_counter()
        idx_np = np.arange(self.num_envs) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        idx = torch.as_tensor(idx_np, device=self.device)
        if idx_np.size == 0:
            return idx
        if examples is None:
            ex_np = self.sampler.draw(idx_np)
        else:
            ex_np = np.array(examples, dtype=np.int64).reshape(-1)
            if ex_np.shape != idx_np.shape or ex_np.min() < 0 or ex_np.max() >= self.num_examples:
                raise ValueError(f"examples must be {idx_np.size} indices in [0, {self.num_examples}), got {ex_np}")
        ex = torch.as_tensor(ex_np, device=self.device)
        inputs = self.x.index_select(0, ex)
        if self.augment:  # one batched distortion of every restarting slot's image, keyed per episode
            inputs = augment_images(inputs, self.sampler.episode_keys(idx_np))
        x_emb = self.model.encode(inputs)
        self.x_emb.index_copy_(0, idx, x_emb)
        self.z.index_copy_(0, idx, x_emb)
        self._classify_into(idx, x_emb)
        self.example[idx] = ex
        self.label[idx] = self.y[ex]
        self.steps[idx] = 0
        self.flops[idx] = self.flops_table.reset_flops()
        if self.spent is not self.flops:
            self.spent[idx] = self._reset_cost
        self.last_action[idx] = -1
        self.last_residual[idx] = 0.0
        self.last_iterations[idx] = 0
        self.last_max_iter[idx] = 1.0
        self.path[idx] = -1
        self.path_iterations[idx] = 0
        self.history[idx] = 0.0
        self.done[idx] = False
        self.last_step_seconds = time.perf_counter() - start
        return idx

    def group_sizes(self, actions: Tensor) -> list[int]:
        """How many slots chose each action, on the host. The step's one synchronisation besides the
        solver's own: executed work must equal counted work, so each layer's solve (and the solver,
        as samples converge) runs on exactly the samples that need it, and a kernel's batch size
        is a host value. Padding the groups to fixed sizes would run work that is not counted."""
        return torch.bincount(actions, minlength=self.num_actions).tolist()

    def _classify_into(self, idx: Tensor, z: Tensor) -> None:
        """Head logits and introspection of states ``z`` into slots ``idx``
        (:func:`~dynalay_env.model.head_and_introspection`)."""
        logits, hidden = head_and_introspection(self.model, z)
        self.logits.index_copy_(0, idx, logits)
        self.hidden.index_copy_(0, idx, hidden)
        if self.router is not None:
            with torch.no_grad():  # the router is read, never trained, by the env (cotrain included)
                probs = torch.softmax(self.router(z), dim=1)
            self.router_probs.index_copy_(0, idx, probs)  # type: ignore[union-attr]

    def validate_actions(self, actions: Any) -> Tensor:
        """Actions as a long tensor ``[N]``; a clear ``ValueError`` for a wrong shape, type or range."""
        if isinstance(actions, Tensor):
            arr = actions.to(self.device)
            is_integer = not (arr.dtype.is_floating_point or arr.dtype.is_complex or arr.dtype == torch.bool)
        else:
            # Host actions are checked on the host, before they travel: no round trip to the device.
            arr = np.asarray(actions)  # type: ignore[assignment]
            is_integer = np.issubdtype(arr.dtype, np.integer)
        if not is_integer:
            raise ValueError(f"actions must be integers in [0, {self.num_actions - 1}] (0 = EXIT, k = layer k), "
                             f"got dtype {getattr(actions, 'dtype', type(actions).__name__)}")
        size = arr.numel() if isinstance(arr, Tensor) else arr.size
        arr = arr.reshape(-1) if arr.ndim <= 1 and size == self.num_envs else arr
        if tuple(arr.shape) != (self.num_envs,):
            raise ValueError(f"expected an action batch of shape ({self.num_envs},), got {tuple(arr.shape)}")
        bad = (arr < 0) | (arr >= self.num_actions)
        if isinstance(arr, np.ndarray):
            if bad.any():
                self._raise_bad_action(arr, int(np.flatnonzero(bad)[0]))
            return torch.as_tensor(arr, device=self.device).long()
        if arr.device.type != "cpu":
            # A device batch is checked on the device: an out-of-range action fails asynchronously.
            torch._assert_async(~bad.any(), f"an action is out of range; valid actions are 0..{self.num_actions - 1}")
        elif bool(bad.any()):
            self._raise_bad_action(arr.numpy(), int(bad.nonzero()[0, 0]))
        return arr.long()

    def _raise_bad_action(self, arr: np.ndarray, slot: int) -> None:
        raise ValueError(f"action {int(arr[slot])} in slot {slot} is out of range; valid actions are "
                         f"0..{self.num_actions - 1} (0 = EXIT, k = apply layers[k-1])")

    @torch.no_grad()
    def step(self, actions: Any, active: Any = None) -> StepOutput:
        """Apply one action per slot. Masked actions (see :meth:`action_masks`) are executed as EXIT
        and flagged in ``info['masked_action']``.

        ``active`` (bool ``[N]``, default all): only these slots step; the others are left as they
        are (reward 0, not terminated) -- how a vector env skips the slots it is autoresetting.
        Every active slot must be running (reset since its last terminal step).
        """
        start = time.perf_counter()
        act = self.validate_actions(actions)
        if active is None:
            active_t = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        else:
            active_t = torch.as_tensor(np.asarray(active, dtype=bool) if not isinstance(active, Tensor) else active,
                                       device=self.device).reshape(-1)
            if active_t.shape != (self.num_envs,):
                raise ValueError(f"active must be a bool mask of shape ({self.num_envs},), got {tuple(active_t.shape)}")
        running_ok = ~(self.done & active_t).any()
        if self.device.type != "cpu":
            torch._assert_async(running_ok, "step() called on a finished episode slot; call reset() first")
        elif not bool(running_ok):
            finished = (self.done & active_t).nonzero().flatten().tolist()
            raise RuntimeError(f"step() called on finished episode slot(s) {finished[:8]}; call reset() first")
        if self.mask_repeats or self.compute_budget is not None:
            masked = active_t & ~self.action_masks_tensor().gather(1, act.unsqueeze(1)).squeeze(1)
            act = torch.where(masked | ~active_t, 0, act)
        else:  # every action is allowed
            masked = torch.zeros_like(active_t)
            act = act * active_t
        prev_logits = self.logits.clone()
        prev_spent = self.spent.clone()
        repeated = (act > 0) & (act == self.last_action)
        moved = act > 0

        # One batched solve per chosen layer: sort slots by action once, split into groups.
        counts = self.group_sizes(act)
        if sum(counts[1:]):
            self._apply_layers(act, counts, moved, prev_logits)
        self.last_action = torch.where(active_t, act, self.last_action)

        terminated = active_t & (~moved | (self.steps >= self.max_steps))
        log_probs = torch.log_softmax(self.logits, dim=1)
        prediction = self.logits.argmax(1)
        correct = prediction == self.label
        # The policy's own cost, in the reward only: one decision per step (an EXIT, masked or not,
        # is one; the forced exit at max_steps is the last layer's step, not another decision).
        # Decisions are priced as their share of the full-depth model's FLOPs under either cost (a
        # latency table times the model, not the policy).
        decision = self.decision_flops / self.flops_normalizer
        decisions = self.steps.double() + (~moved).double()
        label = self.label.unsqueeze(1)
        inputs = RewardInputs(
            step_compute=(self.spent - prev_spent) / self.normalizer + decision,
            total_compute=self.spent / self.normalizer + decision * decisions,
            repeated=repeated,
            terminal=terminated,
            correct=correct,
            log_prob_true=log_probs.gather(1, label).squeeze(1),
            prob_true_before=torch.softmax(prev_logits, 1).gather(1, label).squeeze(1),
            prob_true_after=log_probs.exp().gather(1, label).squeeze(1),
        )
        reward = torch.where(active_t, self.reward(inputs), 0.0)
        self.done |= terminated
        obs = self.observations_tensor()
        info = LazyInfo(self.info_tensors(prediction, correct, masked, repeated))
        self.last_step_seconds = time.perf_counter() - start
        if self.cotrainer is not None and self.cotrainer.active:
            # After the step's outputs are computed: the model moves only between env steps.
            done = np.flatnonzero(terminated.cpu().numpy())
            if done.size:
                if self.cotrainer.add(info["example"][done], info["path"][done], info["correct"][done]):
                    # The model moved: a model's introspection may have parameters, so redo it.
                    self.hidden.copy_(self.model.introspect(self.z))
        return StepOutput(obs, reward.float(), terminated, info)

    def _apply_layers(self, act: Tensor, counts: list[int], moved: Tensor, prev_logits: Tensor) -> None:
        """Apply each slot's layer (``act`` ``[N]``, 0 = none; ``counts``: slots per action) with one
        batched solve per chosen layer, and record the new states, their cost, path, solver figures,
        head and (when observed) history. ``moved`` = ``act > 0``; ``prev_logits`` ``[N, C]``: the
        head's logits before the step."""
        order = torch.argsort(act, stable=True)
        moved_idx = order[counts[0]:]
        states, residuals, iterations, max_iters, firsts = [], [], [], [], []
        offset = counts[0]
        for k, count in enumerate(counts[1:]):
            if count == 0:
                continue
            group = order[offset:offset + count]
            offset += count
            result = self.model.apply_layer(k, self.z.index_select(0, group), self.x_emb.index_select(0, group))
            self.flops.index_add_(0, group, self.flops_table.step_cost(k, result))  # injection + solve + head
            if self.spent is not self.flops:
                self.spent.index_add_(0, group, self.costs.step_cost(k, result))
            states.append(result.state)
            residuals.append(result.residual.float())
            if self._track_history:  # a solver that does not record it reports no contraction (0)
                first = result.first_residual
                firsts.append(torch.zeros_like(residuals[-1]) if first is None else first.float())
            iterations.append(result.iterations)
            max_iters.append(self._max_iter[k].expand(count))
        z_moved = torch.cat(states)
        its = torch.cat(iterations)
        step_moved = self.steps.index_select(0, moved_idx)
        z_before = self.z.index_select(0, moved_idx) if self._track_history else None
        self.z.index_copy_(0, moved_idx, z_moved)
        self.last_residual.index_copy_(0, moved_idx, torch.cat(residuals))
        self.last_iterations.index_copy_(0, moved_idx, its)
        self.last_max_iter.index_copy_(0, moved_idx, torch.cat(max_iters))
        self.path_iterations[moved_idx, step_moved] = its
        self.path[moved_idx, step_moved] = act.index_select(0, moved_idx)
        self.steps += moved
        self._classify_into(moved_idx, z_moved)
        if z_before is not None:
            self._update_history(moved_idx, z_before, z_moved, prev_logits.index_select(0, moved_idx),
                                 self.last_residual.index_select(0, moved_idx), torch.cat(firsts))

    def _update_history(self, idx: Tensor, z_before: Tensor, z_after: Tensor, logits_before: Tensor,
                        residual: Tensor, first_residual: Tensor) -> None:
        """The ``history`` features (:data:`HISTORY_FEATURES`) of slots ``idx`` ``[m]``, whose state
        moved from ``z_before`` to ``z_after`` (``[m, *state_shape]``) and whose head logits moved
        from ``logits_before`` ``[m, C]`` to ``self.logits[idx]``, in one batched computation on the
        device (no host synchronisation). ``residual`` / ``first_residual`` ``[m]``: the final and
        first relative residuals of the solve that moved them."""
        features = history_features(z_before, z_after, logits_before, self.logits.index_select(0, idx),
                                    self.history.index_select(0, idx)[:, 2], self.max_steps, residual,
                                    first_residual)
        self.history.index_copy_(0, idx, torch.minimum(torch.maximum(features, self._history_low), self._history_high))

    # ---- observations, masks, info ---------------------------------------------------------------

    def observations_tensor(self, idx: Tensor | None = None) -> Tensor:
        """Observations ``[n, obs_dim]`` float32 of slots ``idx`` (default all), on ``device``."""
        sel = slice(None) if idx is None else idx
        parts: list[Tensor] = []
        if "hidden" in self.observation_groups:
            parts.append(self.hidden[sel])
        if "head" in self.observation_groups:
            probs = torch.softmax(self.logits[sel], dim=1)
            top2 = probs.topk(min(2, self.num_classes), dim=1).values
            margin = top2[:, 0] - (top2[:, 1] if self.num_classes > 1 else 0.0)
            entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(1) / math.log(max(self.num_classes, 2))
            parts += [probs, top2[:, :1], margin.unsqueeze(1), entropy.clamp(0, 1).unsqueeze(1)]
        if "progress" in self.observation_groups:
            parts.append((self.steps[sel].float() / self.max_steps).unsqueeze(1))
            parts.append((self.spent[sel] / self.normalizer).float().unsqueeze(1))
        if "last_action" in self.observation_groups:
            last = self.last_action[sel]
            # A one-hot by comparison, not by indexing with the started rows (that needs their count).
            parts.append(last.unsqueeze(1) == self._action_ids)
        if "solver" in self.observation_groups:
            parts.append(self.last_residual[sel].clamp(0, 1).unsqueeze(1))
            parts.append((self.last_iterations[sel].double() / self.last_max_iter[sel]).float().unsqueeze(1))
        if "history" in self.observation_groups:
            parts.append(self.history[sel])
        if self.router_probs is not None:
            parts.append(self.router_probs[sel])
        obs = torch.cat([p.float() for p in parts], dim=1)
        return torch.minimum(torch.maximum(obs, self._observation_low), self._observation_high)

    def action_masks_tensor(self) -> Tensor:
        """``[N, K+1]`` bool: EXIT always allowed; layers subject to ``mask_repeats`` and
        ``compute_budget``."""
        mask = torch.ones(self.num_envs, self.num_actions, dtype=torch.bool, device=self.device)
        if self.mask_repeats:
            # The layer just applied (EXIT, 0, is never masked), without host-side row counts.
            mask &= ~((self.last_action.unsqueeze(1) == self._action_ids) & (self._action_ids > 0))
        if self.compute_budget is not None:
            spent = (self.spent / self.normalizer).unsqueeze(1)
            mask[:, 1:] &= (spent + self._worst_step.unsqueeze(0)) <= self.compute_budget
        return mask

    def action_masks(self) -> np.ndarray:
        """``[N, K + 1]`` bool numpy masks of the allowed actions per slot (EXIT is always allowed)."""
        return self.action_masks_tensor().cpu().numpy()

    def info_tensors(self, prediction: Tensor | None = None, correct: Tensor | None = None,
                     masked_action: Tensor | None = None, repeated: Tensor | None = None) -> dict[str, Tensor]:
        """Per-slot info as fresh device tensors (leading dim N): later steps never change them.

        The keys, dtypes and shapes are the same after a reset and after a step (fixed-shape info):
        ``masked_action`` and ``repeated`` (bool ``[N]``) are False unless a step says otherwise;
        ``path`` (int64 ``[N, max_steps]``, -1 past the steps taken) and ``fpi_iterations`` (int64
        ``[N, max_steps]``, 0 past the steps taken) are padded.
        """
        if prediction is None:
            prediction = self.logits.argmax(1)
        if correct is None:
            correct = prediction == self.label
        if masked_action is None:
            masked_action = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        if repeated is None:
            repeated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        # .clone(): these state tensors are updated in place by later steps.
        return {
            "example": self.example.clone(),
            "label": self.label.clone(),
            "prediction": prediction,
            "correct": correct,
            "step": self.steps.clone(),
            "compute": self.spent / self.normalizer,
            "flops": self.flops.clone(),
            "path": self.path.clone(),
            "fpi_iterations": self.path_iterations.clone(),
            "action_mask": self.action_masks_tensor(),
            "masked_action": masked_action,
            "repeated": repeated,
            **{key: value.index_select(0, self.example) for key, value in self._example_info.items()},
        }

    def info_arrays(self) -> dict[str, Any]:
        """Per-slot info of the current states as fresh numpy arrays (leading dim N; the keys of
        :meth:`info_tensors`): later steps never change them."""
        return dict(LazyInfo(self.info_tensors()))

    #: Options that can change on a live core (the others size its buffers or spaces).
    SETTABLE_OPTIONS: tuple[str, ...] = SETTABLE_OPTIONS

    def set_option(self, name: str, value: Any) -> None:
        """Change a live option (``mask_repeats``, ``compute_budget``, ``decision_flops``, ``reward``),
        validated as the constructor validates it; anything else needs a new env, because it sizes
        buffers or the observation space. A new ``reward`` comes with its default parameters."""
        if name == "reward":
            defaults = {f: EnvOptions.default(f) for f in REWARD_PARAM_NAMES}
            self.options = self.options.replace(reward=value, **defaults)
            self.reward = self.options.make_reward()
        elif name in self.SETTABLE_OPTIONS:
            self.options = self.options.replace(**{name: value})
            self.mask_repeats = self.options.mask_repeats
            self.compute_budget = self.options.compute_budget
            self.decision_flops = self.options.decision_flops
        else:
            raise ValueError(f"option {name!r} cannot change on a live env (it sizes buffers or spaces); "
                             f"settable: {', '.join(self.SETTABLE_OPTIONS + ('reward',))}. Make a new env instead.")

    # ---- rendering -------------------------------------------------------------------------------

    def trace(self, slot: int = 0) -> str:
        """One line: the path of slot ``slot`` with per-step iterations, its compute and prediction."""
        steps = int(self.steps[slot])
        hops = [f"L{int(self.path[slot, t])}({int(self.path_iterations[slot, t])} it)" for t in range(steps)]
        pred = int(self.logits[slot].argmax())
        label = int(self.label[slot])
        state = "done" if bool(self.done[slot]) else "running"
        return (f"example {int(self.example[slot])}: enc -> {' -> '.join(hops) if hops else '(no layer)'} | "
                f"compute {float(self.spent[slot]) / self.normalizer:.3f} ({float(self.flops[slot]) / 1e6:.2f} MFLOPs) | "
                f"pred {pred} label {label} {'ok' if pred == label else 'wrong'} | {state}")
