"""Where an environment's main model comes from: a checkpoint, a model object, or the default.

With no model given, ``gym.make("DynaLay-MNIST1D-v0")`` must work on a fresh machine. The default
model for a dataset is found, in this order:

1. in the user's cache folder (``$DYNALAY_MODEL_CACHE``, else
   ``platformdirs.user_cache_dir("dynalay_env")/models``): a model the user pre-trained wins;
2. among the models shipped in the package (``dynalay_env/models/``, written by ``make models``:
   :data:`SHIPPED_MODELS`), when one was made by the same recipe version, model and pre-training
   config from the same data (dataset fingerprint): the shipped folder is named by the same key as
   the cache folder, so a shipped model is used exactly when a cached one would be;
3. otherwise it is pre-trained (its time: ``train_seconds`` in
   benchmarks/results/pretrain_mnist1d_cpu.json) and cached. A file lock guards the training, and the checkpoint is written to a temporary name and renamed, so parallel processes
   (subprocess vector envs, sweep workers) train it once and never read a half-written file.

The default *expert* model of a dataset (``DynaLay-MNIST5k-Experts-v0``'s main model,
:func:`cached_expert_model`) is found in the same order, under its own key
(``experts-<name>-<fingerprint>-r<recipe version>-<expert recipe fingerprint>``).

``python -m dynalay_env.cache MODEL ...`` (``make models``) pre-trains the named default models with
the project's own recipe (through the cache, so a cached model is reused) and copies them into the
package with a manifest of their provenance. A MODEL is a dataset name (its default model) or
``experts-<dataset>`` (its default expert model), e.g. ``mnist5k experts-mnist5k``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import platformdirs
import torch
from filelock import FileLock

# Module references: the recipe, the model config and the trainer are looked up when used (tests
# replace them there).
from dynalay_env import model as model_module
from dynalay_env import pretrain
from dynalay_env.atomic import atomic_copy, atomic_write_json
from dynalay_env.datasets import DATASETS, Dataset, load_dataset
from dynalay_env.experts import EXPERTS_DATASET, ExpertPretrainConfig, expert_config, run_expert_pretraining
from dynalay_env.model import (
    FPIModel,
    MainModel,
    load_checkpoint,
    provenance_hash,
    provenance_of,
    recipe_version,
)
from dynalay_env.pretrain import CHECKPOINT_NAME, REPORT_NAME

MODEL_CACHE_ENV = "DYNALAY_MODEL_CACHE"
logger = logging.getLogger(__name__)

#: Folder of the default models shipped in the package: ``<cache key>/main_model.pt`` (a
#: ``weights_only`` torch checkpoint of :func:`dynalay_env.model.save_checkpoint`) and
#: ``pretrain.json`` beside it, plus :data:`MANIFEST_NAME`. Found with :mod:`importlib.resources`.
SHIPPED_MODELS_DIR = Path(str(importlib.resources.files("dynalay_env").joinpath("models")))
#: The shipped models' manifest: one record per shipped model name (see :func:`ship_default_models`).
MANIFEST_NAME = "manifest.json"
#: Prefix of an expert model's name (``experts-<dataset>``) and of its cache and shipped folders.
EXPERTS_PREFIX = "experts-"
#: The models ``make models`` ships (names as :func:`parse_model_name` reads them): the default models
#: of the datasets that need no files (the ``mnist5k`` family needs the ``images`` extra for its data;
#: their models ship all the same) and the default expert model of ``mnist5k``.
SHIPPED_MODELS: tuple[str, ...] = ("mnist1d", "digits", "synthetic", "mnist5k", "mnist5k_noisy_labels",
                                   "mnist5k_corrupted", f"{EXPERTS_PREFIX}{EXPERTS_DATASET}")


def parse_model_name(name: str) -> tuple[str, bool]:
    """(dataset name, whether it is the expert model) of a default model's name: ``<dataset>`` for the
    dataset's default model (:func:`cached_default_model`), ``experts-<dataset>`` for its default
    expert model (:func:`cached_expert_model`). Raises ValueError naming the valid choices."""
    dataset = name.removeprefix(EXPERTS_PREFIX)
    if dataset not in DATASETS:
        raise ValueError(f"unknown model {name!r}: expected a dataset name ({', '.join(sorted(DATASETS))}) "
                         f"for its default model, or {EXPERTS_PREFIX}<dataset> for its expert model "
                         f"(e.g. {EXPERTS_PREFIX}{EXPERTS_DATASET})")
    return dataset, name.startswith(EXPERTS_PREFIX)


def model_cache_dir() -> Path:
    """The user cache folder of default models: ``$DYNALAY_MODEL_CACHE``, else
    ``platformdirs.user_cache_dir("dynalay_env")/models``."""
    env = os.environ.get(MODEL_CACHE_ENV)
    if env:
        return Path(env).expanduser()
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
    config = model_module.default_config(dataset.input_shape, dataset.num_classes)
    pretrain_config = asdict(pretrain.recipe_for(dataset.name))
    for field in ("min_steps", "min_steps_per_epoch"):  # 0 = off: keys from before them stay valid
        if not pretrain_config[field]:
            del pretrain_config[field]
    payload = {"recipe_version": recipe_version(), "model_config": config.to_dict(),
               "pretrain_config": pretrain_config,
               "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def shipped_model_path(dataset: Dataset, models_dir: str | os.PathLike | None = None,
                       experts: bool = False) -> Path | None:
    """The shipped default model (``experts``: default expert model) for ``dataset`` if one matches
    it, else None.

    A shipped model matches when its folder has the name of ``dataset``'s cache folder
    (:func:`default_model_path`, or :func:`default_expert_model_path`): same dataset name and
    fingerprint, recipe version and recipe fingerprint. ``models_dir`` defaults to
    :data:`SHIPPED_MODELS_DIR`.
    """
    folder = Path(models_dir) if models_dir is not None else SHIPPED_MODELS_DIR
    cached = default_expert_model_path(dataset) if experts else default_model_path(dataset)
    path = folder / cached.parent.name / cached.name
    return path if path.is_file() else None


def cached_default_model(dataset: Dataset, data_root: str | os.PathLike | None = None,
                         progress: bool = True, shipped: bool = True) -> Path:
    """Path of the default model for ``dataset``: the user cache's, else a matching shipped model
    (``shipped=True``), else one pre-trained now into the cache."""
    path = default_model_path(dataset)
    if path.is_file():
        return path
    if shipped and (packaged := shipped_model_path(dataset)) is not None:
        return packaged
    def train(run_dir: str) -> None:
        pretrain.run_pretraining(dataset.name, run_dir=run_dir, data_root=data_root, progress=progress)

    return _pretrain_into(path, f"no cached default model for {dataset.name!r}", train)


def _pretrain_into(path: Path, why: str, train: Callable[[str], Any]) -> Path:
    """Pre-train a model into the cache at ``path`` once, logging ``why``. Under a file lock,
    ``train(run_dir)`` writes the checkpoint and its report into a temporary folder beside ``path``;
    the report is moved in, then the checkpoint, last: its presence means "complete". Another process
    that trained it while this one waited for the lock wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.is_file():  # another process trained it while this one waited for the lock
            return path
        logger.warning("%s: pre-training one into %s (once)", why, path.parent)
        # One thread: the default models are small, and this often runs beside other workers
        # (subprocess vector envs, sweeps), where torch's threads would fight over the cores.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with tempfile.TemporaryDirectory(dir=path.parent, prefix=".train-") as tmp:
                train(tmp)
                os.replace(Path(tmp) / REPORT_NAME, path.parent / REPORT_NAME)
                os.replace(Path(tmp) / CHECKPOINT_NAME, path)
        finally:
            torch.set_num_threads(threads)
    return path


