"""``DynaLayVectorEnv``: the natively batched Gymnasium vector env, in each of Gymnasium's autoreset modes.

Checked against N single ``DynaLayEnv`` and against Gymnasium's own ``SyncVectorEnv`` of single envs,
so the batched core and the single env are one MDP.
"""

# Tests take the imported fixtures as parameters of the same name (pytest); not redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import batch_space
from gymnasium.wrappers.vector import NormalizeObservation, RecordEpisodeStatistics

import dynalay_env  # noqa: F401  (registers the env ids)
from dynalay_env.env import DynaLayEnv
from dynalay_env.vector_env import DynaLayVectorEnv
from tests.vec_fixtures import (  # noqa: F401  (_one_thread, digits_model, any_model: fixtures)
    ATOL,
    COMPARED_INFO_KEYS,
    _one_thread,
    any_model,
    assert_info_matches,
    digits_model,
    info_at,
    random_actions,
)

N = 8


def make_venv(model_and_data, num_envs: int = N, **options) -> DynaLayVectorEnv:
    model, dataset = model_and_data
    return DynaLayVectorEnv(num_envs, dataset=dataset, model=model, **options)


# ---- API shape -------------------------------------------------------------------------------------


def check_info(info: dict, num_envs: int) -> None:
    assert isinstance(info, dict)
    keys = [k for k in info if not k.startswith("_")]
    for key in ("example", "label", "prediction", "correct", "step", "compute", "flops", "path",
                "fpi_iterations", "action_mask", "masked_action", "repeated"):
        assert key in keys, f"info lacks {key!r}"
    for key in keys:
        value = info[key]
        assert isinstance(value, np.ndarray), f"info[{key!r}] is {type(value).__name__}, not an array"
        assert value.shape[0] == num_envs, f"info[{key!r}] has shape {value.shape}"
        mask = info.get(f"_{key}")
        assert isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.shape == (num_envs,), key
        assert mask.all()


def test_make_vec_returns_native_vector_env(digits_model):
    model, _ = digits_model
    venv = gym.make_vec("DynaLay-Digits-v0", num_envs=N, model=model)
    try:
        assert type(venv) is DynaLayVectorEnv
        assert venv.num_envs == N
        assert venv.autoreset_mode == venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        assert venv.unwrapped.spec is not None and venv.unwrapped.spec.id == "DynaLay-Digits-v0"

        single = DynaLayEnv(dataset="digits", model=model)
        k = model.num_layers
        assert venv.single_action_space == spaces.Discrete(k + 1)
        assert venv.single_observation_space == single.observation_space
        assert venv.single_observation_space.dtype == np.float32
        assert venv.observation_space == batch_space(venv.single_observation_space, N)
        assert venv.action_space == batch_space(venv.single_action_space, N)
        dim = venv.single_observation_space.shape[0]

        obs, info = venv.reset(seed=0)
        assert obs.dtype == np.float32 and obs.shape == (N, dim)
        assert venv.observation_space.contains(obs)
        check_info(info, N)
        masks = venv.action_masks()
        assert masks.shape == (N, k + 1) and masks.dtype == np.bool_
        np.testing.assert_array_equal(masks, info["action_mask"])

        rng = np.random.default_rng(0)
        for _ in range(12):
            obs, reward, terminated, truncated, info = venv.step(random_actions(rng, N, k + 1))
            assert obs.dtype == np.float32 and obs.shape == (N, dim)
            assert venv.observation_space.contains(obs)
            assert reward.dtype == np.float32 and reward.shape == (N,)
            assert terminated.dtype == np.bool_ and terminated.shape == (N,)
            assert truncated.dtype == np.bool_ and not truncated.any()
            check_info(info, N)
            assert venv.action_masks().shape == (N, k + 1)
    finally:
        venv.close()


def test_attributes_calls_and_render(digits_model):
    venv = make_venv(digits_model, 3, render_mode="ansi", mask_repeats=True)
    venv.reset(seed=1)
    assert venv.get_attr("render_mode") == ("ansi",) * 3
    masks = venv.call("action_masks")
    assert len(masks) == 3 and all(m.shape == (venv.core.num_actions,) for m in masks)
    frames = venv.render()
    assert len(frames) == 3 and all(isinstance(f, str) and "example" in f for f in frames)
    assert venv.observation_names == venv.core.observation_names
    assert len(venv.observation_names) == venv.single_observation_space.shape[0]


