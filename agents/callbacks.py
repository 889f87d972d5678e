"""SB3 callbacks of a DynaLay training run: TensorBoard scalars, periodic validation, atomic
checkpoints that ``--resume`` continues from, and the co-training logs and state (``mode="cotrain"``:
the main model's weights and optimiser are checkpointed with the agent)."""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from torch.utils.tensorboard import SummaryWriter

from dynalay_env.atomic import atomic_path, atomic_write_json

CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_RE = re.compile(r"agent_(\d+)_steps\.zip$")
COTRAIN_TB_DIR = "cotrain"


def core_of(env: Any) -> Any:
    """The ``DynaLayCore`` under an SB3 VecEnv and its wrappers (VecMonitor, ...), or None."""
    seen = 0
    while env is not None and not hasattr(env, "core") and hasattr(env, "venv") and seen < 32:
        env, seen = env.venv, seen + 1
    return getattr(env, "core", None)


def cotrainer_of(env: Any) -> Any:
    """The :class:`~dynalay_env.cotrain.CoTrainer` of an env in ``mode="cotrain"``, or None."""
    core = core_of(env)
    return getattr(core, "cotrainer", None)


class EpisodeMetricsCallback(BaseCallback):
    """Logs, from the infos of finished episodes (the DynaLay adapter puts them there), averaged over
    the last ``window`` episodes at every rollout end: ``dynalay/accuracy``, ``dynalay/compute``,
    ``dynalay/steps`` and the share of each action among all actions taken
    (``dynalay/action_exit``, ``dynalay/action_layer<k>``; a forced exit at ``max_steps`` is not an
    action)."""

    def __init__(self, num_actions: int, max_steps: int, window: int = 1000) -> None:
        super().__init__()
        self.num_actions = num_actions
        self.max_steps = max_steps
        self.correct: deque[float] = deque(maxlen=window)
        self.compute: deque[float] = deque(maxlen=window)
        self.steps: deque[int] = deque(maxlen=window)
        self.actions: deque[np.ndarray] = deque(maxlen=window)

    def _on_step(self) -> bool:
        for info, done in zip(self.locals.get("infos", []), self.locals.get("dones", []), strict=False):
            if done and "correct" in info:
                self.correct.append(float(info["correct"]))
                self.compute.append(float(info["compute"]))
                self.steps.append(int(info["step"]))
                taken = np.asarray(info.get("path", []), dtype=np.int64)[: int(info["step"])]  # padded with -1
                counts = np.bincount(taken, minlength=self.num_actions)
                counts[0] = int(info["step"] < self.max_steps)  # the episode chose EXIT
                self.actions.append(counts[: self.num_actions])
        return True

    def _on_rollout_end(self) -> None:
        if not self.correct:
            return
        self.logger.record("dynalay/accuracy", float(np.mean(self.correct)))
        self.logger.record("dynalay/compute", float(np.mean(self.compute)))
        self.logger.record("dynalay/steps", float(np.mean(self.steps)))
        counts = np.sum(self.actions, axis=0).astype(float)
        total = max(counts.sum(), 1.0)
        self.logger.record("dynalay/action_exit", counts[0] / total)
        for a in range(1, self.num_actions):
            self.logger.record(f"dynalay/action_layer{a}", counts[a] / total)


class PeriodicEvalCallback(BaseCallback):
    """Every ``eval_freq`` timesteps, runs ``evaluate_fn(model) -> {"accuracy", "mean_compute"}``
    (a sequential pass over ``val``) and logs ``val/accuracy`` and ``val/compute``; keeps a history
    that is written to ``history_path`` atomically."""

    def __init__(self, evaluate_fn: Callable[[Any], dict[str, float]], eval_freq: int,
                 history_path: str | Path | None = None) -> None:
        super().__init__()
        self.evaluate_fn = evaluate_fn
        self.eval_freq = eval_freq
        self.history_path = Path(history_path) if history_path else None
        self.history: list[dict[str, float]] = []
        self._next = eval_freq
        if self.history_path and self.history_path.is_file():
            self.history = json.loads(self.history_path.read_text())

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq
        # A resume restarts from a checkpoint that may predate the last evaluations.
        self.history = [h for h in self.history if h["timesteps"] <= self.num_timesteps]

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.eval_freq
            result = self.evaluate_fn(self.model)
            self.logger.record("val/accuracy", result["accuracy"])
            self.logger.record("val/compute", result["mean_compute"])
            self.history.append({"timesteps": self.num_timesteps, **result})
            if self.history_path:
                atomic_write_json(self.history_path, self.history, indent=1)
        return True


