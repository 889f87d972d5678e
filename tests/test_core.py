"""DynaLayCore, the batched MDP: equivalence with single envs, sampling, masks and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynalay_env.core import DynaLayCore, StepOutput
from dynalay_env.datasets import load_dataset
from dynalay_env.env import DynaLayEnv
from dynalay_env.model import LayerSpec, MainModel, default_config
from tests.env_fixtures import (  # noqa: F401
    check_charged_equals_executed,
    digits_model,
    no_default_model_training,
    synthetic_model,
)

DISCRETE_FIELDS = ("example", "label", "prediction", "correct", "step")


def as_np(x: object) -> np.ndarray:
    """A fresh numpy copy of a tensor or array (StepOutput fields may be either)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy().copy()
    return np.array(x, copy=True)


def snapshot(out: StepOutput) -> StepOutput:
    """A copy of a step's output that later steps cannot change."""
    info = {k: as_np(v) for k, v in out.info.items()}
    return StepOutput(as_np(out.obs), as_np(out.reward), as_np(out.terminated), info)


def _core(num_envs: int = 4, dataset: str = "digits", **kwargs: object) -> DynaLayCore:
    model = digits_model() if dataset == "digits" else synthetic_model()
    return DynaLayCore(model, load_dataset(dataset), num_envs, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("dataset,seed", [("digits", 100), ("synthetic", 7)])
def test_batched_core_equals_single_envs(dataset: str, seed: int) -> None:
    """N slots seeded s+i, stepped with per-slot actions and reset when done, replay the episodes of
    N single envs seeded s+i (reset() without a seed at each episode boundary)."""
    n, horizon = 8, 14
    model = digits_model() if dataset == "digits" else synthetic_model()
    kwargs = {"max_steps": 3, "reward": "paper", "lambda_compute": 0.2}
    core = DynaLayCore(model, load_dataset(dataset), n, max_steps=3, reward_kwargs={"lambda_compute": 0.2})
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, core.num_actions, size=(horizon, n))
    actions[:, 0] = np.tile([1, 2, 0], horizon)[:horizon]  # slot 0: a fixed mixed pattern

    core.seed([seed + i for i in range(n)])
    batch_reset_obs = [as_np(core.reset())]
    batch_steps: list[StepOutput] = []
    boundaries = 0
    for t in range(horizon):
        out = snapshot(core.step(actions[t]))
        batch_steps.append(out)
        done = np.flatnonzero(out.terminated)
        boundaries += done.size
        obs = as_np(core.reset(done))
        full = np.full((n, core.observation_dim), np.nan, dtype=np.float32)
        full[done] = obs
        batch_reset_obs.append(full)
    assert boundaries >= 2 * n  # several episode boundaries per slot

    for i in range(n):
        env = DynaLayEnv(dataset=dataset, model=model, **kwargs)  # type: ignore[arg-type]
        obs, info = env.reset(seed=seed + i)
        np.testing.assert_allclose(obs, batch_reset_obs[0][i], rtol=1e-5, atol=1e-6)
        for t in range(horizon):
            obs, reward, terminated, truncated, info = env.step(int(actions[t, i]))
            out = batch_steps[t]
            where = f"slot {i}, t {t}"
            for key in DISCRETE_FIELDS:
                assert info[key] == out.info[key][i], (where, key)
            np.testing.assert_array_equal(info["path"], out.info["path"][i], err_msg=where)
            np.testing.assert_array_equal(info["fpi_iterations"], out.info["fpi_iterations"][i], err_msg=where)
            assert terminated == bool(out.terminated[i]) and not truncated, where
            np.testing.assert_allclose(obs, out.obs[i], rtol=1e-5, atol=1e-6, err_msg=where)
            np.testing.assert_allclose(reward, out.reward[i], rtol=1e-5, atol=1e-6, err_msg=where)
            np.testing.assert_allclose(info["compute"], out.info["compute"][i], rtol=1e-9, err_msg=where)
            np.testing.assert_allclose(info["flops"], out.info["flops"][i], rtol=1e-9, err_msg=where)
            if terminated:
                obs, info = env.reset()
                np.testing.assert_allclose(obs, batch_reset_obs[t + 1][i], rtol=1e-5, atol=1e-6, err_msg=where)


@pytest.mark.parametrize(("family", "input_shape"), [("mlp", (12,)), ("conv1d", (1, 16)), ("conv2d", (1, 8, 8))])
def test_core_charges_exactly_the_flops_that_ran(family: str, input_shape: tuple[int, ...]) -> None:
    """Mixed-action resets and steps of a batch: each charges exactly what FlopCounterMode counted
    (encoder, injections, executed iterations, the head at every visited state), for each family."""
    torch.manual_seed(0)
    layers = (LayerSpec(2, 3, max_iter=20), LayerSpec(4, 3, max_iter=20))
    model = MainModel(default_config(input_shape, 5, channels=6, head_hidden=8, layers=layers)).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(40, *input_shape, generator=g), torch.randint(0, 5, (40,), generator=g)
    model.calibrate_normalizer(x)
    core = DynaLayCore(model, None, 7, max_steps=3, examples=(x, y))
    assert check_charged_equals_executed(core, steps=12) > 0