def test_action_masks_follow_each_slot(digits_model):
    venv = make_venv(digits_model, 3, mask_repeats=True)
    venv.reset(seed=2)
    assert venv.action_masks().all()
    _, _, _, _, info = venv.step(np.array([2, 1, 3]))
    masks = venv.action_masks()
    expected = np.ones_like(masks)
    expected[0, 2] = expected[1, 1] = expected[2, 3] = False
    np.testing.assert_array_equal(masks, expected)
    np.testing.assert_array_equal(info["action_mask"], expected)
    # A masked action (repeat layer 2 in slot 0) runs as EXIT and is flagged.
    _, _, terminated, _, info = venv.step(np.array([2, 2, 1]))
    assert info["masked_action"].tolist() == [True, False, False]
    assert terminated.tolist() == [True, False, False]


def test_info_arrays_are_not_changed_by_later_steps(digits_model):
    venv = make_venv(digits_model, 4)
    _, reset_info = venv.reset(seed=0)
    _, _, _, _, info = venv.step(np.array([1, 2, 3, 0]))
    snapshots = [({k: v.copy() for k, v in d.items() if isinstance(v, np.ndarray)}, d) for d in (reset_info, info)]
    venv.step(np.array([1, 1, 1, 1]))
    venv.step(np.array([3, 3, 3, 3]))
    for before, after in snapshots:
        changed = [k for k in before if not np.array_equal(before[k], after[k])]
        assert not changed, f"info arrays mutated by later steps: {changed}"


def test_info_masks_are_fresh_arrays(digits_model):
    venv = make_venv(digits_model, 4)
    _, info = venv.reset(seed=0)
    info["_example"][0] = False  # e.g. a wrapper marking a key absent in slot 0
    info["label"][1] = -5
    _, _, _, _, info = venv.step(np.array([1, 2, 3, 0]))
    assert all(info[k].all() for k in info if k.startswith("_"))
    assert (info["label"] >= 0).all()


def test_get_attr_reads_what_set_attr_wrote(digits_model):
    venv = make_venv(digits_model, 3)
    venv.set_attr("mask_repeats", True)
    assert venv.get_attr("mask_repeats") == (True,) * 3


def test_set_attr_max_steps_is_refused_or_honoured(digits_model):
    venv = make_venv(digits_model, 2)
    try:
        venv.set_attr("max_steps", 6)
    except ValueError:
        return
    venv.reset(seed=0)
    for t in range(6):
        terminated = venv.step(np.array([1, 2]))[2]
        assert terminated.all() == (t == 5)


# ---- Gymnasium vector wrappers ---------------------------------------------------------------------


def test_normalize_observation_wrapper(digits_model):
    venv = NormalizeObservation(make_venv(digits_model))
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (N, venv.single_observation_space.shape[0])
    rng = np.random.default_rng(1)
    for _ in range(10):
        obs, reward, terminated, truncated, info = venv.step(random_actions(rng, N, venv.single_action_space.n))
        assert np.isfinite(obs).all() and obs.shape[0] == N
    assert venv.obs_rms.count > 10 * N


def test_record_episode_statistics_wrapper(digits_model):
    venv = RecordEpisodeStatistics(make_venv(digits_model))
    venv.reset(seed=3)
    k1 = venv.single_action_space.n
    rng = np.random.default_rng(2)
    returns = np.zeros(N)
    lengths = np.zeros(N, dtype=int)
    pending = np.zeros(N, dtype=bool)
    seen = 0
    for _ in range(30):
        _, reward, terminated, truncated, info = venv.step(random_actions(rng, N, k1))
        # NEXT_STEP: a slot that ended last step is reset now and does not count toward the new episode.
        returns[pending] = 0.0
        lengths[pending] = 0
        returns[~pending] += reward[~pending]
        lengths[~pending] += 1
        if terminated.any():
            assert "episode" in info
            np.testing.assert_array_equal(info["_episode"], terminated)
            done = np.flatnonzero(terminated)
            np.testing.assert_allclose(info["episode"]["r"][done], returns[done], atol=1e-5)
            np.testing.assert_array_equal(info["episode"]["l"][done], lengths[done])
            seen += done.size
        else:
            assert "episode" not in info
        pending = terminated.copy()
    assert seen >= 2 * N
    assert len(venv.return_queue) > 0 and len(venv.length_queue) > 0


