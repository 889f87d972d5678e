"""``DynaLayEnv``: one DynaLay episode at a time, a Gymnasium ``Env`` over :class:`DynaLayCore`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dynalay_env.core import DEFAULT_OBSERVATION_GROUPS, DynaLayCore
from dynalay_env.data import DEFAULT_DATASET, Dataset, load_dataset
from dynalay_env.model import FPIModel
from dynalay_env.render import FrameRenderer
from dynalay_env.rewards import RewardParams

REWARD_PARAM_NAMES: tuple[str, ...] = tuple(RewardParams.__dataclass_fields__)


def make_core(num_envs: int, *, dataset: str | Dataset = DEFAULT_DATASET,
              model: FPIModel | str | os.PathLike | None = None, data_root: str | os.PathLike | None = None,
              split: str = "agent_train", sample_mode: str = "random", max_steps: int = 4,
              reward: str | Callable[..., Any] = "paper", reward_kwargs: dict[str, Any] | None = None,
              observation_groups: Sequence[str] = DEFAULT_OBSERVATION_GROUPS, mask_repeats: bool = False,
              compute_budget: float | None = None, device: str = "cpu", mode: str = "frozen",
              cotrain_lr: float | None = None, cotrain_every: int | None = None, decision_flops: float = 0.0,
              **reward_params: Any) -> DynaLayCore:
    """Build the batched core from the same options every face of the env accepts.

    Reward parameters may come as ``reward_kwargs={...}`` or as top-level keywords
    (``lambda_compute=0.2``), which is what ``gym.make`` / rl-zoo3's ``--env-kwargs`` pass.
    """
    from dynalay_env.cache import resolve_model
    from dynalay_env.pretrain import resolve_device

    unknown = [name for name in reward_params if name not in REWARD_PARAM_NAMES]
    if unknown:
        raise unexpected_keyword(unknown)
    merged = {**(reward_kwargs or {}), **reward_params}
    dev = resolve_device(device)
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_root=data_root)
    fpi_model, provenance = resolve_model(model, ds, data_root=data_root, device=dev)
    return DynaLayCore(fpi_model, ds, num_envs, split=split, sample_mode=sample_mode, max_steps=max_steps,
                       reward=reward, reward_kwargs=merged, observation_groups=observation_groups,
                       mask_repeats=mask_repeats, compute_budget=compute_budget, device=dev, mode=mode,
                       provenance=provenance, cotrain_lr=cotrain_lr, cotrain_every=cotrain_every,
                       decision_flops=decision_flops)


ENV_OPTIONS: tuple[str, ...] = ("dataset", "model", "data_root", "split", "sample_mode", "max_steps", "reward",
                                "reward_kwargs", "observation_groups", "mask_repeats", "compute_budget",
                                "device", "mode", "cotrain_lr", "cotrain_every", "decision_flops")


#: Options of the vector faces only (``gym.make_vec(id, num_envs=N, autoreset_mode=...)``).
VECTOR_ONLY_OPTIONS: tuple[str, ...] = ("autoreset_mode", "return_tensors")


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
                     f"{', '.join(sorted(ENV_OPTIONS + REWARD_PARAM_NAMES))}")


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
    with ``lambda_compute=0.1``, ``mu_redundant=0.05``. Compute is in FLOPs actually executed
    (injection + per-example iterations x FLOPs per iteration + the head at the new state),
    normalised so that 1.0 = the full-depth model (layers 1..K once each) on ``val``. Also
    ``blockdrop`` (``1 - c^2`` if correct, else ``wrong_reward``) and ``logprob``
    (``log p(y) - lambda_compute * c``), plus optional potential-based shaping.

    ## Starting State

    An example drawn from ``split`` (default ``agent_train``): uniformly with the env's seeded
    generator (``sample_mode="random"``) or in order, each exactly once per pass
    (``"sequential"``). The encoder and the head have run on it; their cost is in ``info["compute"]``.

    ## Episode End

    The episode terminates (``terminated=True``) on EXIT, or when ``max_steps`` layers (default 4)
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
    | ``dataset`` | ``"mnist1d"`` | registered dataset name (``dynalay_env.data.available_datasets()``) or a ``Dataset`` |
    | ``model`` | ``None`` | checkpoint path, ``FPIModel`` object, or None for the default model (user cache, else shipped, else pre-trained on first use) |
    | ``data_root`` | ``None`` | folder of local dataset files (mnist, fashion_mnist, cifar10) |
    | ``split`` | ``"agent_train"`` | ``model_train``, ``agent_train``, ``val`` or ``test`` |
    | ``sample_mode`` | ``"random"`` | ``random`` or ``sequential`` |
    | ``max_steps`` | 4 | layers before a forced exit |
    | ``reward`` | ``"paper"`` | reward name or callable; parameters in ``reward_kwargs`` or as keywords (``lambda_compute``, ``mu_redundant``, ``correct_reward``, ``wrong_reward``, ``shaping``, ``shaping_gamma``) |
    | ``observation_groups`` | all but ``history`` | subset of ``hidden, head, progress, last_action, solver, history`` |
    | ``mask_repeats`` | False | forbid re-applying the layer just applied |
    | ``compute_budget`` | None | forbid layers that could exceed this normalised compute; the worst case counts ``max_iter`` solver iterations per layer, so with a model of ``solver="anderson"`` its mixing work can take an episode past the budget |
    | ``decision_flops`` | 0 | FLOPs charged per decision of the policy (>= 0), in the reward only: each step (EXIT included, not the forced exit at ``max_steps``) adds ``decision_flops / normalizer`` to the reward's compute; ``info["compute"]`` stays env-only. settable on a live env (``core.set_option``, ``set_attr``), validated the same way; ``train`` sets it so to the measured cost of the policy it builds |
    | ``device`` | ``"cpu"`` | ``cpu`` or ``cuda`` |
    | ``mode`` | ``"frozen"`` | ``frozen``: the main model is fixed; ``cotrain``: it keeps learning on the agent's paths (see below) |
    | ``cotrain_lr`` | 1e-4 | ``cotrain`` only: Adam step size of the main model |
    | ``cotrain_every`` | 64 | ``cotrain`` only: M, finished episodes per main-model optimiser step |
    | ``render_mode`` | None | ``"ansi"``: ``render()`` returns a one-line trace; ``"rgb_array"``: a ``uint8 [360, 640, 3]`` frame of the input, the path with each layer's iterations, the head's class probabilities and the compute spent (``dynalay_env.render``) |

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

    def __init__(self, dataset: str | Dataset = DEFAULT_DATASET, model: FPIModel | str | os.PathLike | None = None,
                 *, render_mode: str | None = None, core: DynaLayCore | None = None, **options: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; valid: {self.metadata['render_modes']} or None")
        if core is None:
            core = make_core(1, dataset=dataset, model=model, **options)
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
            self.core._keys[0] = np.uint64(int(self.np_random.integers(0, 2**63 - 1)))
            self.core._episode_counter[0] = 0
            self._stream_seeded = True
            if seed is not None and self.core.sample_mode == "sequential":
                self.core._cursor = 0
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