def test_sequential_slots_cover_split_once_in_order() -> None:
    core = _core(8, split="val", sample_mode="sequential")
    n = core.num_examples
    seen: list[int] = []
    core.seed([0] * 8)
    core.reset()
    while len(seen) < n:
        seen.extend(core.info_arrays()["example"].tolist())
        out = core.step(np.zeros(8, dtype=np.int64))
        assert as_np(out.terminated).all()
        core.reset()
    assert seen[:n] == list(range(n))
    assert seen[n:] == list(range(len(seen) - n))  # the next pass starts over


def test_random_sampling_is_uniform_enough_and_seeded() -> None:
    core = _core(4)
    core.seed([1, 2, 3, 4])
    draws = np.stack([as_np(core.reset() is not None and core.example) for _ in range(50)])
    core.seed([1, 2, 3, 4])
    again = np.stack([as_np(core.reset() is not None and core.example) for _ in range(50)])
    np.testing.assert_array_equal(draws, again)
    assert len(np.unique(draws)) > 100  # 200 draws from 360 examples
    assert draws.min() >= 0 and draws.max() < core.num_examples


def test_reset_with_pinned_examples() -> None:
    core = _core(3)
    core.reset(examples=[5, 0, 7])
    np.testing.assert_array_equal(core.example.cpu().numpy(), [5, 0, 7])
    np.testing.assert_array_equal(core.label.cpu().numpy(), core.y[[5, 0, 7]].cpu().numpy())
    with pytest.raises(ValueError, match=r"examples must be 3 indices in \[0, 360\)"):
        core.reset(examples=[0, 1, 360])
    assert tuple(core.reset([]).shape) == (0, core.observation_dim)


def test_start_episodes_is_reset_without_the_observations() -> None:
    """``start_episodes`` leaves a slot in the state ``reset`` leaves it in; the observations read
    afterwards are those ``reset`` returns."""
    reset, started = _core(4), _core(4)
    for core in (reset, started):
        core.seed([0, 1, 2, 3])
    obs = reset.reset([1, 3])
    idx = started.start_episodes([1, 3])
    assert idx.dtype == torch.int64 and idx.tolist() == [1, 3]
    torch.testing.assert_close(started.observations_tensor(idx), obs, rtol=0, atol=0)
    for name in ("example", "label", "z", "logits", "flops", "done", "steps"):
        assert torch.equal(getattr(started, name), getattr(reset, name)), name
    assert started.start_episodes([]).numel() == 0


def test_masks_batched() -> None:
    core = _core(3, mask_repeats=True)
    core.seed([0, 1, 2])
    core.reset()
    np.testing.assert_array_equal(core.action_masks(), np.ones((3, 4), dtype=bool))
    out = snapshot(core.step(np.array([1, 2, 3])))
    expected = np.ones((3, 4), dtype=bool)
    expected[[0, 1, 2], [1, 2, 3]] = False
    np.testing.assert_array_equal(core.action_masks(), expected)
    np.testing.assert_array_equal(out.info["action_mask"], expected)
    out = snapshot(core.step(np.array([1, 1, 0])))  # slot 0 repeats: masked -> EXIT; slot 1 moves on
    np.testing.assert_array_equal(out.info["masked_action"], [True, False, False])
    np.testing.assert_array_equal(out.terminated, [True, False, True])
    np.testing.assert_array_equal(out.info["step"], [1, 2, 1])


# ---- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_envs", [0, -1, 1.5, "2"])
def test_num_envs_must_be_positive_int(num_envs: object) -> None:
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1"):
        _core(num_envs)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_steps", [0, -2, 2.0])
def test_max_steps_must_be_positive_int(max_steps: object) -> None:
    with pytest.raises(ValueError, match="max_steps must be an integer >= 1"):
        _core(1, max_steps=max_steps)


def test_step_before_reset_and_after_termination() -> None:
    core = _core(2)
    with pytest.raises(RuntimeError, match="reset"):
        core.step(np.array([1, 1]))
    core.reset()
    core.step(np.array([0, 1]))  # slot 0 ends
    with pytest.raises(RuntimeError, match=r"slot\(s\) \[0\]"):
        core.step(np.array([1, 1]))
    core.reset([0])
    core.step(np.array([1, 1]))


@pytest.mark.parametrize("actions", [np.array([1, 1, 1]), np.array([1]), np.array([[1, 1], [1, 1]]),
                                     torch.tensor([1, 1, 1]), [[1, 2]] * 3, 1])
def test_wrong_shaped_action_batch(actions: object) -> None:
    core = _core(2)
    core.reset()
    with pytest.raises(ValueError, match=r"expected an action batch of shape \(2,\)"):
        core.step(actions)


@pytest.mark.parametrize("actions", [np.array([1.0, 2.0]), np.array([True, False]), torch.tensor([0.5, 1.0]),
                                     ["1", "2"]])