# ---- equivalence with single envs ------------------------------------------------------------------


def test_vector_env_replays_single_envs(any_model):
    """Slot i of ``reset(seed=s)`` == a single env reset with ``seed=s+i``, across autoresets."""
    model, dataset = any_model
    seed, steps = 11, 40
    venv = make_venv(any_model)
    singles = [DynaLayEnv(dataset=dataset, model=model) for _ in range(N)]
    k1 = venv.single_action_space.n

    obs, info = venv.reset(seed=seed)
    for i, env in enumerate(singles):
        o, inf = env.reset(seed=seed + i)
        np.testing.assert_allclose(obs[i], o, atol=ATOL)
        for key in COMPARED_INFO_KEYS:
            assert_info_matches(info_at(info, i, key), inf[key], key, f"reset slot {i}")

    rng = np.random.default_rng(5)
    pending = np.zeros(N, dtype=bool)  # slots whose episode ended on the previous step
    episodes = np.zeros(N, dtype=int)
    for t in range(steps):
        actions = random_actions(rng, N, k1)
        obs, reward, terminated, truncated, info = venv.step(actions)
        assert not truncated.any()
        for i, env in enumerate(singles):
            where = f"step {t} slot {i}"
            if pending[i]:
                o, inf = env.reset()  # no seed: the slot's example stream goes on
                assert reward[i] == 0.0 and not terminated[i], where
                r, term = 0.0, False
            else:
                o, r, term, _, inf = env.step(int(actions[i]))
                assert terminated[i] == term, where
                np.testing.assert_allclose(reward[i], r, atol=ATOL, err_msg=where)
            np.testing.assert_allclose(obs[i], o, atol=ATOL, err_msg=where)
            for key in COMPARED_INFO_KEYS:
                assert_info_matches(info_at(info, i, key), inf[key], key, where)
        episodes += terminated
        pending = terminated.copy()
    assert (episodes >= 3).all(), f"too few episode boundaries per slot: {episodes}"


def test_vector_env_matches_gymnasium_sync_vector_env(digits_model):
    model, dataset = digits_model
    seed = 4
    native = make_venv(digits_model)
    sync = SyncVectorEnv([lambda: DynaLayEnv(dataset=dataset, model=model) for _ in range(N)])
    assert sync.metadata["autoreset_mode"] == native.metadata["autoreset_mode"]
    o1, i1 = native.reset(seed=seed)
    o2, i2 = sync.reset(seed=seed)
    np.testing.assert_allclose(o1, o2, atol=ATOL)
    np.testing.assert_array_equal(i1["example"], i2["example"])
    rng = np.random.default_rng(9)
    for t in range(25):
        actions = random_actions(rng, N, native.single_action_space.n)
        o1, r1, te1, tr1, i1 = native.step(actions)
        o2, r2, te2, tr2, i2 = sync.step(actions)
        np.testing.assert_allclose(o1, o2, atol=ATOL, err_msg=f"step {t}")
        np.testing.assert_allclose(r1, r2, atol=ATOL, err_msg=f"step {t}")
        np.testing.assert_array_equal(te1, te2)
        np.testing.assert_array_equal(tr1, tr2)
        for key in ("example", "prediction", "step"):
            np.testing.assert_array_equal(i1[key], i2[key], err_msg=f"step {t} {key}")
    sync.close()


def test_action_of_a_resetting_slot_is_ignored(digits_model):
    a, b = make_venv(digits_model, 4), make_venv(digits_model, 4)
    for env in (a, b):
        env.reset(seed=21)
        env.step(np.array([0, 1, 0, 2]))  # slots 0 and 2 end: the next step resets them
    out_a = a.step(np.array([3, 1, 1, 2]))
    out_b = b.step(np.array([0, 1, 2, 2]))
    for x, y in zip(out_a[:4], out_b[:4], strict=True):
        np.testing.assert_array_equal(x, y)
    assert out_a[1][[0, 2]].tolist() == [0.0, 0.0] and not out_a[2][[0, 2]].any()
    assert (out_a[4]["step"][[0, 2]] == 0).all()


