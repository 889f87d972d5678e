"""CUDA: the same results on the GPU as on the CPU, and executed FLOPs equal counted there too.

Skipped where no CUDA device is present (CI has none); run on a GPU machine with
``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dynalay_env.env import make_core
from dynalay_env.fpi import FPILayer
from tests.agent_fixtures import ENV_ID, N_ENVS, TINY_PPO, digits_checkpoint, write_hyperparams
from tests.vec_fixtures import tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SHAPES = {"mlp": (16,), "conv1d": (6, 12), "conv2d": (4, 5, 5)}


@pytest.mark.parametrize("solver", ["fixed_point", "anderson"])
@pytest.mark.parametrize("family", ["mlp", "conv1d", "conv2d"])
def test_solve_on_cuda_matches_cpu_and_counts_what_it_runs(family: str, solver: str) -> None:
    torch.manual_seed(0)
    layer = FPILayer(family, SHAPES[family], rank=4, kernel_size=3, tol=1e-4, max_iter=200, solver=solver).eval()
    scale = torch.logspace(-1, 1, 12).view(-1, *([1] * len(SHAPES[family])))
    z_in, x_emb = torch.rand(12, *SHAPES[family]) * scale, torch.randn(12, *SHAPES[family]) * scale
    with torch.no_grad():
        on_cpu = layer(z_in, x_emb)
        gpu_layer = copy.deepcopy(layer).cuda()
        with FlopCounterMode(display=False) as counter:
            on_gpu = gpu_layer(z_in.cuda(), x_emb.cuda())
            torch.cuda.synchronize()
    n = z_in.shape[0]
    assert counter.get_total_flops() == int(on_gpu.flops.sum()) + n * layer.injection_flops()
    assert bool(on_gpu.converged.all())
    # Float rounding differs between devices: a sample near tol may take one iteration more or less.
    assert (on_gpu.iterations.cpu() - on_cpu.iterations).abs().max() <= 1
    torch.testing.assert_close(on_gpu.state.cpu(), on_cpu.state, atol=1e-3, rtol=1e-3)


def _play(core, actions: np.ndarray) -> dict[str, np.ndarray]:
    core.seed([0] * core.num_envs)
    core.reset()
    finished: dict[str, list[np.ndarray]] = {"prediction": [], "compute": [], "fpi_iterations": [], "label": []}
    for step_actions in actions:
        out = core.step(step_actions)
        done = out.terminated.cpu().numpy()
        for key in finished:
            finished[key].append(out.info[key][done])
        if done.any():
            core.reset(np.flatnonzero(done))
    return {k: np.concatenate(v) for k, v in finished.items()}


def test_env_core_on_cuda_matches_cpu() -> None:
    model, dataset = tiny_model("digits")
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 4, size=(12, 64))
    cpu = _play(make_core(64, dataset=dataset, model=copy.deepcopy(model), split="val"), actions)
    gpu = _play(make_core(64, dataset=dataset, model=copy.deepcopy(model), split="val", device="cuda"), actions)
    assert np.array_equal(cpu["label"], gpu["label"])
    assert (cpu["prediction"] == gpu["prediction"]).mean() >= 0.99
    assert np.abs(cpu["fpi_iterations"] - gpu["fpi_iterations"]).max() <= 1
    np.testing.assert_allclose(cpu["compute"], gpu["compute"], rtol=0.05)


def test_pretrain_on_cuda_writes_a_checkpoint_the_cpu_loads(tmp_path) -> None:
    from dynalay_env.model import load_checkpoint
    from dynalay_env.pretrain import PretrainConfig, run_pretraining

    path, report = run_pretraining("digits", run_dir=tmp_path, device="cuda",
                                   config=PretrainConfig(epochs=3, batch_size=32), progress=False)
    assert report["full_depth_accuracy"] > 0.5
    checkpoint = load_checkpoint(path, expected_dataset="digits", device="cpu")
    assert next(checkpoint.model.parameters()).device.type == "cpu"
    assert json.loads((tmp_path / "pretrain.json").read_text())["provenance"] == checkpoint.provenance


def test_agent_trains_and_validates_on_cuda(tmp_path) -> None:
    from agents.algorithms import get_algorithm
    from agents.training import AGENT_NAME, MODEL_NAME, TrainConfig, train, val_evaluator

    config = TrainConfig(algo="ppo", env_id=ENV_ID, model=str(digits_checkpoint()), timesteps=1024, n_envs=N_ENVS,
                         device="cuda", run_dir=str(tmp_path / "run"), checkpoint_freq=512, eval_freq=512,
                         hyperparams_file=str(write_hyperparams(tmp_path / "hp.yml", dict(TINY_PPO))),
                         progress_bar=False)
    agent, run_dir = train(config)
    assert agent.device.type == "cuda" and agent.num_timesteps >= 1024
    result = val_evaluator(config, run_dir / MODEL_NAME)(agent)
    # The same policy and model validated on the CPU give the same figures.
    on_cpu = dataclasses.replace(config, device="cpu")
    cpu_agent = get_algorithm(config.algo).load(run_dir / AGENT_NAME, device="cpu")
    cpu_result = val_evaluator(on_cpu, run_dir / MODEL_NAME)(cpu_agent)
    assert result["accuracy"] == pytest.approx(cpu_result["accuracy"], abs=2e-3)
    assert result["mean_compute"] == pytest.approx(cpu_result["mean_compute"], rel=1e-3)


def test_step_synchronises_only_to_size_the_solves() -> None:
    """Under ``set_sync_debug_mode("error")``, steps with device actions synchronise with the host
    only where the solves need batch sizes (``group_sizes`` and the solver): observation, reward,
    masks and info stay on the device (info becomes numpy only when read)."""
    model, dataset = tiny_model("digits")
    core = make_core(64, dataset=dataset, model=copy.deepcopy(model).cuda(), device="cuda", mask_repeats=True,
                     compute_budget=2.0)
    core.seed(list(range(64)))
    core.reset()
    allowed = {"sizes": core.group_sizes, "solve": core.model.apply_layer}

    def permitted(fn):
        def run(*args, **kwargs):
            torch.cuda.set_sync_debug_mode("default")
            try:
                return fn(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("error")
        return run

    core.group_sizes = permitted(allowed["sizes"])
    core.model.apply_layer = permitted(allowed["solve"])
    generator = torch.Generator(device="cuda").manual_seed(0)
    try:
        for _ in range(6):
            active = ~core.done
            actions = torch.randint(0, core.num_actions, (64,), device="cuda", generator=generator)
            torch.cuda.set_sync_debug_mode("error")
            out = core.step(actions, active=active)
            torch.cuda.set_sync_debug_mode("default")
            assert out.obs.is_cuda and out.reward.is_cuda and out.info.tensors()["flops"].is_cuda
            if not bool(active.any()):
                break
    finally:
        torch.cuda.set_sync_debug_mode("default")
        del core.model.apply_layer