def atomic_save(path: Path, write: Callable[[str], Any]) -> None:
    """Run ``write(tmp_path)`` on a temporary file beside ``path`` (same suffix), then rename it over
    ``path``: a reader never sees a half-written file, and a failure leaves the old one."""
    with atomic_path(path) as tmp:
        write(str(tmp))


def atomic_save_model(model: Any, path: Path) -> None:
    """``model.save`` atomically (SB3's own save and ``CheckpointCallback`` write in place, which a
    crash can leave half-written)."""
    atomic_save(path, model.save)


def atomic_save_replay_buffer(model: Any, path: Path) -> None:
    """Save ``model``'s replay buffer to ``path`` atomically (temporary file + rename)."""
    atomic_save(path, model.save_replay_buffer)


class AtomicCheckpointCallback(BaseCallback):
    """Once ``save_freq`` timesteps have passed, saves ``checkpoints/agent_<steps>_steps.zip`` (with
    the optimiser state and step count) and, for off-policy algorithms, the replay buffer, both
    atomically; keeps the newest ``keep`` checkpoints. The save happens at the end of the rollout
    in which the threshold was crossed: SB3 stores an off-policy step's transitions *after* calling
    ``on_step``, so saving there would drop them from the buffer. The replay buffer is written
    before the agent, so a checkpoint that exists always has its buffer.

    When the training env's core is in ``mode="cotrain"``, the main model's weights, its optimiser
    state and the co-training counters go to ``checkpoints/main_model_<steps>_steps.pt``, also
    written before the agent: an agent checkpoint that exists always has the model it learned with."""

    def __init__(self, run_dir: str | Path, save_freq: int, keep: int = 2) -> None:
        super().__init__()
        self.dir = Path(run_dir) / CHECKPOINT_DIR
        self.save_freq = save_freq
        self.keep = keep
        self._next = save_freq

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.save_freq + 1) * self.save_freq

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps >= self._next:
            self._next = (self.num_timesteps // self.save_freq + 1) * self.save_freq
            self.save()

    def save(self) -> Path:
        """Write a checkpoint of the agent now (and the co-trained model, if any); returns its path."""
        get_env = getattr(self.model, "get_env", None)
        cotrainer = cotrainer_of(get_env() if callable(get_env) else None)
        return save_run_checkpoint(self.dir.parent, self.model, cotrainer, self.keep, steps=self.num_timesteps)


def save_run_checkpoint(run_dir: str | Path, agent: Any, cotrainer: Any = None, keep: int = 2,
                        steps: int | None = None) -> Path:
    """Write ``checkpoints/agent_<steps>_steps.zip`` of ``agent`` (``steps`` defaults to its
    ``num_timesteps``), preceded by its replay buffer (off-policy) and the co-training state
    (``cotrainer``, if any), each atomically; keep the newest ``keep`` checkpoints. Returns the
    agent checkpoint's path."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    steps = int(agent.num_timesteps if steps is None else steps)
    if hasattr(agent, "replay_buffer") and getattr(agent, "replay_buffer", None) is not None:
        atomic_save_replay_buffer(agent, folder / f"replay_buffer_{steps}_steps.pkl")
    if cotrainer is not None:
        cotrainer.save(folder / f"main_model_{steps}_steps.pt")
    path = folder / f"agent_{steps}_steps.zip"
    atomic_save_model(agent, path)
    for old in list_checkpoints(run_dir)[: -keep]:
        old.unlink(missing_ok=True)
        replay_buffer_for(old).unlink(missing_ok=True)
        cotrain_state_for(old).unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("agent_*_steps.zip") if (m := _CHECKPOINT_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def replay_buffer_for(checkpoint: Path) -> Path:
    """The replay-buffer file saved with the agent checkpoint ``checkpoint``."""
    steps = _CHECKPOINT_RE.search(checkpoint.name).group(1)  # type: ignore[union-attr]
    return checkpoint.parent / f"replay_buffer_{steps}_steps.pkl"


def cotrain_state_for(checkpoint: Path) -> Path:
    """The main model + optimiser state saved with an agent checkpoint (``mode="cotrain"`` runs)."""
    steps = _CHECKPOINT_RE.search(checkpoint.name).group(1)  # type: ignore[union-attr]
    return checkpoint.parent / f"main_model_{steps}_steps.pt"


class CoTrainLogger:
    """TensorBoard scalars of co-training, in ``<run_dir>/tb/cotrain`` (a SummaryWriter of its own:
    its x-axes are not the agent's timesteps).

    Per optimiser step (x = update index): ``cotrain/loss`` (path-robust CE before the step),
    ``cotrain/episode_accuracy`` (the M episodes' accuracy at their exit), ``cotrain/grad_norm``,
    ``cotrain/paths`` (distinct paths in the batch), ``cotrain/mean_path_length``.
    Per model phase (x = agent timesteps): ``cotrain/phase_loss``, ``cotrain/phase_episode_accuracy``
    and, when a validation function is given, ``cotrain/val_accuracy_after_phase`` and
    ``cotrain/val_compute_after_phase`` (the agent on ``val`` with the just-updated model)."""

    def __init__(self, run_dir: str | Path, cotrainer: Any) -> None:
        self.dir = Path(run_dir) / "tb" / COTRAIN_TB_DIR
        self.cotrainer = cotrainer
        self.logged = cotrainer.updates  # updates before this point were logged by an earlier process
        self._writer: Any = None

    @property
    def writer(self) -> Any:
        """The TensorBoard ``SummaryWriter`` of the log folder, created on first use."""
        if self._writer is None:
            self._writer = SummaryWriter(str(self.dir))
        return self._writer

    def log_updates(self) -> int:
        """Write the updates taken since the last call; returns how many."""
        new = [s for s in self.cotrainer.history if s.update > self.logged]
        for s in new:
            for name in ("loss", "episode_accuracy", "grad_norm", "paths", "mean_path_length"):
                self.writer.add_scalar(f"cotrain/{name}", float(getattr(s, name)), s.update)
        if new:
            self.logged = new[-1].update
            self.writer.flush()
        return len(new)

    def log_phase(self, timesteps: int, stats: list[Any], val: dict[str, float] | None = None) -> None:
        """Log one model phase at ``timesteps``: its mean loss and episode accuracy, and the ``val``
        accuracy and compute after it."""
        if stats:
            self.writer.add_scalar("cotrain/phase_loss", float(np.mean([s.loss for s in stats])), timesteps)
            self.writer.add_scalar("cotrain/phase_episode_accuracy",
                                   float(np.mean([s.episode_accuracy for s in stats])), timesteps)
        if val:
            self.writer.add_scalar("cotrain/val_accuracy_after_phase", val["accuracy"], timesteps)
            self.writer.add_scalar("cotrain/val_compute_after_phase", val["mean_compute"], timesteps)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer (a later log opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class CoTrainMetricsCallback(BaseCallback):
    """At every rollout end: ``cotrain/updates`` (total main-model steps) into the agent's logger,
    and the steps taken since into :class:`CoTrainLogger` (concurrent co-training takes them inside
    the env's ``step``)."""

    def __init__(self, cotrain_logger: CoTrainLogger) -> None:
        super().__init__()
        self.cotrain_logger = cotrain_logger

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.cotrain_logger.log_updates()
        self.logger.record("cotrain/updates", self.cotrain_logger.cotrainer.updates)