def test_reset_seed_list_and_unseeded_reset(digits_model):
    venv = make_venv(digits_model, 3)
    model, dataset = digits_model
    obs, info = venv.reset(seed=[7, 100, 3])
    for i, s in enumerate([7, 100, 3]):
        o, inf = DynaLayEnv(dataset=dataset, model=model).reset(seed=s)
        np.testing.assert_allclose(obs[i], o, atol=ATOL)
        assert info["example"][i] == inf["example"]
    # Same seed, same episodes; an unseeded reset continues the stream instead of replaying it.
    first = venv.reset(seed=5)[1]["example"].copy()
    second = venv.reset()[1]["example"].copy()
    assert venv.reset(seed=5)[1]["example"].tolist() == first.tolist()
    assert venv.reset()[1]["example"].tolist() == second.tolist()


def test_reset_options_pin_the_example(digits_model):
    venv = make_venv(digits_model, 3)
    _, info = venv.reset(seed=0, options={"example": 5})
    assert info["example"].tolist() == [5, 5, 5]


# ---- torch tensors out -----------------------------------------------------------------------------


def test_return_tensors(digits_model):
    tensors = make_venv(digits_model, 4, return_tensors=True)
    arrays = make_venv(digits_model, 4)
    obs_t, info_t = tensors.reset(seed=8)
    obs_a, _ = arrays.reset(seed=8)
    assert isinstance(obs_t, torch.Tensor) and obs_t.dtype == torch.float32 and obs_t.shape == obs_a.shape
    np.testing.assert_array_equal(obs_t.numpy(), obs_a)
    assert isinstance(info_t["example"], np.ndarray)
    rng = np.random.default_rng(3)
    for _ in range(8):
        actions = random_actions(rng, 4, tensors.single_action_space.n)
        obs_t, rew_t, term_t, trunc_t, _ = tensors.step(torch.as_tensor(actions))
        obs_a, rew_a, term_a, trunc_a, _ = arrays.step(actions)
        assert isinstance(obs_t, torch.Tensor) and obs_t.dtype == torch.float32
        assert isinstance(rew_t, torch.Tensor) and rew_t.dtype == torch.float32 and rew_t.shape == (4,)
        assert isinstance(term_t, torch.Tensor) and term_t.dtype == torch.bool and term_t.shape == (4,)
        assert isinstance(trunc_t, torch.Tensor) and not bool(trunc_t.any())
        np.testing.assert_array_equal(obs_t.numpy(), obs_a)
        np.testing.assert_array_equal(rew_t.numpy(), rew_a)
        np.testing.assert_array_equal(term_t.numpy(), term_a)


# ---- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_envs", [0, -1, True, 2.0, "4"])
def test_bad_num_envs(digits_model, num_envs):
    with pytest.raises(ValueError, match="num_envs"):
        make_venv(digits_model, num_envs)


def test_make_vec_bad_num_envs(digits_model):
    with pytest.raises(ValueError, match="num_envs"):
        gym.make_vec("DynaLay-Digits-v0", num_envs=0, model=digits_model[0])


@pytest.mark.parametrize(
    ("actions", "match"),
    [
        (np.zeros(N + 1, dtype=np.int64), r"shape \(8,\)"),
        (np.zeros((N, 2), dtype=np.int64), r"shape \(8,\)"),
        (np.zeros(N - 1, dtype=np.int64), r"shape \(8,\)"),
        (np.array([1, 0, 2, 9, 0, 1, 0, 0]), "slot 3"),
        (np.array([1, 0, 2, 0, 0, 1, -1, 0]), "slot 6"),
        (np.ones(N, dtype=np.float32), "integers"),
        (np.ones(N, dtype=bool), "integers"),
        (torch.ones(N), "integers"),
    ],
    ids=["too-long", "two-columns", "too-short", "out-of-range", "negative", "float", "bool", "float-tensor"],
)
def test_bad_actions(digits_model, actions, match):
    venv = make_venv(digits_model)
    twin = make_venv(digits_model)
    venv.reset(seed=0)
    twin.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        venv.step(actions)
    # A rejected batch leaves the env untouched.
    good = np.array([1, 0, 2, 3, 0, 1, 2, 3])
    for x, y in zip(venv.step(good)[:4], twin.step(good)[:4], strict=True):
        np.testing.assert_array_equal(x, y)


