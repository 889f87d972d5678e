"""Where an environment's main model comes from: a checkpoint, a model object, or the cached default.

With no model given, ``gym.make("DynaLay-MNIST1D-v0")`` must work on a fresh machine. The default
model for a dataset is pre-trained on first use and cached under the user's cache folder
(``$DYNALAY_MODEL_CACHE``, else ``platformdirs.user_cache_dir("dynalay_env")/models``). A file lock
guards the training, and the checkpoint is written to a temporary name and renamed, so parallel
processes (subprocess vector envs, sweep workers) train it once and never read a half-written file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch

from dynalay_env.data import Dataset
from dynalay_env.model import FPIModel, MainModel, load_checkpoint, provenance_hash, recipe_version

MODEL_CACHE_ENV = "DYNALAY_MODEL_CACHE"
logger = logging.getLogger(__name__)


def model_cache_dir() -> Path:
    env = os.environ.get(MODEL_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("dynalay_env")) / "models"


def default_model_path(dataset: Dataset) -> Path:
    """Cache path of the default model for ``dataset``: keyed by name, data fingerprint, the recipe
    version and :func:`recipe_fingerprint`, so a changed recipe never serves a stale model, while a
    change that leaves the numerics alone (a comment, a refactor) never retrains one."""
    key = f"{dataset.name}-{dataset.fingerprint}-r{recipe_version()}-{recipe_fingerprint(dataset)}"
    return model_cache_dir() / key / "main_model.pt"


def recipe_fingerprint(dataset: Dataset) -> str:
    """sha256 (12 hex chars) of what makes the default model: ``RECIPE_VERSION``, the model config,
    the dataset's pre-training config, and the dataset's name and fingerprint. Never the source
    code: numerics changes are declared by bumping ``RECIPE_VERSION``."""
    import hashlib
    import json
    from dataclasses import asdict

    from dynalay_env import model, pretrain

    config = model.default_config(dataset.input_shape, dataset.num_classes)
    pretrain_config = asdict(pretrain.recipe_for(dataset.name))
    for field in ("min_steps", "min_steps_per_epoch"):  # 0 = off: keys from before them stay valid
        if not pretrain_config[field]:
            del pretrain_config[field]
    payload = {"recipe_version": recipe_version(), "model_config": config.to_dict(),
               "pretrain_config": pretrain_config,
               "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cached_default_model(dataset: Dataset, data_root: str | os.PathLike | None = None,
                         progress: bool = True) -> Path:
    """Path of the default model for ``dataset``, pre-training it first if it is not cached yet."""
    from filelock import FileLock

    from dynalay_env.pretrain import CHECKPOINT_NAME, REPORT_NAME, run_pretraining

    path = default_model_path(dataset)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file():  # another process trained it while we waited for the lock
            return path
        logger.warning("no cached default model for %r: pre-training one into %s (once)", dataset.name, path.parent)
        # One thread: the default models are small, and this often runs beside other workers
        # (subprocess vector envs, sweeps), where torch's threads would fight over the cores.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with tempfile.TemporaryDirectory(dir=path.parent, prefix=".train-") as tmp:
                run_pretraining(dataset.name, run_dir=tmp, data_root=data_root, progress=progress)
                os.replace(Path(tmp) / REPORT_NAME, path.parent / REPORT_NAME)
                # The checkpoint is renamed last: its presence means "complete".
                os.replace(Path(tmp) / CHECKPOINT_NAME, path)
        finally:
            torch.set_num_threads(threads)
    return path


def resolve_model(model: FPIModel | str | os.PathLike | None, dataset: Dataset,
                  data_root: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                  progress: bool = True) -> tuple[FPIModel, str]:
    """(model in eval mode on ``device``, provenance id) from a model object, a checkpoint path, or
    ``None`` (the cached default for ``dataset``). A checkpoint of another dataset is refused."""
    if model is None:
        model = cached_default_model(dataset, data_root=data_root, progress=progress)
    if isinstance(model, (str, os.PathLike)):
        ckpt = load_checkpoint(model, expected_dataset=dataset.name, device=device)
        if ckpt.dataset.get("fingerprint") not in (None, dataset.fingerprint):
            logger.warning("checkpoint %s was trained on a different version of dataset %r (fingerprint %s, now %s)",
                           model, dataset.name, ckpt.dataset.get("fingerprint"), dataset.fingerprint)
        return ckpt.model, ckpt.provenance
    if not isinstance(model, FPIModel):
        raise ValueError(f"model must be a checkpoint path, an FPIModel (e.g. MainModel) or None, got "
                         f"{type(model).__name__}")
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    provenance = (provenance_hash(model, dataset.fingerprint) if isinstance(model, MainModel)
                  else f"user-model:{type(model).__name__}")
    return model, provenance
