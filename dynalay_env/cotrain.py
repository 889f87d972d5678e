"""Co-training: the main model keeps learning on the paths the agent actually takes.

In ``mode="cotrain"`` the batched core (:class:`~dynalay_env.core.DynaLayCore`) owns one
:class:`CoTrainer`. Every finished episode hands it its example index (in the core's split, which
must be ``agent_train``) and its path. Every ``every`` (M) finished episodes the trainer takes *one*
optimiser step on the main model over exactly those M episodes:

* loss = the path-robust cross-entropy of :func:`dynalay_env.pretrain.path_robust_loss` on each
  episode's own path: the head's CE at every state the episode visited (the encoder state and after
  each layer it applied), averaged over the states of the path and over the M episodes (every
  episode weighs the same);
* episodes with the same path are one group, and each group is one batched forward with gradient, so
  an update costs one solve per (distinct path, layer) and not one per episode;
* the FPI layers backpropagate with the model's own backward (phantom / Jacobian-free by default,
  implicit as an option: ``ModelConfig.backward``);
* optimiser: Adam with step size ``lr`` over every parameter that requires a gradient.

What stays fixed (docs/design.md): the compute normaliser (a buffer, never a parameter, never
recalibrated), the cost table, the observation bounds. The model is in eval mode for every env step;
it is switched to train mode only inside an update (so the operator-norm power iteration follows the
weights), and after each step the contractive maps' norms are refreshed so that every layer's map is
still a contraction at the next env step.

One process, one model: the trainer updates the very model object the core steps with. Never give
each env its own copy (a loop of single envs, ``SyncVectorEnv`` or ``SubprocVecEnv`` over
``DynaLayEnv``): the copies would diverge. Use one batched face over one core
(``gym.make_vec``'s ``DynaLayVectorEnv`` or ``agents.sb3_vec_env.DynaLayVecEnv``).

Co-training makes the environment non-stationary: the same example and actions give other
observations and rewards once the model has moved. Determinism and batch-equivalence checks do not
apply to this mode.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dynalay_env.atomic import atomic_write_bytes
from dynalay_env.paths import path_robust_loss

#: Defaults of the env options ``cotrain_lr`` and ``cotrain_every``.
DEFAULT_COTRAIN_LR = 1e-4
DEFAULT_COTRAIN_EVERY = 64
#: Power iterations run on every contractive map after an optimiser step (warm-started: a few suffice).
NORM_REFRESH_ITERATIONS = 20
STATE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class UpdateStats:
    """One optimiser step. ``loss``: the path-robust CE before the step; ``episode_accuracy``: share
    of the M episodes answered correctly at their exit by the model they ran on; ``paths``: distinct
    paths (= batched forwards) in the step; ``grad_norm``: L2 norm of the gradient."""

    update: int
    episodes: int
    paths: int
    loss: float
    episode_accuracy: float
    grad_norm: float
    mean_path_length: float


def check_options(lr: Any, every: Any) -> None:
    """A clear ``ValueError`` for a step size that is not > 0 or an M that is not an integer >= 1."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"cotrain_lr must be a finite number > 0 (the main model's Adam step size), got {lr!r}")
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"cotrain_every must be an integer >= 1 (finished episodes per optimiser step), "
                         f"got {every!r}")


def check_cotrainable(model: Any, lr: Any, every: Any) -> list[nn.Parameter]:
    """The parameters co-training would update; a clear ``ValueError`` when it cannot run."""
    check_options(lr, every)
    if not isinstance(model, nn.Module):
        raise ValueError(f"mode='cotrain' needs a main model that is a torch.nn.Module with trainable FPI layers "
                         f"(e.g. MainModel); got {type(model).__name__}, which cannot be optimised")
    layers = getattr(model, "layers", None)
    layer_params = [p for layer in (layers if isinstance(layers, (nn.ModuleList, list, tuple)) else [])
                    if isinstance(layer, nn.Module) for p in layer.parameters() if p.requires_grad]
    if not layer_params:
        raise ValueError("mode='cotrain' needs trainable FPI layers: the model has no `layers` whose parameters "
                         "require a gradient (all frozen with requires_grad=False, or no `layers` attribute); "
                         "unfreeze them or use mode='frozen'")
    return [p for p in model.parameters() if p.requires_grad]