def test_rejected_actions_during_autoreset_leave_the_env_untouched(digits_model):
    venv, twin = make_venv(digits_model, 4), make_venv(digits_model, 4)
    for env in (venv, twin):
        env.reset(seed=3)
        env.step(np.zeros(4, dtype=np.int64))  # every slot ends: the next step resets them all
    with pytest.raises(ValueError, match="slot 3"):
        venv.step(np.array([0, 0, 0, 9]))
    out, ref = venv.step(np.ones(4, dtype=np.int64)), twin.step(np.ones(4, dtype=np.int64))
    np.testing.assert_array_equal(out[4]["example"], ref[4]["example"])
    np.testing.assert_array_equal(out[0], ref[0])


def test_bad_seeds_and_step_before_reset(digits_model):
    venv = make_venv(digits_model, 3)
    with pytest.raises(ValueError, match="3 seeds"):
        venv.reset(seed=[1, 2])
    with pytest.raises(ValueError, match="3 seeds"):
        venv.reset(seed=[1, 2, 3, 4])
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros(3, dtype=np.int64))


# ---- sequential sampling ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["always-exit", "random"])
def test_sequential_mode_visits_each_example_once_per_pass(digits_model, policy):
    """Examples handed to slots as they reset (lowest slot first) walk the split in order."""
    venv = make_venv(digits_model, split="val", sample_mode="sequential")
    n = venv.core.num_examples
    assert n == digits_model[1].num_examples("val")
    k1 = venv.single_action_space.n
    rng = np.random.default_rng(4)
    _, info = venv.reset(seed=0)
    visited = info["example"].tolist()
    terminated = np.zeros(N, dtype=bool)
    while len(visited) < 2 * n + N:
        restarted = terminated  # NEXT_STEP: a slot that ended restarts at the next step
        actions = np.zeros(N, dtype=np.int64) if policy == "always-exit" else random_actions(rng, N, k1, 0.5)
        _, _, terminated, _, info = venv.step(actions)
        visited += info["example"][restarted].tolist()
    first, second = visited[:n], visited[n:2 * n]
    assert sorted(first) == list(range(n)), "first pass does not visit each example exactly once"
    assert sorted(second) == list(range(n)), "second pass does not visit each example exactly once"
    assert first == list(range(n))
    # A seeded reset rewinds to the start of the split.
    _, info = venv.reset(seed=1)
    assert info["example"].tolist() == list(range(N))


# ---- Gymnasium's three autoreset modes ------------------------------------------------------------


