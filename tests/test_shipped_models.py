"""The default main models shipped in the package (``make models``), the expert model of
DynaLay-MNIST5k-Experts-v0 among them: they load, match their recorded provenance, were made by the
recipe this code runs (the golden identity numbers of tests/test_identity.py), and are used exactly
when a cached model would be, after the user's cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dynalay_env
import dynalay_env.version
from dynalay_env import cache, pretrain
from dynalay_env.datasets import load_dataset
from dynalay_env.experts import ExpertPretrainConfig, expert_config
from dynalay_env.model import ExpertModel, default_config, load_checkpoint, provenance_of
from tests.test_identity import GOLDEN, RTOL, golden_numbers

REPO = Path(__file__).resolve().parent.parent
MANIFEST = cache.read_manifest()
#: The real lookup (tests elsewhere replace ``cache.cached_default_model`` with one that refuses).
CACHED_DEFAULT_MODEL = cache.cached_default_model


def test_the_default_models_are_shipped_and_packaged():
    assert set(cache.SHIPPED_MODELS) <= set(MANIFEST["models"]), (
        f"shipped models {sorted(MANIFEST['models'])}; run `make models` to ship {cache.SHIPPED_MODELS}")
    makefile = (REPO / "Makefile").read_text()
    assert f"-m dynalay_env.cache {' '.join(cache.SHIPPED_MODELS)}\n" in makefile, "make models ships other models"
    pyproject = (REPO / "pyproject.toml").read_text()
    for pattern in ("models/manifest.json", "models/*/main_model.pt", "models/*/pretrain.json"):
        assert pattern in pyproject, f"pyproject.toml's package data does not ship {pattern}"
    folders = {p.name for p in cache.SHIPPED_MODELS_DIR.iterdir() if p.is_dir()}
    assert folders == {r["cache_key"] for r in MANIFEST["models"].values()}, "a shipped folder is not in the manifest"


@pytest.mark.parametrize("name", sorted(MANIFEST["models"]))
def test_a_shipped_model_loads_and_matches_its_provenance(name):
    record = MANIFEST["models"][name]
    dataset_name, experts = cache.parse_model_name(name)
    assert (record["dataset"], record["kind"]) == (dataset_name, "experts" if experts else "default")
    path = cache.SHIPPED_MODELS_DIR / record["file"]
    assert path.stat().st_size == record["bytes"] and cache.file_sha256(path) == record["sha256"]
    torch.load(path, map_location="cpu", weights_only=True)  # no pickled code
    model = load_checkpoint(path, expected_dataset=dataset_name).model
    dataset = load_dataset(dataset_name)
    identity = provenance_of(model, dataset)
    assert identity["id"] == record["provenance"]
    assert identity["weights_hash"] == record["weights_hash"] and identity["config_hash"] == record["config_hash"]
    assert record["dataset_fingerprint"] == dataset.fingerprint, "the shipped model was trained on other data"
    assert record["recipe_version"] == dynalay_env.RECIPE_VERSION == identity["recipe_version"]
    report = json.loads((path.parent / pretrain.REPORT_NAME).read_text())
    assert report["dataset"] == dataset_name and report["accuracy_by_depth"] == record["pretrain"]["accuracy_by_depth"]
    if experts:
        config = ExpertPretrainConfig()
        assert isinstance(model, ExpertModel), "the expert model ships without its router"
        assert model.config == expert_config(dataset.input_shape, dataset.num_classes, config.num_experts,
                                             config.expert_rank)
        assert record["recipe_fingerprint"] == cache.expert_recipe_fingerprint(dataset)
        assert record["cache_key"] == cache.default_expert_model_path(dataset).parent.name
        assert record["experts"]["routing_headroom"] == report["experts"]["routing_headroom"]
        assert max(report["experts"]["router_accuracy_by_steps"]) > 0.6  # trained, not a fresh initialisation
    else:
        assert model.config == default_config(dataset.input_shape, dataset.num_classes)
        assert record["recipe_fingerprint"] == cache.recipe_fingerprint(dataset)
        assert record["cache_key"] == cache.default_model_path(dataset).parent.name
        assert max(report["accuracy_by_depth"]) > 0.6  # trained, not a fresh initialisation


@pytest.mark.parametrize("family", sorted(GOLDEN.get(dynalay_env.RECIPE_VERSION, {})))
def test_the_recipe_of_the_shipped_models_is_the_one_this_code_runs(family):
    """The shipped models record the current recipe version, and this code's numerics are that
    version's pinned golden numbers: what the models were trained with is what would retrain them."""
    assert {r["recipe_version"] for r in MANIFEST["models"].values()} == {dynalay_env.RECIPE_VERSION}
    got, pinned = golden_numbers(family), GOLDEN[dynalay_env.RECIPE_VERSION][family]
    for key, expected in pinned.items():
        assert torch.allclose(torch.tensor(got[key], dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                              rtol=RTOL, atol=1e-6), key


def test_the_user_cache_wins_then_the_shipped_model(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.MODEL_CACHE_ENV, str(tmp_path))
    dataset = load_dataset("digits")
    shipped = cache.shipped_model_path(dataset)
    assert shipped is not None and shipped.is_relative_to(cache.SHIPPED_MODELS_DIR)
    assert CACHED_DEFAULT_MODEL(dataset) == shipped
    assert not any(tmp_path.iterdir()), "using the shipped model wrote to the user cache"
    mine = cache.default_model_path(dataset)
    mine.parent.mkdir(parents=True)
    mine.write_bytes(shipped.read_bytes())
    assert CACHED_DEFAULT_MODEL(dataset) == mine


def test_the_user_cache_wins_then_the_shipped_expert_model(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.MODEL_CACHE_ENV, str(tmp_path))
    dataset = load_dataset("mnist5k")
    shipped = cache.shipped_model_path(dataset, experts=True)
    assert shipped is not None and shipped.is_relative_to(cache.SHIPPED_MODELS_DIR)
    assert shipped.parent.name == MANIFEST["models"]["experts-mnist5k"]["cache_key"]
    assert cache.shipped_model_path(dataset) != shipped, "the expert model is not the dataset's default model"
    assert cache.cached_expert_model(dataset) == shipped
    assert not any(tmp_path.iterdir()), "using the shipped expert model wrote to the user cache"
    mine = cache.default_expert_model_path(dataset)
    mine.parent.mkdir(parents=True)
    mine.write_bytes(shipped.read_bytes())
    assert cache.cached_expert_model(dataset) == mine


def _refuse_training(*args, **kwargs):
    raise AssertionError("pre-trained a model although a shipped one matches")


@pytest.mark.parametrize(("env_id", "name"), [("DynaLay-MNIST5k-NoisyLabels-v0", "mnist5k_noisy_labels"),
                                               ("DynaLay-MNIST5k-Corrupted-v0", "mnist5k_corrupted"),
                                               ("DynaLay-MNIST5k-Experts-v0", "experts-mnist5k")])
def test_gym_make_of_a_variant_uses_its_shipped_model_with_an_empty_cache(env_id, name, tmp_path, monkeypatch):
    import gymnasium as gym

    monkeypatch.setenv(cache.MODEL_CACHE_ENV, str(tmp_path / "models"))
    monkeypatch.setattr(pretrain, "run_pretraining", _refuse_training)
    monkeypatch.setattr(cache, "run_expert_pretraining", _refuse_training)
    monkeypatch.setattr(cache, "cached_default_model", CACHED_DEFAULT_MODEL)  # the real lookup
    env = gym.make(env_id)
    env.reset(seed=0)
    env.step(1)
    assert env.unwrapped.core.provenance == MANIFEST["models"][name]["provenance"]
    assert not (tmp_path / "models").exists(), "making the env wrote to the user cache"
    env.close()


def test_shipping_copies_the_cached_expert_model_with_its_provenance(tmp_path, monkeypatch):
    """``ship_default_models`` ships an expert model like the others: from the user cache (here a copy
    of the shipped one, so nothing trains) into the models folder, with the same manifest record."""
    monkeypatch.setenv(cache.MODEL_CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "run_expert_pretraining", _refuse_training)
    record = MANIFEST["models"]["experts-mnist5k"]
    cached = tmp_path / "cache" / record["cache_key"]
    shutil.copytree(cache.SHIPPED_MODELS_DIR / record["cache_key"], cached)
    stale = tmp_path / "out" / "experts-mnist5k-0000000000000000-r0-000000000000"
    stale.mkdir(parents=True)
    manifest = cache.ship_default_models(["experts-mnist5k"], models_dir=tmp_path / "out", progress=False)
    assert manifest == cache.read_manifest(tmp_path / "out") == {"models": {"experts-mnist5k": record}}
    assert cache.file_sha256(tmp_path / "out" / record["file"]) == record["sha256"]
    assert not stale.exists(), "an older shipped expert model was left beside the new one"


@pytest.mark.parametrize("bad", ["mnist-5k", "experts-", "experts-nope", "expert-mnist5k"])
def test_an_unknown_model_name_is_refused_with_the_valid_choices(bad, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"mnist5k_corrupted.*experts-<dataset>"):
        cache.ship_default_models([bad], models_dir=tmp_path)
    assert not any(tmp_path.iterdir()), "an unknown name wrote to the models folder"
    with pytest.raises(SystemExit) as exc:
        cache.main([bad, "--models-dir", str(tmp_path)])
    assert exc.value.code == 2 and f"unknown model {bad!r}" in capsys.readouterr().err
    assert cache.parse_model_name("experts-mnist5k") == ("mnist5k", True)
    assert cache.parse_model_name("mnist5k_corrupted") == ("mnist5k_corrupted", False)


def test_a_changed_recipe_is_not_served_the_shipped_model(monkeypatch):
    import dataclasses

    dataset = load_dataset("digits")
    original = pretrain.recipe_for
    monkeypatch.setattr(pretrain, "recipe_for", lambda name: dataclasses.replace(original(name), epochs=3))
    assert cache.shipped_model_path(dataset) is None
    monkeypatch.setattr(dynalay_env.version, "RECIPE_VERSION", dynalay_env.RECIPE_VERSION + 1)
    monkeypatch.setattr(pretrain, "recipe_for", original)
    assert cache.shipped_model_path(dataset) is None


def test_a_changed_expert_recipe_is_not_served_the_shipped_expert_model(monkeypatch):
    import dataclasses

    dataset = load_dataset("mnist5k")
    assert cache.shipped_model_path(dataset, experts=True) is not None
    monkeypatch.setattr(cache, "ExpertPretrainConfig",
                        lambda: dataclasses.replace(ExpertPretrainConfig(), abstain_weight=0.5))
    assert cache.shipped_model_path(dataset, experts=True) is None


def test_gym_make_uses_the_shipped_model_with_an_empty_cache(tmp_path):
    script = ("import gymnasium as gym, dynalay_env\n"
              "env = gym.make('DynaLay-Synthetic-v0')\nenv.reset(seed=0)\nenv.step(1)\n"
              "print(env.unwrapped.core.provenance)\n")
    env = {**os.environ, cache.MODEL_CACHE_ENV: str(tmp_path / "models"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == MANIFEST["models"]["synthetic"]["provenance"]
    assert "pre-training" not in out.stderr and not (tmp_path / "models").exists()


ENV_PAGES = {"mnist1d": "DynaLay-MNIST1D-v0", "digits": "DynaLay-Digits-v0", "synthetic": "DynaLay-Synthetic-v0",
             "mnist5k": "DynaLay-MNIST5k-v0"}


@pytest.mark.parametrize("name", sorted(ENV_PAGES))
def test_an_env_page_states_the_spaces_of_the_env(name):
    """The quick facts of docs/envs/<name>.md are those of the env made with the shipped model."""
    import gymnasium as gym

    page = (REPO / "docs" / "envs" / f"{name}.md").read_text()
    path = cache.SHIPPED_MODELS_DIR / MANIFEST["models"][name]["file"]
    env = gym.make(ENV_PAGES[name], model=str(path))
    history = gym.make(ENV_PAGES[name], model=str(path),
                       observation_groups=["hidden", "head", "progress", "last_action", "solver", "history"])
    assert f"`Discrete({env.action_space.n})`" in page
    assert f"`Box` of shape `{env.observation_space.shape}`, float32, with the default groups" in page
    assert f"`{history.observation_space.shape}` with `history`" in page
    dataset = load_dataset(name)
    assert f"`{dataset.input_shape}`, {dataset.num_classes} classes" in page
    sizes = " / ".join(f"{len(dataset.splits[s][1]):,}" for s in ("model_train", "agent_train", "val", "test"))
    assert f"| {sizes} |" in page