class CoTrainer:
    """Batched main-model updates from finished episodes (see the module docstring).

    Args:
        model: the main model, trained in place (the same object the core steps with).
        x: inputs ``[n, *input_shape]`` of the split the core draws its episodes from
            (``agent_train``); episodes are given as indices into ``x`` and ``y``.
        y: labels ``[n]`` of that split.
        lr: Adam step size (> 0).
        every: M, finished episodes per optimiser step (>= 1); each step uses exactly M episodes.
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, *, lr: float = DEFAULT_COTRAIN_LR,
                 every: int = DEFAULT_COTRAIN_EVERY) -> None:
        self.params = check_cotrainable(model, lr, every)
        self.model = model
        self.x, self.y = x, y
        self.lr = float(lr)
        self.every = int(every)
        self.optimizer = torch.optim.Adam(self.params, lr=self.lr)
        #: False pauses co-training: finished episodes are neither kept nor learned from.
        self.active = True
        self.updates = 0
        self.episodes_seen = 0
        self.history: list[UpdateStats] = []
        #: When set, no step is taken past this many updates in total (the end of a model phase);
        #: episodes that finish after it are dropped.
        self.update_limit: int | None = None
        #: Free-form counters of whoever drives the trainer (e.g. the phase schedule), checkpointed.
        self.extra: dict[str, Any] = {}
        self._pending_examples = np.zeros(0, dtype=np.int64)
        self._pending_paths = np.zeros((0, 0), dtype=np.int64)
        self._pending_correct = np.zeros(0, dtype=bool)

    @property
    def pending(self) -> int:
        """Finished episodes kept for the next step (always < M between steps)."""
        return int(self._pending_examples.size)

    def clear_pending(self) -> None:
        """Forget the episodes kept for the next step (e.g. at the end of a model phase, so the next
        phase learns only from the policy of its own time)."""
        self._pending_examples = self._pending_examples[:0]
        self._pending_paths = self._pending_paths[:0]
        self._pending_correct = self._pending_correct[:0]

    def add(self, examples: np.ndarray, paths: np.ndarray, correct: np.ndarray | None = None) -> list[UpdateStats]:
        """Keep finished episodes: ``examples [n]`` (indices in the split), ``paths [n, max_steps]``
        (1-based actions, -1 padded, as the core records them), ``correct [n]`` (answered right at
        the exit; for the logs only). Takes one step per M episodes kept; returns their stats."""
        if not self.active:
            return []
        examples = np.asarray(examples, dtype=np.int64).reshape(-1)
        paths = np.asarray(paths, dtype=np.int64).reshape(examples.size, -1)
        correct = np.zeros(examples.size, bool) if correct is None else np.asarray(correct, bool).reshape(-1)
        if self._pending_paths.shape[1] != paths.shape[1]:
            if self.pending:
                raise ValueError(f"paths of width {paths.shape[1]} after width {self._pending_paths.shape[1]}")
            self._pending_paths = np.zeros((0, paths.shape[1]), dtype=np.int64)
        self.episodes_seen += int(examples.size)
        self._pending_examples = np.concatenate([self._pending_examples, examples])
        self._pending_paths = np.concatenate([self._pending_paths, paths])
        self._pending_correct = np.concatenate([self._pending_correct, correct])
        stats = []
        while self.pending >= self.every:
            if self.update_limit is not None and self.updates >= self.update_limit:
                self.clear_pending()
                break
            m = self.every
            batch = (self._pending_examples[:m], self._pending_paths[:m], self._pending_correct[:m])
            self._pending_examples = self._pending_examples[m:]
            self._pending_paths = self._pending_paths[m:]
            self._pending_correct = self._pending_correct[m:]
            stats.append(self.update(*batch))
        return stats

    def update(self, examples: np.ndarray, paths: np.ndarray, correct: np.ndarray | None = None) -> UpdateStats:
        """One optimiser step on these episodes (one batched forward per distinct path)."""
        examples = np.asarray(examples, dtype=np.int64).reshape(-1)
        n = examples.size
        if n == 0:
            raise ValueError("an update needs at least one episode")
        paths = np.asarray(paths, dtype=np.int64).reshape(n, -1)
        unique, group_of = np.unique(paths, axis=0, return_inverse=True)
        group_of = group_of.reshape(-1)
        device = self.x.device
        was_training = self.model.training
        self.model.train()
        try:
            with torch.enable_grad():
                self.optimizer.zero_grad(set_to_none=True)
                total = torch.zeros((), device=device)
                for g, row in enumerate(unique):
                    members = np.flatnonzero(group_of == g)
                    idx = torch.as_tensor(examples[members], device=device)
                    path = [int(a) - 1 for a in row if a > 0]  # 1-based actions -> 0-based layers
                    loss = path_robust_loss(self.model, self.x[idx], self.y[idx], path)  # type: ignore[arg-type]
                    total = total + loss * (members.size / n)
                total.backward()
                grad_norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in self.params if p.grad is not None))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        finally:
            self.model.train(was_training)
        refresh = getattr(self.model, "refresh_operator_norms", None)
        if callable(refresh):
            refresh(n_power_iterations=NORM_REFRESH_ITERATIONS)
        self.updates += 1
        stats = UpdateStats(update=self.updates, episodes=n, paths=int(unique.shape[0]), loss=float(total.detach()),
                            episode_accuracy=float(np.mean(correct)) if correct is not None and len(correct) else
                            float("nan"), grad_norm=grad_norm, mean_path_length=float((paths > 0).sum(1).mean()))
        self.history.append(stats)
        return stats

    # ---- checkpoints -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Model weights and buffers, optimiser state, kept episodes and counters (CPU tensors and
        plain Python values only: loadable with ``torch.load(weights_only=True)``)."""
        return {
            "format_version": STATE_FORMAT_VERSION,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "lr": self.lr,
            "every": self.every,
            "updates": self.updates,
            "episodes_seen": self.episodes_seen,
            "pending_examples": torch.as_tensor(self._pending_examples.copy()),
            "pending_paths": torch.as_tensor(self._pending_paths.copy()),
            "pending_correct": torch.as_tensor(self._pending_correct.copy()),
            "history": [asdict(s) for s in self.history],
            "extra": dict(self.extra),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (the model in place, the optimiser, the counters)."""
        if state.get("format_version") != STATE_FORMAT_VERSION:
            raise ValueError(f"co-training state of format {state.get('format_version')!r}; this version reads "
                             f"format {STATE_FORMAT_VERSION}")
        if int(state["every"]) != self.every:
            raise ValueError(f"co-training state was saved with cotrain_every={state['every']}, this env has "
                             f"cotrain_every={self.every}")
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr = float(state["lr"])
        self.updates = int(state["updates"])
        self.episodes_seen = int(state["episodes_seen"])
        self._pending_examples = state["pending_examples"].numpy().astype(np.int64)
        self._pending_paths = state["pending_paths"].numpy().astype(np.int64)
        self._pending_correct = state["pending_correct"].numpy().astype(bool)
        self.history = [UpdateStats(**s) for s in state.get("history", [])]
        self.extra = dict(state.get("extra", {}))

    def to_bytes(self) -> bytes:
        """The :meth:`state_dict` serialised with ``torch.save`` (what :meth:`save` writes)."""
        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        return buffer.getvalue()

    def save(self, path: Any) -> None:
        """Write :meth:`state_dict` to ``path`` atomically (temporary file + rename)."""
        atomic_write_bytes(path, self.to_bytes())

    def load(self, path: Any) -> None:
        """Restore the model and optimiser state from a file written by :meth:`save`."""
        self.load_state_dict(load_state(path))


def load_state(path: Any) -> dict[str, Any]:
    """A co-training state file written by :meth:`CoTrainer.save`."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
