"""SB3 callbacks of a DynaLay training run: TensorBoard scalars, periodic validation, atomic
checkpoints that ``--resume`` continues from."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from dynalay_env.model import atomic_write_bytes

CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_RE = re.compile(r"agent_(\d+)_steps\.zip$")


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
                counts = np.bincount(np.asarray(info.get("path", []), dtype=np.int64), minlength=self.num_actions)
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
                atomic_write_bytes(self.history_path, json.dumps(self.history, indent=1).encode())
        return True


def atomic_save_model(model: Any, path: Path) -> None:
    """``model.save`` to a temporary ``.zip`` in the same folder, then rename (SB3's own save and
    ``CheckpointCallback`` write in place, which a crash can leave half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".zip")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_replay_buffer(model: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".pkl")
    os.close(fd)
    try:
        model.save_replay_buffer(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicCheckpointCallback(BaseCallback):
    """Once ``save_freq`` timesteps have passed, saves ``checkpoints/agent_<steps>_steps.zip`` (with
    the optimiser state and step count) and, for off-policy algorithms, the replay buffer, both
    atomically; keeps the newest ``keep`` checkpoints. The save happens at the end of the rollout
    in which the threshold was crossed: SB3 stores an off-policy step's transitions *after* calling
    ``on_step``, so saving there would drop them from the buffer. The replay buffer is written
    before the agent, so a checkpoint that exists always has its buffer."""

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
        self.dir.mkdir(parents=True, exist_ok=True)
        steps = self.num_timesteps
        if hasattr(self.model, "replay_buffer") and getattr(self.model, "replay_buffer", None) is not None:
            atomic_save_replay_buffer(self.model, self.dir / f"replay_buffer_{steps}_steps.pkl")
        path = self.dir / f"agent_{steps}_steps.zip"
        atomic_save_model(self.model, path)
        self._prune()
        return path

    def _prune(self) -> None:
        for old in list_checkpoints(self.dir.parent)[: -self.keep]:
            old.unlink(missing_ok=True)
            steps = _CHECKPOINT_RE.search(old.name).group(1)  # type: ignore[union-attr]
            (old.parent / f"replay_buffer_{steps}_steps.pkl").unlink(missing_ok=True)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("agent_*_steps.zip") if (m := _CHECKPOINT_RE.search(p.name))]
    return [p for _, p in sorted(found)]


def replay_buffer_for(checkpoint: Path) -> Path:
    steps = _CHECKPOINT_RE.search(checkpoint.name).group(1)  # type: ignore[union-attr]
    return checkpoint.parent / f"replay_buffer_{steps}_steps.pkl"