def assert_vector_infos_equal(native: dict, sync: dict, where: str) -> None:
    """Gymnasium vector infos equal key by key: same keys, dtypes, shapes and values (floats to
    batched-rounding precision), recursing into ``final_info``; ``final_obs`` object arrays slot by slot."""
    assert set(native) == set(sync), f"{where}: keys differ: {set(native) ^ set(sync)}"
    for key in native:
        a, b = native[key], sync[key]
        at = f"{where} info[{key!r}]"
        if isinstance(b, dict):
            assert isinstance(a, dict), at
            assert_vector_infos_equal(a, b, at)
            continue
        assert isinstance(a, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, \
            f"{at}: {getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')} != {b.dtype} {b.shape}"
        if a.dtype == object:
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                assert (x is None) == (y is None), f"{at} slot {i}"
                if x is not None:
                    np.testing.assert_allclose(x, y, atol=ATOL, err_msg=f"{at} slot {i}")
        elif np.issubdtype(a.dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=at)
        else:
            np.testing.assert_array_equal(a, b, err_msg=at)


@pytest.mark.parametrize("mode", list(AutoresetMode), ids=lambda m: m.name)
def test_each_autoreset_mode_matches_gymnasium_sync_vector_env(digits_model, mode):
    """Step by step, the native vector env in each mode returns what Gymnasium's ``SyncVectorEnv`` of
    single envs returns with the same seeds and mode: observations, rewards, terminations and the
    whole info (SAME_STEP: ``final_obs``/``final_info``; DISABLED: partial resets by ``reset_mask``)."""
    model, dataset = digits_model
    native = gym.make_vec("DynaLay-Digits-v0", num_envs=N, model=model, autoreset_mode=mode, mask_repeats=True)
    sync = SyncVectorEnv([lambda: DynaLayEnv(dataset=dataset, model=model, mask_repeats=True) for _ in range(N)],
                         autoreset_mode=mode)
    assert type(native) is DynaLayVectorEnv
    assert native.autoreset_mode == native.metadata["autoreset_mode"] == sync.autoreset_mode == mode
    o1, i1 = native.reset(seed=4)
    o2, i2 = sync.reset(seed=4)
    np.testing.assert_allclose(o1, o2, atol=ATOL)
    assert_vector_infos_equal(i1, i2, "reset")
    rng = np.random.default_rng(9)
    ended = partial_resets = 0
    for t in range(40):
        actions = random_actions(rng, N, native.single_action_space.n)
        o1, r1, te1, tr1, i1 = native.step(actions)
        o2, r2, te2, tr2, i2 = sync.step(actions)
        where = f"{mode.name} step {t}"
        np.testing.assert_allclose(o1, o2, atol=ATOL, err_msg=where)
        np.testing.assert_allclose(r1, r2, atol=ATOL, err_msg=where)
        np.testing.assert_array_equal(te1, te2, err_msg=where)
        np.testing.assert_array_equal(tr1, tr2, err_msg=where)
        assert_vector_infos_equal(i1, i2, where)
        ended += int(te1.sum())
        if mode == AutoresetMode.SAME_STEP:
            assert ("final_obs" in i1) == bool(te1.any()), where
        if mode == AutoresetMode.DISABLED and te1.any():
            # The first partial reset re-seeds the ended slots (slot i gets 100 + i), later ones go on.
            seed = 100 if partial_resets == 0 else None
            o1, i1 = native.reset(seed=seed, options={"reset_mask": te1.copy()})
            o2, i2 = sync.reset(seed=seed, options={"reset_mask": te2.copy()})
            np.testing.assert_allclose(o1, o2, atol=ATOL, err_msg=f"{where} reset_mask")
            assert_vector_infos_equal(i1, i2, f"{where} reset_mask")
            np.testing.assert_array_equal(i1["_example"], te1)
            partial_resets += 1
        if t in (17, 29):
            # Any mode: a partial reset of running and just-ended slots alike (a pending NEXT_STEP
            # autoreset of a slot reset here is dropped, as in SyncVectorEnv).
            mask = np.zeros(N, dtype=bool)
            mask[[0, 3, 5]] = True
            o1, i1 = native.reset(options={"reset_mask": mask.copy()})
            o2, i2 = sync.reset(options={"reset_mask": mask.copy()})
            np.testing.assert_allclose(o1, o2, atol=ATOL, err_msg=f"{where} forced reset_mask")
            assert_vector_infos_equal(i1, i2, f"{where} forced reset_mask")
    assert ended >= 3 * N, f"too few episode ends to compare: {ended}"
    if mode == AutoresetMode.DISABLED:
        assert partial_resets >= 5
    sync.close()


def test_same_step_returns_the_new_episode_and_keeps_the_final_one(digits_model):
    venv = make_venv(digits_model, 4, autoreset_mode=AutoresetMode.SAME_STEP)
    twin = make_venv(digits_model, 4)  # NEXT_STEP, same seeds: its terminal step is the reference
    venv.reset(seed=3)
    twin.reset(seed=3)
    actions = np.array([0, 2, 0, 1])
    obs, reward, terminated, _, info = venv.step(actions)
    ref_obs, ref_reward, ref_terminated, _, ref_info = twin.step(actions)
    np.testing.assert_array_equal(terminated, [True, False, True, False])
    np.testing.assert_array_equal(terminated, ref_terminated)
    np.testing.assert_allclose(reward, ref_reward)
    np.testing.assert_array_equal(info["_final_obs"], terminated)
    np.testing.assert_array_equal(info["_final_info"], terminated)
    for i in range(4):
        if terminated[i]:
            np.testing.assert_array_equal(info["final_obs"][i], ref_obs[i])
            assert info["final_info"]["example"][i] == ref_info["example"][i]
            assert info["step"][i] == 0 and info["path"][i].tolist() == [-1] * venv.core.max_steps
        else:
            assert info["final_obs"][i] is None
            np.testing.assert_array_equal(obs[i], ref_obs[i])
    # The restarted slots run their new episode at once: the next step's actions apply to them
    # (slots 1 and 3 exit now and restart again).
    _, _, terminated, _, info = venv.step(np.array([1, 0, 1, 0]))
    assert terminated.tolist() == [False, True, False, True] and info["step"].tolist() == [1, 0, 1, 0]
    assert info["final_info"]["step"].tolist() == [0, 1, 0, 1]


def test_disabled_mode_needs_a_reset_mask(digits_model):
    venv = make_venv(digits_model, 3, autoreset_mode="Disabled")
    assert venv.autoreset_mode == AutoresetMode.DISABLED
    venv.reset(seed=0)
    _, _, terminated, _, _ = venv.step(np.array([0, 1, 1]))
    assert terminated.tolist() == [True, False, False]
    with pytest.raises(RuntimeError, match=r"finished episode slot\(s\) \[0\].*reset_mask"):
        venv.step(np.array([1, 1, 1]))
    obs, info = venv.reset(options={"reset_mask": terminated})
    assert obs.shape == (3, venv.single_observation_space.shape[0])
    assert info["_step"].tolist() == [True, False, False] and info["step"].tolist() == [0, 0, 0]
    _, _, _, _, info = venv.step(np.array([1, 1, 1]))
    assert info["step"].tolist() == [1, 2, 2]
    for bad, match in [(np.array([1, 0, 0]), "numpy bool array of shape"), ([True, False, False], "numpy bool"),
                       (np.zeros(2, dtype=bool), r"shape \(3,\)"), (np.zeros(3, dtype=bool), "at least one")]:
        with pytest.raises(ValueError, match=match):
            venv.reset(options={"reset_mask": bad})


@pytest.mark.parametrize(("value", "mode"), [("SameStep", AutoresetMode.SAME_STEP), ("same_step", AutoresetMode.SAME_STEP),
                                             ("DISABLED", AutoresetMode.DISABLED), ("NextStep", AutoresetMode.NEXT_STEP)])
def test_autoreset_mode_by_name(digits_model, value, mode):
    venv = make_venv(digits_model, 2, autoreset_mode=value)
    assert venv.autoreset_mode is mode and venv.metadata["autoreset_mode"] is mode
    assert DynaLayVectorEnv.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP  # the class default is untouched


def test_bad_autoreset_mode(digits_model):
    with pytest.raises(ValueError, match=r"unknown autoreset_mode 'eager'; valid: AutoresetMode.NEXT_STEP \('NextStep'\)"):
        make_venv(digits_model, 2, autoreset_mode="eager")


# ---- fixed-shape info: the single env, a sync vector of single envs and the native vector env ------


def test_info_is_the_same_in_single_sync_and_native_envs(digits_model):
    """Key by key: the same keys, dtypes and shapes in the single env's info, in one slot of
    ``SyncVectorEnv``'s and in one slot of the native vector env's, after reset and after steps."""
    model, dataset = digits_model
    single = DynaLayEnv(dataset=dataset, model=model, max_steps=3)
    sync = SyncVectorEnv([lambda: DynaLayEnv(dataset=dataset, model=model, max_steps=3) for _ in range(2)])
    native = make_venv(digits_model, 2, max_steps=3)
    infos = [(single.reset(seed=0)[1], sync.reset(seed=0)[1], native.reset(seed=0)[1])]
    for actions in ([1, 0], [2, 1], [3, 2]):
        infos.append((single.step(actions[0])[4], sync.step(np.array(actions))[4], native.step(np.array(actions))[4]))
    for t, (one, synced, batched) in enumerate(infos):
        keys = {k for k in batched if not k.startswith("_")}
        assert set(one) == keys == {k for k in synced if not k.startswith("_")}, t
        for key in keys:
            value = np.asarray(one[key])
            for name, vec in (("sync", synced), ("native", batched)):
                assert vec[key].dtype == value.dtype, f"{t} {name} {key}: {vec[key].dtype} != {value.dtype}"
                assert vec[key].shape == (2, *value.shape), f"{t} {name} {key}: {vec[key].shape}"
                assert vec[f"_{key}"].all()
            np.testing.assert_array_equal(batched[key][0], value, err_msg=f"{t} {key}")
    sync.close()
