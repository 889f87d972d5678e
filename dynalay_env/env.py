"""``DynaLayEnv``: one DynaLay episode at a time, a Gymnasium ``Env`` over :class:`DynaLayCore`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dynalay_env import cache as model_cache
from dynalay_env.cache import resolve_model
from dynalay_env.core import DynaLayCore
from dynalay_env.datasets import Dataset, load_dataset
from dynalay_env.device import resolve_device
from dynalay_env.latency import load_latency_table
from dynalay_env.model import FPIModel, MainModel
from dynalay_env.options import REWARD_PARAM_NAMES, EnvOptions
from dynalay_env.render import FrameRenderer

#: The env's own options (not the reward's parameters), ``reward_kwargs`` included.
ENV_OPTIONS: tuple[str, ...] = tuple(name for name in EnvOptions.names() if name not in REWARD_PARAM_NAMES)


def make_core(num_envs: int, options: EnvOptions | None = None, **kwargs: Any) -> DynaLayCore:
    """Build the batched core of N = ``num_envs`` episode slots from the env's options: an
    :class:`~dynalay_env.options.EnvOptions`, or its keywords (what ``gym.make`` and rl-zoo3's
    ``--env-kwargs`` pass: ``make_core(8, max_steps=3, lambda_compute=0.2)``), or both (the keywords
    change the given options). Resolves the dataset, the device and the main model (see
    :func:`~dynalay_env.cache.resolve_model`)."""
    options = EnvOptions.resolve(options, kwargs)
    dev = resolve_device(options.device)
    ds = options.dataset if isinstance(options.dataset, Dataset) else load_dataset(options.dataset,
                                                                                   data_root=options.data_root)
    source = options.model
    find_table = options.cost == "latency" and options.latency_table is None
    if find_table:  # the table lives beside the checkpoint, so the checkpoint's path is needed
        if source is None:
            source = model_cache.cached_default_model(ds, data_root=options.data_root)
        if not isinstance(source, (str, os.PathLike)):
            raise ValueError("cost='latency' with a model object needs latency_table=: a LatencyTable or the JSON "
                             "file that `dynalay profile` wrote")
    fpi_model, provenance = resolve_model(source, ds, data_root=options.data_root, device=dev)
    if find_table:
        if not isinstance(fpi_model, MainModel):
            raise ValueError(f"cost='latency' needs a MainModel, got {type(fpi_model).__name__}")
        options = options.replace(latency_table=load_latency_table(source, fpi_model, device=dev))
    return DynaLayCore(fpi_model, ds, num_envs, options=options, provenance=provenance)


def given_sources(dataset: str | Dataset | None, model: Any) -> dict[str, Any]:
    """The ``dataset`` and ``model`` an env face was given positionally, as keywords (None: not given,
    the options or their defaults decide)."""
    return {name: value for name, value in (("dataset", dataset), ("model", model)) if value is not None}


def observation_space_of(core: DynaLayCore) -> spaces.Box:
    """The ``Box(float32)`` observation space of ``core``: its per-feature lower and upper bounds."""
    return spaces.Box(core.observation_low, core.observation_high, dtype=np.float32)


class CoreFacts:
    """Facts about the env that are not numbers of the trajectory, read from its core; shared by the
    single and the vector env."""

    core: DynaLayCore

    @property
    def provenance(self) -> str:
        """Id of the main model, its data and the package version (see ``dynalay_env.model``)."""
        return self.core.provenance

    @property
    def last_step_seconds(self) -> float:
        """Wall-clock seconds of the last ``reset`` or ``step`` (a measurement, not in ``info``)."""
        return self.core.last_step_seconds

    @property
    def observation_names(self) -> list[str]:
        """Name of every observation feature, in order."""
        return self.core.observation_names


class DynaLayEnv(CoreFacts, gym.Env[np.ndarray, np.int64]):
    """Adaptive depth as an MDP: pick the next FPI layer of a main model, or exit and classify.

    ## Description

    A main model (encoder -> K fixed-point-iteration layers -> one shared head, see
    ``dynalay_env.model``) classifies one example per episode. At each step the agent looks at the
    model's introspected state and either applies one of the K layers (each solved to its fixed
    point, with a per-example iteration count) or exits and answers with the head's prediction. The
    paper's trade-off (Mathur & Plis 2023, DynaLay): be right, spend little compute, don't repeat
    layers for nothing. Easy examples should exit early; hard ones deserve more layers.

    ## Action Space

    ``Discrete(K + 1)``; with the default model K = 3.

    | Num | Action                                                        |
    |-----|---------------------------------------------------------------|
    | 0   | EXIT: classify the current state, end the episode              |
    | k   | apply ``layers[k-1]``: solve ``z = f_k(z, u)`` from the current state |

    The default layers cost more as k grows (bottleneck rank 4, 12, 32). Action masks
    (``action_masks()`` for sb3-contrib's MaskablePPO, and ``info["action_mask"]``) forbid
    re-applying the layer just applied (``mask_repeats=True``) and layers whose worst case would
    exceed ``compute_budget``. A masked action is executed as EXIT and flagged in
    ``info["masked_action"]``.

    ## Observation Space

    ``Box(float32)``, the concatenation of the enabled groups (``observation_groups``);
    ``env.unwrapped.observation_names`` names every feature and
    ``env.unwrapped.observation_descriptions`` says what it means.

    | Group         | Features                                  | Range          |
    |---------------|-------------------------------------------|----------------|
    | ``hidden``    | pooled hidden state (2C for conv models)  | (-inf, inf)    |
    | ``head``      | class probabilities, top-1, margin, normalised entropy | [0, 1] |
    | ``progress``  | step / max_steps, normalised compute spent | [0, 1], [0, bound] |
    | ``last_action`` | one-hot of the previous action          | {0, 1}         |
    | ``solver``    | last FPI relative residual, iterations / max_iter | [0, 1] |
    | ``history``   | opt-in: has_history, prediction agrees with / run since the previous state, JS divergence and previous top-1, state change and cosine, solver contraction | [0, 1]; cosine [-1, 1] |

    ## Rewards

    Chosen with ``reward`` (a name or a callable; see ``dynalay_env.rewards``). Default ``paper``:
    ``[terminal] * (+1 if correct else -1) - lambda_compute * step_compute - mu_redundant * [repeat]``
    (defaults in the Arguments table). Compute is in FLOPs actually executed
    (injection + per-example iterations x FLOPs per iteration + the head at the new state),
    normalised so that 1.0 = the full-depth model (layers 1..K once each) on ``val``. Also
    ``blockdrop`` (``1 - c^2`` if correct, else ``wrong_reward``) and ``logprob``
    (``log p(y) - lambda_compute * c``), plus optional potential-based shaping.

    ## Starting State

    An example drawn from ``split`` (default ``agent_train``): uniformly with the env's seeded
    generator (``sample_mode="random"``) or in order, each exactly once per pass
    (``"sequential"``). The encoder and the head have run on it; their cost is in ``info["compute"]``.

    ## Episode End

    The episode terminates (``terminated=True``) on EXIT, or when ``max_steps`` layers
    have been applied: that step classifies the state reached (forced exit; part of the MDP, not a
    time limit). ``truncated`` is always False.

    ## Info

    Every ``info`` (after ``reset`` and after ``step``) has the same keys, dtypes and shapes, the same
    as one slot of ``gym.make_vec``'s vector env and of Gymnasium's ``SyncVectorEnv`` over this env,
    so any vectoriser or tensordict can stack it. Scalars are Python ``int``, ``float`` and ``bool``,
    which numpy and Gymnasium's vector envs store with the dtype shown; the others are numpy arrays.

    | Key | dtype | shape | Meaning |
    |---|---|---|---|
    | ``example`` | int64 | () | index of the example in the split |
    | ``label`` | int64 | () | its true class |
    | ``prediction`` | int64 | () | the head's class at the current state |
    | ``correct`` | bool | () | ``prediction == label`` |
    | ``step`` | int64 | () | layers applied so far (0 at reset) |
    | ``compute`` | float64 | () | cumulative normalised compute (1.0 = full depth), encoder and heads included |
    | ``flops`` | float64 | () | cumulative FLOPs executed |
    | ``path`` | int64 | (max_steps,) | actions applied, in order; **-1** past ``step`` |
    | ``fpi_iterations`` | int64 | (max_steps,) | solver iterations of each applied layer; **0** past ``step`` |
    | ``action_mask`` | bool | (K+1,) | actions allowed at the current state |
    | ``masked_action`` | bool | () | this step's action was masked and ran as EXIT (False at reset) |
    | ``repeated`` | bool | () | this step re-applied the layer just applied (False at reset) |
    | ``noisy_label`` | bool | () | the example's label was replaced by a wrong one (task variants with ``label_noise``; False otherwise) |
    | ``severity`` | int64 | () | the example's corruption severity, 0 (clean) to 4 (task variants with ``corruption``); **-1** where nothing was corrupted |

    ``path[:step]`` is the path as a list. Two facts that are not numbers of the trajectory live on
    the env instead: ``env.unwrapped.provenance`` (str: the id of the main model, its data and the
    package version; every report records it) and ``env.unwrapped.last_step_seconds`` (wall-clock
    seconds of the last ``reset``/``step``, a measurement: seeded replays give equal infos, as
    Gymnasium's determinism check wants).

    ## Arguments

    | Argument | Default | Meaning |
    |---|---|---|
    | ``dataset`` | ``"mnist1d"`` | registered dataset name (``dynalay_env.datasets.list_datasets()``) or a ``Dataset`` |
    | Argument | Default | Meaning |
    |---|---|---|
    | ``dataset`` | ``"mnist1d"`` | registered dataset name (``dynalay_env.datasets.list_datasets()``) or a ``Dataset`` |
    | ``model`` | None | checkpoint path, ``FPIModel`` object, or None for the default model (user cache, else shipped, else pre-trained on first use) |
    | ``data_root`` | None | folder of local dataset files (mnist, fashion_mnist, cifar10) |
    | ``split`` | ``"agent_train"`` | the split episodes are drawn from; one of ``"model_train"``, ``"agent_train"``, ``"val"``, ``"test"`` |
    | ``sample_mode`` | ``"random"`` | how episodes pick examples: seeded at random, or each once per pass in order; one of ``"random"``, ``"sequential"`` |
    | ``agent_train_size`` | None | ``split="agent_train"`` only: episodes draw from its first N examples in a fixed permutation (the same in every process: ``dynalay_env.sampling.subset_indices``; ``info["example"]`` indexes that subset, ``core.example_ids`` maps it to the split); None: all of it |
    | ``augment`` | False | ``split="agent_train"`` only, image inputs ``[C, H, W]``: each episode's input is a fresh random shift, rotation and elastic distortion of its image (``dynalay_env.augment``), seeded by the slot's seed; labels unchanged, the main model frozen |
    | ``max_steps`` | 4 | layers applied before a forced exit (>= 1) |
    | ``reward`` | ``"paper"`` | reward name (``dynalay_env.rewards.list_rewards()``) or callable; its parameters are the options below or ``reward_kwargs={...}`` |
    | ``lambda_compute`` | 0.1 | price of one unit of normalised compute (>= 0) |
    | ``mu_redundant`` | 0.05 | penalty for re-applying the layer just applied (>= 0) |
    | ``correct_reward`` | 1.0 | terminal reward of a right answer |
    | ``wrong_reward`` | -1.0 | terminal reward of a wrong answer |
    | ``shaping`` | None | potential-based shaping (``confidence``: the potential is the head's probability of the label); one of None, ``"confidence"`` |
    | ``shaping_gamma`` | 1.0 | discount of the shaping term, in [0, 1] (the agent's own discount keeps the optimal policy) |
    | ``observation_groups`` | all but ``history`` and ``router`` | subset of ``hidden, head, progress, last_action, solver, history, router`` (``router``: models with a router only; its FLOPs are charged at every visited state) |
    | ``mask_repeats`` | False | forbid re-applying the layer just applied |
    | ``compute_budget`` | None | forbid layers that could exceed this normalised compute; the worst case counts ``max_iter`` solver iterations per layer, so with a model of ``solver="anderson"`` its mixing work can take an episode past the budget |
    | ``decision_flops`` | 0 | FLOPs charged per decision of the policy (>= 0), in the reward only: each step (EXIT included, not the forced exit at ``max_steps``) adds ``decision_flops`` over the full-depth model's FLOPs to the reward's compute (under either ``cost``); ``info["compute"]`` stays env-only. Settable on a live env (``core.set_option``, ``set_attr``) |
    | ``cost`` | ``"flops"`` | what compute counts: ``flops`` (multiplications executed: exact, the same on every machine) or ``latency`` (seconds from a table measured on this device by ``dynalay profile``: table-estimated); ``info["flops"]`` stays the FLOPs executed; one of ``"flops"``, ``"latency"`` |
    | ``latency_table`` | None | ``cost="latency"`` only: a ``LatencyTable`` or the JSON file ``dynalay profile`` wrote; None: the table beside the model's checkpoint for this device and thread count |
    | ``device`` | ``"cpu"`` | ``cpu``, ``cuda`` or ``cuda:N`` |
    | ``mode`` | ``"frozen"`` | the main model is fixed (``frozen``) or keeps learning on the agent's paths (``cotrain``); one of ``"frozen"``, ``"cotrain"`` |
    | ``cotrain_lr`` | None (0.0001) | ``cotrain`` only: Adam step size of the main model (> 0) |
    | ``cotrain_every`` | None (64) | ``cotrain`` only: M, finished episodes per main-model optimiser step (>= 1) |

    The reward's parameters may also come as one mapping, ``reward_kwargs={"lambda_compute": 0.2}``
    (a top-level keyword wins), and every option as one
    :class:`~dynalay_env.options.EnvOptions` (``options=EnvOptions(...)``). ``render_mode`` (default
    None), an option of this face only: ``"ansi"``: ``render()`` returns a one-line trace;
    ``"rgb_array"``: a ``uint8 [360, 640, 3]`` frame of the input, the path with each layer's
    iterations, the head's class probabilities and the compute spent (``dynalay_env.render``).

    ## Co-training (``mode="cotrain"``)

    The main model is trained in place while the agent plays: every ``cotrain_every`` (M) finished
    episodes, one batched Adam step (``cotrain_lr``) on the head's cross-entropy at every state of
    each episode's own path, with the FPI layers' backward pass (``dynalay_env.cotrain``). Episodes
    must come from ``agent_train``. The compute normaliser and the observation bounds stay frozen.
    The env is then **non-stationary**: the same seed and actions give other observations and rewards
    once the model has moved, so Gymnasium's determinism check does not apply to this mode. Keep one
    model per process: use ``gym.make_vec`` (one batched core), not a vector of single envs, each of
    which would load and train its own copy. ``env.unwrapped.core.cotrainer`` holds the optimiser,
    its checkpointable state (``state_dict()``) and the per-update statistics.

    ```python
    import gymnasium as gym, dynalay_env
    env = gym.make("DynaLay-MNIST1D-v0", lambda_compute=0.2, mask_repeats=True)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(1)   # apply layer 1
    ```
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, dataset: str | Dataset | None = None, model: FPIModel | str | os.PathLike | None = None,
                 *, render_mode: str | None = None, core: DynaLayCore | None = None,
                 options: EnvOptions | None = None, **kwargs: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; valid: {self.metadata['render_modes']} or None")
        if core is None:
            core = make_core(1, options, **given_sources(dataset, model), **kwargs)
        elif core.num_envs != 1:
            raise ValueError(f"DynaLayEnv needs a core with num_envs=1, got {core.num_envs}")
        self.core = core
        self.render_mode = render_mode
        self._renderer: FrameRenderer | None = None  # made on the first rgb_array frame
        self.action_space = spaces.Discrete(core.num_actions)
        self.observation_space = observation_space_of(core)
        self._needs_reset = True
        self._stream_seeded = False

    # Gymnasium's conventions: meanings of the observation features (names: CoreFacts).
    @property
    def observation_descriptions(self) -> dict[str, str]:
        """What each observation feature (or feature pattern such as ``prob_c``) means."""
        return self.core.observation_descriptions

    @property
    def num_layers(self) -> int:
        """K, the number of FPI layers of the main model (actions ``1..K``)."""
        return self.core.num_layers

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode. ``options={"example": i}`` pins the example index in the split."""
        super().reset(seed=seed)
        if seed is not None or not self._stream_seeded:
            # The slot's example stream is drawn from self.np_random, so reset(seed=s) replays it.
            key = int(self.np_random.integers(0, 2**63 - 1))
            self.core.sampler.restart([0], [key], rewind=seed is not None)
            self._stream_seeded = True
        example = None if not options or "example" not in options else [options["example"]]
        obs = self.core.reset([0], examples=example)[0].cpu().numpy()
        self._needs_reset = False
        info = self._info(self.core.info_arrays())
        return obs, info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply ``action`` (0 = EXIT, k = layer k); returns ``(obs, reward, terminated, truncated, info)``.

        Raises ``ValueError`` for an action that is not an integer in ``[0, K]``, and ``RuntimeError``
        when called before :meth:`reset` or after the episode ended.
        """
        if self._needs_reset:
            raise RuntimeError("step() called before reset() or after the episode terminated; call reset() first")
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)) and not (
                isinstance(action, np.ndarray) and action.shape in ((), (1,)) and np.issubdtype(action.dtype, np.integer)):
            raise ValueError(f"action must be an integer in [0, {self.core.num_actions - 1}] (0 = EXIT, "
                             f"k = apply layers[k-1]), got {action!r} of type {type(action).__name__}")
        out = self.core.step(np.asarray([int(np.asarray(action).reshape(-1)[0])], dtype=np.int64))
        terminated = bool(out.terminated[0])
        self._needs_reset = terminated
        info = self._info(out.info)
        return out.obs[0].cpu().numpy(), float(out.reward[0]), terminated, False, info

    def _info(self, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Slot 0 of the core's info arrays: Python scalars and fresh fixed-size arrays (see Info)."""
        return {key: value[0].copy() if value.ndim > 1 else value[0].item() for key, value in arrays.items()}


    def action_masks(self) -> np.ndarray:
        """``[K+1]`` bool mask of allowed actions (sb3-contrib MaskablePPO's hook)."""
        return self.core.action_masks()[0]

    def render(self) -> str | np.ndarray | None:
        """``ansi``: a one-line trace; ``rgb_array``: a ``uint8 [360, 640, 3]`` frame; None otherwise."""
        if self.render_mode == "ansi":
            return self.core.trace(0)
        if self.render_mode == "rgb_array":
            if self._renderer is None:
                self._renderer = FrameRenderer(self.core)
            return self._renderer.frame(0)
        return None


def make_experts_env(**options: Any) -> DynaLayEnv:
    """``gym.make("DynaLay-MNIST5k-Experts-v0")``'s entry point: a :class:`DynaLayEnv` on MNIST-5k whose
    default model is the expert model with its router (:func:`~dynalay_env.cache.cached_expert_model`);
    every env option works as for the other ids, ``model=...`` included."""
    return DynaLayEnv(**model_cache.with_expert_model(options))
