"""MNIST from real IDX files on disk, end to end: `train_agent.py pretrain --dataset mnist --data-root
DIR` trains a conv2d main model, and the `DynaLay-MNIST-v0` env runs on it and passes the checkers.

The files are small ones the test writes itself (structured so that a model can learn them): the
image of class c is a bright 7x7 square at one of 10 positions, plus noise.
"""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import dynalay_env  # noqa: F401
from train_agent import main


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def write_fake_mnist(folder: Path, n_train: int = 1200, n_test: int = 100, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(labels):
            row, col = 3 + 7 * (c // 4), 3 + 6 * (c % 4)
            images[i, row:row + 7, col:col + 7] = 255
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)


@pytest.mark.slow
def test_pretrain_cli_on_mnist_idx_files_and_env(tmp_path, capsys):
    data_root = tmp_path / "data"
    write_fake_mnist(data_root / "MNIST" / "raw")
    run_dir = tmp_path / "run"
    code = main(["pretrain", "--dataset", "mnist", "--data-root", str(data_root), "--run-dir", str(run_dir),
                 "--epochs", "4", "--batch-size", "32", "--quiet"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((run_dir / "pretrain.json").read_text())
    assert report["dataset"] == "mnist" and report["model_config"]["family"] == "conv2d"
    # The squares are easy; chance is 0.1. Four epochs reach 1.0 on test with seeds 0, 1 and 2 (val 1.0
    # from the second epoch on).
    assert report["full_depth_accuracy"] > 0.8

    from gymnasium.utils.env_checker import check_env

    env = gym.make("DynaLay-MNIST-v0", data_root=str(data_root), model=str(run_dir / "main_model.pt"))
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    _, _, _, _, info = env.step(1)
    assert info["path"][: info["step"]].tolist() == [1] and info["flops"] > 0


def test_mnist_without_files_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        gym.make("DynaLay-MNIST-v0", data_root=str(tmp_path))
