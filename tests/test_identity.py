"""Model identity: the recipe version keys the default-model cache, a golden test pins the numerics,
and every results file records the provenance of its main model."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import dynalay_env
import dynalay_env.version
from dynalay_env import cache, pretrain
from dynalay_env import model as model_module
from dynalay_env.model import (
    MainModel,
    default_config,
    format_provenance,
    load_checkpoint,
    provenance_of,
    save_checkpoint,
)
from dynalay_env.paths import path_robust_loss

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------------
# Golden numbers
# --------------------------------------------------------------------------------------------------

#: The numbers each recipe version produces: a freshly initialised default model (torch seed 0), on
#: a fixed input, through the encoder, the first FPI layer and the head. If the golden test fails
#: because numerics changed ON PURPOSE: bump RECIPE_VERSION in dynalay_env/__init__.py (so every
#: cached default model is retrained), then add an entry for the new version below (print the
#: numbers with ``python -m tests.test_identity``). Never edit a pinned entry. If the numerics
#: changed BY ACCIDENT (a refactor, a comment), the change is a bug: the cached models would no
#: longer be what this code trains.
GOLDEN: dict[int, dict[str, dict[str, float | list[float]]]] = {
    1: {"conv1d": {"encoder_sum": 495.44937, "encoder_sum_sq": 342.40481,
                   "encoder_first": [0.11644529, 0.069931343, 0.13606417, 0.28181535],
                   "layer1_sum": 241.52193, "layer1_sum_sq": 95.624091,
                   "layer1_first": [0.099943258, 0.30001774, 0.44469246, 0.29833955],
                   "layer1_iterations": [4.0, 4.0, 4.0, 4.0],
                   "logits_sum": -0.41924998, "logits_first": [0.040379427, -0.057586178, 0.15670171],
                   "path_loss": 2.2843146},
        "mlp": {"encoder_sum": 79.884267, "encoder_sum_sq": 39.968923,
                "encoder_first": [0.43836623, 0.16171126, 0.0, 0.0],
                "layer1_sum": 46.645191, "layer1_sum_sq": 12.701754,
                "layer1_first": [0.18676220, 0.0, 0.19711752, 0.24311619],
                "layer1_iterations": [4.0, 4.0, 4.0, 4.0],
                "logits_sum": 1.3213081, "logits_first": [0.099107295, -0.044493098, 0.094098523],
                "path_loss": 2.3276441}},
}

#: float32 on CPU: summation order may differ between BLAS builds and CPUs.
RTOL, ATOL = 1e-4, 1e-6
FAMILY_SHAPES = {"conv1d": (1, 40), "mlp": (64,)}  # the shapes of the mnist1d and digits defaults


def golden_numbers(family: str) -> dict[str, float | list[float]]:
    """Encoder output, first FPI layer's output and iterations, head logits and the pre-training
    loss on a fixed input for the default model of ``family``, initialised with torch seed 0."""
    shape = FAMILY_SHAPES[family]
    torch.manual_seed(0)
    model = MainModel(default_config(shape, 10)).eval()
    n = 4
    x = torch.sin(0.37 * torch.arange(n * math.prod(shape), dtype=torch.float32)).reshape(n, *shape)
    y = torch.arange(n) % 10
    with torch.no_grad():
        z0 = model.encode(x)
        layer1 = model.apply_layer(0, z0, z0)
        logits = model.classify(layer1.state)
        loss = path_robust_loss(model, x, y, [0, 1, 2, 0])
    z1 = layer1.state.double()
    return {"encoder_sum": float(z0.double().sum()), "encoder_sum_sq": float(z0.double().square().sum()),
            "encoder_first": z0.flatten()[:4].tolist(),
            "layer1_sum": float(z1.sum()), "layer1_sum_sq": float(z1.square().sum()),
            "layer1_first": layer1.state.flatten()[:4].tolist(),
            "layer1_iterations": [float(i) for i in layer1.iterations.tolist()],
            "logits_sum": float(logits.double().sum()), "logits_first": logits[0, :3].tolist(),
            "path_loss": float(loss)}


def test_the_current_recipe_version_has_pinned_numbers():
    assert dynalay_env.RECIPE_VERSION in GOLDEN, (
        f"RECIPE_VERSION is {dynalay_env.RECIPE_VERSION} but tests/test_identity.py pins numbers for versions "
        f"{sorted(GOLDEN)}: add the new version's numbers to GOLDEN (python -m tests.test_identity prints them)")


@pytest.mark.parametrize("family", sorted(FAMILY_SHAPES))
def test_golden_numbers_of_the_current_recipe(family):
    pinned = GOLDEN.get(dynalay_env.RECIPE_VERSION, {}).get(family)
    if pinned is None:
        pytest.fail(f"no golden numbers for recipe version {dynalay_env.RECIPE_VERSION}, family {family!r}")
    got = golden_numbers(family)
    assert sorted(got) == sorted(pinned)
    for key, expected in pinned.items():
        if not torch.allclose(torch.tensor(got[key], dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                              rtol=RTOL, atol=ATOL):
            pytest.fail(f"the numerics of the default {family} model changed ({key}: got {got[key]}, pinned at recipe "
                        f"version {dynalay_env.RECIPE_VERSION}: {expected}). On purpose: bump RECIPE_VERSION in "
                        f"dynalay_env/__init__.py and pin the new numbers as a new GOLDEN entry. By accident: fix it.")


# --------------------------------------------------------------------------------------------------
# Cache key
# --------------------------------------------------------------------------------------------------

#: What the cache key reads of a dataset (no data needs to be generated).
MNIST1D = SimpleNamespace(name="mnist1d", fingerprint="0123456789abcdef", input_shape=(1, 40), num_classes=10)
KEY_SCRIPT = """
import sys
from types import SimpleNamespace
import dynalay_env
from dynalay_env.cache import default_model_path
print(dynalay_env.__file__)
print(default_model_path(SimpleNamespace(name="mnist1d", fingerprint="0123456789abcdef", input_shape=(1, 40),
                                         num_classes=10)).parent.name)
