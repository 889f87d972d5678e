"""Record a trained agent's episodes as an animated GIF, from ``render_mode="rgb_array"`` frames.

    python train_agent.py train --algo ppo --env DynaLay-MNIST1D-v0 --run-dir runs/gif-ppo \\
        --env-kwargs lambda_compute:0.1 --timesteps 100000
    python examples/record_gif.py --run-dir runs/gif-ppo --episodes 8 --out docs/assets/agent.gif

The run folder's agent (``agents.training.load_run``) plays the first ``--episodes`` examples of
``--split`` in order, greedily and with the run's own env options; every decision and the final
state are one frame each (the last held longer). The GIF is written atomically with Pillow
(a matplotlib dependency), with an adaptive palette to keep it small.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np


def play(run_dir: str | Path, episodes: int, split: str) -> list[tuple[np.ndarray, bool]]:
    """Frames ``uint8 [H, W, 3]`` of ``episodes`` greedy episodes, each flagged True if it ends one."""
    from agents.training import env_options, load_run
    from dynalay_env.env import DynaLayEnv

    config, agent, model_path = load_run(run_dir)
    env = DynaLayEnv(render_mode="rgb_array", split=split, sample_mode="sequential",
                     **env_options(config, model_path))
    frames: list[tuple[np.ndarray, bool]] = []
    obs, _ = env.reset(seed=0)
    for _ in range(episodes):
        state, start, terminated = None, np.ones(1, dtype=bool), False
        frames.append((env.render(), False))
        while not terminated:
            action, state = agent.predict(obs[None], state=state, episode_start=start,
                                          action_masks=env.action_masks()[None], deterministic=True)
            start = np.zeros(1, dtype=bool)
            obs, _, terminated, _, _ = env.step(int(np.asarray(action).reshape(-1)[0]))
            frames.append((env.render(), terminated))
        obs, _ = env.reset()
    return frames


def write_gif(path: str | Path, frames: list[tuple[np.ndarray, bool]], seconds: float, hold: float,
              colors: int = 64) -> int:
    """Write the frames as a looping GIF (atomically); returns its size in bytes."""
    from PIL import Image

    from dynalay_env.atomic import atomic_write_bytes

    images = [Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE, colors=colors) for f, _ in frames]
    durations = [int(1000 * (hold if last else seconds)) for _, last in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0,
                   optimize=True)
    atomic_write_bytes(path, buffer.getvalue())
    return len(buffer.getvalue())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a finished training run folder (train_agent.py train)")
    parser.add_argument("--episodes", type=int, default=8, help="episodes to record (default: 8)")
    parser.add_argument("--split", default="test", help="split the examples come from (default: test)")
    parser.add_argument("--out", default="docs/assets/agent.gif", help="GIF to write")
    parser.add_argument("--seconds", type=float, default=0.8, help="seconds per frame (default: 0.8)")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds on an episode's last frame (default: 2)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    frames = play(args.run_dir, args.episodes, args.split)
    size = write_gif(args.out, frames, args.seconds, args.hold)
    print(f"wrote {args.out}: {len(frames)} frames of {args.episodes} episodes, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