def expert_recipe_fingerprint(dataset: Dataset, config: ExpertPretrainConfig | None = None) -> str:
    """sha256 (12 hex chars) of what makes the default expert model: ``RECIPE_VERSION``, the expert
    model config, the :class:`~dynalay_env.experts.ExpertPretrainConfig`, and the dataset's name and
    fingerprint."""
    config = config or ExpertPretrainConfig()
    model_config = expert_config(dataset.input_shape, dataset.num_classes, config.num_experts, config.expert_rank)
    payload = {"recipe_version": recipe_version(), "model_config": model_config.to_dict(),
               "experts_pretrain": asdict(config), "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def default_expert_model_path(dataset: Dataset) -> Path:
    """Cache path of the default expert model for ``dataset``: in :func:`model_cache_dir`, under
    ``experts-<name>-<fingerprint>-r<recipe version>-<expert_recipe_fingerprint>``."""
    key = f"{EXPERTS_PREFIX}{dataset.name}-{dataset.fingerprint}-r{recipe_version()}-{expert_recipe_fingerprint(dataset)}"
    return model_cache_dir() / key / CHECKPOINT_NAME


def cached_expert_model(dataset: Dataset, data_root: str | os.PathLike | None = None, progress: bool = True,
                        shipped: bool = True) -> Path:
    """Path of the default expert model for ``dataset``: the user cache's, else a matching shipped
    model (``shipped=True``), else one pre-trained now
    (:func:`~dynalay_env.experts.run_expert_pretraining`, a few minutes) into the cache."""
    path = default_expert_model_path(dataset)
    if path.is_file():
        return path
    if shipped and (packaged := shipped_model_path(dataset, experts=True)) is not None:
        return packaged
    def train(run_dir: str) -> None:
        run_expert_pretraining(dataset.name, run_dir=run_dir, data_root=data_root, progress=progress)

    return _pretrain_into(path, f"no cached expert model for {dataset.name!r}", train)


def with_expert_model(options: dict[str, Any]) -> dict[str, Any]:
    """Env options whose ``dataset`` defaults to :data:`~dynalay_env.experts.EXPERTS_DATASET` and
    ``model`` to its default expert model (:func:`cached_expert_model`: cached, shipped or pre-trained
    now): the expert env id's defaults."""
    options = dict(options)
    options.setdefault("dataset", EXPERTS_DATASET)
    if options.get("model") is None:
        dataset = options["dataset"]
        if isinstance(dataset, str):
            dataset = load_dataset(dataset, data_root=options.get("data_root"))
        options["model"] = cached_expert_model(dataset, data_root=options.get("data_root"))
    return options


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


# ---- shipping the default models (``make models``) ---------------------------------------------------


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of the bytes of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(models_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The shipped models' manifest (``{"models": {name: record}}``, names as :func:`parse_model_name`
    reads them); empty if there is none."""
    path = (Path(models_dir) if models_dir is not None else SHIPPED_MODELS_DIR) / MANIFEST_NAME
    if not path.is_file():
        return {"models": {}}
    return json.loads(path.read_text())


def ship_default_models(names: list[str] | tuple[str, ...] = SHIPPED_MODELS,
                        models_dir: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """Pre-train (through the user cache: a cached model is reused) each of the default models
    ``names`` (:func:`parse_model_name`: ``<dataset>`` or ``experts-<dataset>``) and copy it with its
    ``pretrain.json`` into ``models_dir/<cache key>/`` (default :data:`SHIPPED_MODELS_DIR`); older
    shipped folders of those names are removed.

    Returns the manifest, also written to ``models_dir/manifest.json``: per name its ``kind``
    (``default`` or ``experts``), the cache key, the checkpoint's file name, size and sha256, its
    provenance (:func:`dynalay_env.model.provenance_of`: id, weights and config hashes, package
    version, recipe version), the dataset and its fingerprint, the recipe fingerprint
    (:func:`recipe_fingerprint` or :func:`expert_recipe_fingerprint`), and the pre-training report's
    time and test accuracies (an expert model's also its routing figures on ``test``). Raises
    ValueError on an unknown name, before anything is trained or written.
    """
    parsed = {name: parse_model_name(name) for name in names}
    folder = Path(models_dir) if models_dir is not None else SHIPPED_MODELS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder)
    for name, (dataset_name, experts) in parsed.items():
        dataset = load_dataset(dataset_name)
        source = (cached_expert_model if experts else cached_default_model)(dataset, progress=progress, shipped=False)
        key = source.parent.name
        record = provenance_of(load_checkpoint(source, expected_dataset=dataset_name).model, dataset)
        report = json.loads((source.parent / REPORT_NAME).read_text())
        report.pop("checkpoint", None)  # the temporary folder it was trained in: this machine's path
        for stale in folder.glob(f"{name}-*"):
            if stale.is_dir() and stale.name != key:
                shutil.rmtree(stale)
        target = folder / key
        target.mkdir(exist_ok=True)
        atomic_copy(source, target / CHECKPOINT_NAME)
        atomic_write_json(target / REPORT_NAME, report)
        entry = {
            "kind": "experts" if experts else "default",
            "cache_key": key, "file": f"{key}/{CHECKPOINT_NAME}", "bytes": (target / CHECKPOINT_NAME).stat().st_size,
            "sha256": file_sha256(target / CHECKPOINT_NAME), "format": "torch.save, loads with weights_only=True",
            "provenance": record["id"], "weights_hash": record["weights_hash"], "config_hash": record["config_hash"],
            "package_version": record["package_version"], "recipe_version": record["recipe_version"],
            "recipe_fingerprint": (expert_recipe_fingerprint if experts else recipe_fingerprint)(dataset),
            "dataset": dataset_name, "dataset_fingerprint": dataset.fingerprint,
            "made_by": f"python -m dynalay_env.cache {name} (make models)",
            "pretrain": {k: report.get(k) for k in ("train_seconds", "epochs_run", "split", "accuracy_by_depth",
                                                     "oracle_accuracy")},
        }
        if experts:
            entry["experts"] = {k: report["experts"].get(k) for k in (
                "path_oracle_accuracy", "best_fixed_order", "prefix_oracle_accuracy", "routing_headroom",
                "router_accuracy_by_steps")}
        manifest["models"][name] = entry
        logger.warning("shipped the default %s model %s (%s bytes)", name, key, entry["bytes"])
    manifest["models"] = dict(sorted(manifest["models"].items()))
    atomic_write_json(folder / MANIFEST_NAME, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """``python -m dynalay_env.cache [MODEL ...]``: ship the default models (``make models``)."""
    parser = argparse.ArgumentParser(prog="python -m dynalay_env.cache", description=(
        "Pre-train default main models (through the user cache) and ship them in the package. A MODEL is "
        f"a dataset name (its default model) or {EXPERTS_PREFIX}<dataset> (its default expert model)."))
    parser.add_argument("models", nargs="*", metavar="MODEL", default=list(SHIPPED_MODELS),
                        help=f"models to ship (default: {' '.join(SHIPPED_MODELS)})")
    parser.add_argument("--models-dir", default=None, help="where to write them (default: the package's models/)")
    args = parser.parse_args(argv)
    for name in args.models:
        try:
            parse_model_name(name)
        except ValueError as exc:
            parser.error(str(exc))
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(1)
    manifest = ship_default_models(args.models, args.models_dir)
    for name in args.models:
        record = manifest["models"][name]
        print(f"{name}: {record['file']} ({record['bytes']:,} bytes, provenance {record['provenance']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