"""


def cache_key(dataset=MNIST1D) -> str:
    return cache.default_model_path(dataset).parent.name


def test_editing_the_source_does_not_change_the_cache_key(tmp_path):
    """A copy of the package with comments added to fpi.py, model.py and pretrain.py, imported in a
    fresh interpreter, serves the same cached default model."""
    copy = tmp_path / "dynalay_env"
    shutil.copytree(REPO / "dynalay_env", copy, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("fpi.py", "model.py", "pretrain.py"):
        with open(copy / name, "a") as fh:
            fh.write("\n# a comment that changes nothing\n")
    out = subprocess.run([sys.executable, "-c", KEY_SCRIPT], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={"PATH": "", "OMP_NUM_THREADS": "1", "DYNALAY_MODEL_CACHE": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    imported, key = out.stdout.split()
    assert Path(imported).resolve() == (copy / "__init__.py").resolve()  # the edited copy was the one used
    assert key == cache_key()


def test_the_cache_key_follows_recipe_version_config_recipe_and_data(monkeypatch):
    base = cache_key()
    assert f"-r{dynalay_env.RECIPE_VERSION}-" in base and base.startswith("mnist1d-0123456789abcdef-")
    assert cache_key() == base  # deterministic
    with monkeypatch.context() as m:
        m.setattr(dynalay_env.version, "RECIPE_VERSION", dynalay_env.RECIPE_VERSION + 1)
        bumped = cache_key()
    assert bumped != base and f"-r{dynalay_env.RECIPE_VERSION + 1}-" in bumped
    with monkeypatch.context() as m:
        m.setitem(pretrain.DATASET_RECIPES, "mnist1d", {"lr": 1e-3})
        assert cache_key() != base
    with monkeypatch.context() as m:
        m.setattr(model_module, "default_config",
                  lambda shape, classes: default_config(shape, classes, channels=16))
        assert cache_key() != base
    assert cache_key(SimpleNamespace(**{**vars(MNIST1D), "fingerprint": "fedcba9876543210"})) != base
    assert cache_key() == base


# --------------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------------


def small_model(seed: int = 0) -> MainModel:
    torch.manual_seed(seed)
    return MainModel(default_config((64,), 10, channels=16))


DIGITS_META = {"name": "digits", "fingerprint": "feedfacefeedface"}


def test_provenance_of_a_checkpoint_is_the_one_it_was_saved_with(tmp_path):
    model = small_model()
    fresh = provenance_of(model, DIGITS_META)
    assert fresh["recipe_version"] == dynalay_env.RECIPE_VERSION
    assert fresh["package_version"] == dynalay_env.__version__
    assert fresh["dataset"] == DIGITS_META
    saved_id = save_checkpoint(tmp_path / "m.pt", model, DIGITS_META)
    assert fresh["id"] == saved_id
    loaded = load_checkpoint(tmp_path / "m.pt").model
    # The dataset comes from the checkpoint when not given; everything else is as saved.
    assert provenance_of(loaded) == provenance_of(loaded, DIGITS_META) == fresh
    assert set(fresh) == {"id", "weights_hash", "config_hash", "dataset", "package_version", "recipe_version"}
    line = format_provenance(fresh)
    assert saved_id in line and "digits" in line and f"recipe version {dynalay_env.RECIPE_VERSION}" in line


def test_provenance_tells_models_apart():
    a, b = provenance_of(small_model(0), DIGITS_META), provenance_of(small_model(1), DIGITS_META)
    assert a["id"] != b["id"] and a["weights_hash"] != b["weights_hash"] and a["config_hash"] == b["config_hash"]
    wider = provenance_of(MainModel(default_config((64,), 10, channels=24)), DIGITS_META)
    assert wider["config_hash"] != a["config_hash"]
    other_data = provenance_of(small_model(0), {"name": "digits", "fingerprint": "0000000000000000"})
    assert other_data["id"] != a["id"] and other_data["weights_hash"] == a["weights_hash"]


def test_a_checkpoint_keeps_its_recipe_version_and_a_changed_model_is_described_as_it_is(tmp_path, monkeypatch):
    model = small_model()
    with monkeypatch.context() as m:  # saved by an older recipe
        m.setattr(dynalay_env.version, "RECIPE_VERSION", dynalay_env.RECIPE_VERSION - 1)
        save_checkpoint(tmp_path / "old.pt", model, DIGITS_META)
    loaded = load_checkpoint(tmp_path / "old.pt").model
    assert provenance_of(loaded)["recipe_version"] == dynalay_env.RECIPE_VERSION - 1
    save_checkpoint(tmp_path / "resaved.pt", loaded, DIGITS_META)  # a re-save keeps the model's recipe
    assert load_checkpoint(tmp_path / "resaved.pt").model.recipe_version == dynalay_env.RECIPE_VERSION - 1
    before = provenance_of(loaded)
    with torch.no_grad():  # what co-training does
        next(loaded.parameters()).add_(0.01)
    after = provenance_of(loaded)
    assert after["weights_hash"] != before["weights_hash"] and after["id"] != before["id"]
    assert after["id"] == save_checkpoint(tmp_path / "moved.pt", loaded, DIGITS_META)


def test_a_checkpoint_from_before_recipe_versions_reports_none(tmp_path):
    save_checkpoint(tmp_path / "m.pt", small_model(), DIGITS_META)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    del payload["recipe_version"]
    torch.save(payload, tmp_path / "m.pt")
    assert provenance_of(load_checkpoint(tmp_path / "m.pt").model)["recipe_version"] is None


def test_pretrain_json_records_the_model_provenance(tmp_path):
    from dynalay_env.pretrain import CHECKPOINT_NAME, REPORT_NAME, PretrainConfig, run_pretraining

    checkpoint, report = run_pretraining("synthetic", run_dir=tmp_path, progress=False,
                                         config=PretrainConfig(epochs=1, max_steps=2))
    on_disk = json.loads((tmp_path / REPORT_NAME).read_text())["model_provenance"]
    assert on_disk == provenance_of(load_checkpoint(tmp_path / CHECKPOINT_NAME).model)
    assert on_disk["id"] == report["provenance"] and on_disk["recipe_version"] == dynalay_env.RECIPE_VERSION
    assert on_disk["dataset"]["name"] == "synthetic" and checkpoint.name == CHECKPOINT_NAME


if __name__ == "__main__":  # print the numbers to pin for the current code
    import pprint

    pprint.pprint({dynalay_env.RECIPE_VERSION: {f: golden_numbers(f) for f in sorted(FAMILY_SHAPES)}}, width=110)