def test_non_integer_action_batch(actions: object) -> None:
    core = _core(2)
    core.reset()
    with pytest.raises(ValueError, match=r"actions must be integers in \[0, 3\]"):
        core.step(actions)


@pytest.mark.parametrize("actions,bad", [([0, 4], "action 4 in slot 1"), ([-1, 0], "action -1 in slot 0")])
def test_out_of_range_action_batch(actions: list[int], bad: str) -> None:
    core = _core(2)
    core.reset()
    with pytest.raises(ValueError, match=bad + r" is out of range; valid actions are 0\.\.3"):
        core.step(np.array(actions))
    core.step(np.array([0, 0]))  # nothing changed: the batch still steps


def test_seed_count_must_match_slots() -> None:
    core = _core(3)
    with pytest.raises(ValueError, match="got 2 seeds for 3 slots"):
        core.seed([1, 2])


def test_uncalibrated_model_rejected() -> None:
    ds = load_dataset("digits")
    model = MainModel(default_config(ds.input_shape, ds.num_classes)).eval()
    with pytest.raises(ValueError, match="normaliser is not set.*calibrate_normalizer"):
        DynaLayCore(model, ds, 1)


def test_model_dataset_mismatch_rejected() -> None:
    with pytest.raises(ValueError, match=r"model expects inputs \(64,\).*'synthetic' has \(1, 32\)"):
        DynaLayCore(digits_model(), load_dataset("synthetic"), 1)


@pytest.mark.parametrize("kwargs,match", [
    ({"split": "train"}, "unknown split 'train'; valid: 'model_train', 'agent_train', 'val', 'test'"),
    ({"sample_mode": "shuffle"}, "unknown sample_mode 'shuffle'; valid: 'random', 'sequential'"),
    ({"mode": "online"}, "unknown mode 'online'; valid: 'frozen'"),
    ({"observation_groups": ("hidden", "pixels")}, "unknown observation group 'pixels'; valid: 'hidden', 'head'"),
    ({"observation_groups": ()}, "observation_groups is empty"),
    ({"compute_budget": 0.0}, "compute_budget must be > 0"),
    ({"reward": "nope"}, "valid rewards: paper, blockdrop, logprob"),
])
def test_bad_options_name_the_valid_ones(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _core(1, **kwargs)


def test_observation_layout_names_and_bounds() -> None:
    core = _core(1)
    k, c = core.num_actions, core.num_classes
    assert core.observation_dim == len(core.observation_names) == core.observation_low.size
    hidden = int(core.model.introspect(core.z[:1]).shape[1])
    assert hidden == core.model.introspection_dim
    assert core.observation_dim == hidden + (c + 3) + 2 + k + 2
    assert core.observation_low.dtype == np.float32 and core.observation_high.dtype == np.float32
    assert np.all(core.observation_low <= core.observation_high)
    assert set(core.observation_descriptions)  # every group explains itself
    obs = as_np(core.reset())
    assert obs.dtype == np.float32 and obs.shape == (1, core.observation_dim)
    assert np.all((obs >= core.observation_low) & (obs <= core.observation_high))


def test_step_info_is_not_changed_by_later_steps() -> None:
    """Regression: info arrays once were numpy views of the core's live CPU tensors."""
    core = _core(2)
    core.seed([0, 1])
    core.reset()
    out = core.step(np.array([1, 2]))
    before = {k: as_np(v) for k, v in out.info.items()}
    core.step(np.array([3, 0]))
    core.reset([1])
    for key, value in before.items():
        np.testing.assert_array_equal(out.info[key], value, err_msg=key)


# ---- live options --------------------------------------------------------------------------------


def test_decision_flops_is_a_live_option_that_changes_only_the_reward(tiny_digits_model) -> None:
    from dynalay_env.env import make_core

    def play(core: DynaLayCore) -> StepOutput:
        core.seed([0] * 4)
        core.reset()
        return core.step([1, 0, 2, 1])

    core = make_core(4, dataset="digits", model=tiny_digits_model, split="val", sample_mode="sequential",
                     max_steps=2, lambda_compute=0.5, mu_redundant=0.0)
    assert "decision_flops" in core.SETTABLE_OPTIONS
    free = play(core)
    free_reward, free_compute, free_obs = free.reward.clone(), free.info["compute"].copy(), free.obs.clone()
    for bad in (-1.0, float("nan"), "many", True):
        with pytest.raises(ValueError, match="decision_flops must be a finite number >= 0"):
            core.set_option("decision_flops", bad)
    assert core.decision_flops == 0.0  # a refused value changes nothing
    core.set_option("decision_flops", 12_345)
    assert core.decision_flops == 12_345.0
    charged = play(core)
    np.testing.assert_allclose(free_reward - charged.reward, 0.5 * 12_345.0 / core.normalizer, rtol=1e-5)
    np.testing.assert_array_equal(free_compute, charged.info["compute"])  # info stays env-only
    assert torch.equal(free_obs, charged.obs)
