"""``render_mode="rgb_array"``: fixed-size uint8 frames from the single and the vector env, Gymnasium's
env checker with its render check, and ``RecordVideo`` (when moviepy is installed: extra ``video``)."""

from __future__ import annotations

import importlib.util
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import dynalay_env  # noqa: F401  (registers the env ids)
from dynalay_env.render import FRAME_HEIGHT, FRAME_WIDTH, FrameRenderer
from dynalay_env.vector_env import DynaLayVectorEnv
from tests.env_fixtures import digits_model, no_default_model_training, synthetic_model  # noqa: F401

SHAPE = (FRAME_HEIGHT, FRAME_WIDTH, 3)


def rgb_env(env_id: str = "DynaLay-Synthetic-v0", **kwargs: Any) -> gym.Env:
    model = synthetic_model() if "Synthetic" in env_id else digits_model()
    return gym.make(env_id, model=model, render_mode="rgb_array", **kwargs)


def test_frames_are_fixed_size_uint8_and_show_the_episode() -> None:
    env = rgb_env(max_steps=3)
    env.reset(seed=0)
    frames = [env.render()]
    for action in (2, 1, 3):  # the third layer reaches max_steps: a forced exit
        _, _, terminated, _, _ = env.step(action)
        frames.append(env.render())
    assert terminated
    for frame in frames:
        assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape == SHAPE
    # Every step changes the picture (path, probabilities, compute), and a frame is not blank.
    for before, after in zip(frames, frames[1:], strict=False):
        assert np.abs(before.astype(int) - after.astype(int)).sum() > 0
    assert frames[0].std() > 10
    # Another dataset (an image: digits' 8 x 8) gives the same size.
    digits = rgb_env("DynaLay-Digits-v0")
    digits.reset(seed=1)
    assert digits.render().shape == SHAPE


def test_rendering_reads_the_core_and_is_made_lazily() -> None:
    env = rgb_env()
    env.reset(seed=0)
    env.step(1)
    assert env.unwrapped._renderer is None  # stepping draws nothing
    frame = env.render()
    renderer = env.unwrapped._renderer
    assert isinstance(renderer, FrameRenderer)
    np.testing.assert_array_equal(renderer.frame(0), frame)  # the same state draws the same frame
    with pytest.raises(ValueError, match=r"slot must be in \[0, 1\)"):
        renderer.frame(1)


def test_check_env_with_the_render_check() -> None:
    env = rgb_env("DynaLay-Digits-v0")
    check_env(env.unwrapped, skip_render_check=False)


def test_vector_env_renders_one_frame_per_slot() -> None:
    venv = gym.make_vec("DynaLay-Synthetic-v0", num_envs=3, model=synthetic_model(), render_mode="rgb_array")
    assert isinstance(venv.unwrapped, DynaLayVectorEnv)
    assert "rgb_array" in venv.metadata["render_modes"] and venv.metadata["render_fps"] > 0
    venv.reset(seed=0)
    venv.step(np.array([0, 1, 2]))
    frames = venv.render()
    assert isinstance(frames, tuple) and len(frames) == 3
    assert all(f.shape == SHAPE and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[1])  # slot 0 exited, slot 1 applied a layer
    single = DynaLayVectorEnv(1, dataset="synthetic", model=synthetic_model())
    assert single.render() is None


@pytest.mark.skipif(importlib.util.find_spec("moviepy") is None, reason="needs moviepy (extra `video`)")
def test_record_video_writes_an_episode(tmp_path) -> None:
    from gymnasium.wrappers import RecordVideo

    env = RecordVideo(rgb_env(), str(tmp_path / "videos"), episode_trigger=lambda episode: episode == 0, disable_logger=True)
    env.reset(seed=0)
    terminated = False
    for action in (1, 2, 0):
        _, _, terminated, _, _ = env.step(action)
    assert terminated
    env.reset()  # the episode's end closes its video
    env.close()
    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["rl-video-episode-0.mp4"] and videos[0].stat().st_size > 1000


def test_record_gif_of_a_trained_run(tmp_path) -> None:
    from PIL import Image, ImageSequence

    from examples.record_gif import main
    from tests.agent_fixtures import trained_ppo_run

    out = tmp_path / "assets" / "agent.gif"
    main(["--run-dir", str(trained_ppo_run()), "--episodes", "2", "--split", "val", "--out", str(out),
          "--seconds", "0.5", "--hold", "1.5"])
    # The iterator moves one image object through the frames: read each frame's fields as it passes.
    frames = [(f.info["duration"], f.size) for f in ImageSequence.Iterator(Image.open(out))]
    durations = [d for d, _ in frames]
    # Each episode: its first state, one frame per decision, the last one held.
    assert durations.count(1500) == 2 and durations[-1] == 1500 and set(durations) == {500, 1500}
    assert {size for _, size in frames} == {(FRAME_WIDTH, FRAME_HEIGHT)}
    assert not list(out.parent.glob(".*"))  # written atomically: no temporary left


def test_a_rendering_env_pickles_and_renders_after() -> None:
    import pickle

    env = rgb_env()
    env.reset(seed=0)
    env.step(1)
    frame = env.render()  # the renderer and its figure exist now
    copy = pickle.loads(pickle.dumps(env))
    np.testing.assert_array_equal(copy.render(), frame)
