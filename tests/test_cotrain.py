"""Co-training (``mode="cotrain"``): the main model learns on the agent's paths, inside the batched core
and in ``train --cotrain`` runs.

The env is non-stationary in this mode, so the determinism check and the batch-vs-single-env
equivalence tests (test_env, test_core, test_vector_env, test_sb3_vec_env) run in ``frozen`` mode
only; here reproducibility means: the same seed and actions give the same weights.

Every model handed to a cotrain core is a private copy (``copy.deepcopy``) of the cached tiny models.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

import dynalay_env  # noqa: F401  (registers the envs)
from agents.callbacks import cotrain_state_for, list_checkpoints
from agents.training import (
    COTRAIN_STATE_NAME,
    INITIAL_MODEL_NAME,
    MODEL_NAME,
    TrainConfig,
    env_options,
    train,
)
from dynalay_env.core import DynaLayCore
from dynalay_env.cotrain import CoTrainer, load_state
from dynalay_env.env import make_core
from dynalay_env.model import MainModel, load_checkpoint, weights_hash
from dynalay_env.paths import path_robust_loss
from tests.agent_fixtures import (
    CLI,
    ENV_ID,
    N_ENVS,
    REPO,
    TINY_PPO,
    cli_env,
    digits_checkpoint,
    hidden_files,
    scalar_tags,
    sigkill_when,
    train_config,
    write_hyperparams,
)
from tests.env_fixtures import check_charged_equals_executed, no_default_model_training  # noqa: F401  (autouse)
from tests.vec_fixtures import one_torch_thread, random_actions, tiny_model


def private_model(dataset: str = "digits") -> MainModel:
    """A copy of the cached tiny model that a test may train."""
    return copy.deepcopy(tiny_model(dataset)[0])


def cotrain_core(num_envs: int = 8, dataset: str = "digits", model: Any = None, **options: Any) -> DynaLayCore:
    model = private_model(dataset) if model is None else model
    options = {"mode": "cotrain", "cotrain_lr": 1e-3, "cotrain_every": 8, **options}
    return make_core(num_envs, dataset=tiny_model(dataset)[1], model=model, **options)


def play(core: DynaLayCore, steps: int, seed: int = 0, exit_prob: float = 0.3) -> list[dict[str, np.ndarray]]:
    """Random actions for ``steps`` batched steps (finished slots are reset); returns the infos."""
    rng = np.random.default_rng(seed)
    core.seed([seed + i for i in range(core.num_envs)])
    core.reset()
    infos = []
    for _ in range(steps):
        out = core.step(random_actions(rng, core.num_envs, core.num_actions, exit_prob))
        infos.append(out.info)
        done = np.flatnonzero(out.terminated.cpu().numpy())
        if done.size:
            core.reset(done)
    return infos


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_tensors(a: Any, b: Any, where: str = "") -> None:
    """Nested dicts / lists of tensors and plain values are exactly equal."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


# ---- the core ------------------------------------------------------------------------------------


def test_cotrain_changes_the_model_and_frozen_does_not() -> None:
    frozen_model = private_model()
    cotrained_model = private_model()
    before = state_of(frozen_model)
    frozen = make_core(8, dataset=tiny_model("digits")[1], model=frozen_model)
    cotrain = cotrain_core(8, model=cotrained_model)
    assert frozen.cotrainer is None and cotrain.cotrainer is not None and cotrain.mode == "cotrain"
    play(frozen, 40)
    play(cotrain, 40)
    assert_same_tensors(state_of(frozen_model), before)
    assert cotrain.cotrainer.updates >= 10
    after = state_of(cotrained_model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    for prefix in ("encoder.weight", "head_out.weight", "layers.0.down.weight", "layers.2.up.weight",
                   "layers.1.inject_state.weight"):
        assert prefix in changed, f"{prefix} did not change ({sorted(changed)})"
    assert "compute_normalizer" not in changed
    # The env steps with the model in eval mode; training mode exists only inside an update.
    assert not cotrained_model.training and not frozen_model.training


@pytest.mark.parametrize("backward", ["phantom", "implicit"])
def test_updates_backpropagate_through_the_fpi_layers(backward: str) -> None:
    """Both FPI backward passes reach every layer on the paths (synthetic: the conv1d family)."""
    model = private_model("synthetic")
    for layer in model.layers:
        layer.backward = backward
    before = state_of(model)
    core = cotrain_core(8, dataset="synthetic", model=model, cotrain_every=16)
    play(core, 12, exit_prob=0.1)
    assert core.cotrainer.updates >= 1
    assert all(np.isfinite(s.loss) and np.isfinite(s.grad_norm) and s.grad_norm > 0 for s in core.cotrainer.history)
    after = state_of(model)
    for k in range(model.num_layers):
        for name in ("down.weight", "up.weight"):
            assert not torch.equal(before[f"layers.{k}.{name}"], after[f"layers.{k}.{name}"]), (backward, k, name)


def test_normaliser_costs_and_observation_bounds_stay_fixed() -> None:
    model = private_model()
    normaliser = float(model.compute_normalizer)
    costs = model.cost_table()
    core = cotrain_core(8, model=model)
    low, high = core.observation_low.copy(), core.observation_high.copy()
    play(core, 40)
    assert core.cotrainer.updates > 0
    assert float(model.compute_normalizer) == normaliser == core.normalizer
    assert model.cost_table() == costs == core.costs
    np.testing.assert_array_equal(core.observation_low, low)
    np.testing.assert_array_equal(core.observation_high, high)
    # Every layer's map is still a contraction after the updates (norms refreshed after each step).
    for layer in model.layers:
        assert layer.lipschitz_bound() <= model.config.lipschitz * 1.001


def test_compute_accounting_stays_exact_across_updates() -> None:
    """Each step charges exactly the FLOPs that ran for the episodes (FlopCounterMode), also when
    the model moves between steps; the update's own work is not charged to any episode."""
    core = cotrain_core(6, cotrain_every=2)
    assert check_charged_equals_executed(core, steps=12, seed=3, exit_prob=0.4) > 0
    assert core.cotrainer.updates >= 3


def test_each_step_uses_exactly_m_episodes_grouped_by_path() -> None:
    model = private_model()
    x, y = tiny_model("digits")[1].as_tensors("agent_train")
    trainer = CoTrainer(model, x, y, lr=1e-3, every=4)
    paths = np.array([[1, 2, -1, -1], [1, 2, -1, -1], [-1, -1, -1, -1], [3, -1, -1, -1], [2, 2, 2, 2],
                      [1, -1, -1, -1], [1, -1, -1, -1], [3, 1, -1, -1], [-1, -1, -1, -1], [2, -1, -1, -1]])
    stats = trainer.add(np.arange(10), paths, np.ones(10, bool))
    assert [s.episodes for s in stats] == [4, 4] and trainer.pending == 2 and trainer.updates == 2
    assert [s.paths for s in stats] == [3, 3]  # {12, (), 3} and {2222, 1, 31}
    assert stats[0].mean_path_length == pytest.approx(5 / 4)
    trainer.active = False
    assert trainer.add(np.arange(4), paths[:4]) == [] and trainer.pending == 2


def test_grouped_step_equals_the_per_episode_mean() -> None:
    """One batched forward per distinct path gives the gradient of the plain mean over episodes of
    each episode's path-robust loss (every episode weighs the same, whatever its group's size)."""
    x, y = tiny_model("digits")[1].as_tensors("agent_train")
    examples = np.arange(12)
    paths = np.full((12, 4), -1)
    paths[:5, :2] = [1, 3]
    paths[5:7, :1] = 2
    paths[7, :] = [3, 2, 1, 3]
    grouped = private_model()
    reference = copy.deepcopy(grouped)
    trainer = CoTrainer(grouped, x, y, lr=1e-3, every=12)
    grads: dict[str, torch.Tensor | None] = {}
    adam_step = trainer.optimizer.step

    def record_then_step(*args: Any, **kwargs: Any) -> Any:
        grads.update({n: None if p.grad is None else p.grad.clone() for n, p in grouped.named_parameters()})
        return adam_step(*args, **kwargs)

    trainer.optimizer.step = record_then_step  # type: ignore[method-assign]
    stats = trainer.update(examples, paths)
    assert stats.paths == 4 and stats.episodes == 12 and trainer.optimizer.state_dict()["state"]

    reference.train()
    loss = sum(path_robust_loss(reference, x[i:i + 1], y[i:i + 1], [int(a) - 1 for a in paths[i] if a > 0])
               for i in examples) / len(examples)
    loss.backward()
    assert stats.loss == pytest.approx(float(loss.detach()), rel=1e-5)
    for name, p in reference.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_same_seed_same_actions_same_weights() -> None:
    a, b = cotrain_core(8), cotrain_core(8)
    play(a, 30, seed=5)
    play(b, 30, seed=5)
    assert a.cotrainer.updates == b.cotrainer.updates > 0
    assert_same_tensors(state_of(a.model), state_of(b.model))
    assert_same_tensors(a.cotrainer.optimizer.state_dict(), b.cotrainer.optimizer.state_dict())
    c = cotrain_core(8)
    play(c, 30, seed=6)
    assert weights_hash(c.model) != weights_hash(a.model)


def test_state_round_trip_continues_identically(tmp_path: Path) -> None:
    """Saved mid-run (weights, Adam moments, kept episodes) and loaded into a fresh core over the
    initial model, co-training continues exactly as if never interrupted."""
    a = cotrain_core(8, cotrain_every=5)
    play(a, 15, seed=1)
    assert a.cotrainer.pending > 0  # 5 does not divide the episodes finished so far
    path = tmp_path / "state.pt"
    a.cotrainer.save(path)
    assert hidden_files(tmp_path) == []
    b = cotrain_core(8, cotrain_every=5)
    assert weights_hash(b.model) != weights_hash(a.model)
    b.cotrainer.load(path)
    assert weights_hash(b.model) == weights_hash(a.model)
    assert_same_tensors(b.cotrainer.state_dict(), a.cotrainer.state_dict())
    episodes = [(np.arange(i, i + 7), np.tile([2, 1, -1, -1], (7, 1))) for i in range(0, 21, 7)]
    for examples, paths in episodes:
        a.cotrainer.add(examples, paths)
        b.cotrainer.add(examples, paths)
    assert_same_tensors(state_of(a.model), state_of(b.model))
    with pytest.raises(ValueError, match="cotrain_every=5, this env has cotrain_every=6"):
        cotrain_core(8, cotrain_every=6).cotrainer.load(path)


class Delegating:
    """An FPIModel that is not a torch.nn.Module (it only forwards to a MainModel)."""

    def __init__(self, model: MainModel) -> None:
        self._m = model
        self.num_layers, self.num_classes = model.num_layers, model.num_classes
        self.input_shape, self.state_shape = model.input_shape, model.state_shape

    def encode(self, x):
        return self._m.encode(x)

    def apply_layer(self, k, z, x_emb):
        return self._m.apply_layer(k, z, x_emb)

    def classify(self, z):
        return self._m.classify(z)

    def introspect(self, z):
        return self._m.introspect(z)

    def cost_table(self):
        return self._m.cost_table()


def frozen_layers() -> MainModel:
    model = private_model()
    for p in model.layers.parameters():
        p.requires_grad_(False)
    return model


@pytest.mark.parametrize("options,match", [
    ({"cotrain_lr": 0.0}, r"cotrain_lr must be a finite number > 0.*got 0\.0"),
    ({"cotrain_lr": -1e-3}, "cotrain_lr must be a finite number > 0"),
    ({"cotrain_lr": float("nan")}, "cotrain_lr must be a finite number > 0"),
    ({"cotrain_lr": "fast"}, "cotrain_lr must be a finite number > 0"),
    ({"cotrain_every": 0}, "cotrain_every must be an integer >= 1"),
    ({"cotrain_every": 2.5}, "cotrain_every must be an integer >= 1"),
    ({"split": "test"}, "mode='cotrain' learns from the agent_train split only.*split='test'"),
    ({"model": "frozen_layers"}, "needs trainable FPI layers.*requires_grad=False"),
    ({"model": "not_a_module"}, "needs a main model that is a torch.nn.Module.*got Delegating"),
    ({"mode": "frozen", "cotrain_every": None}, r"cotrain_lr only applies to mode='cotrain' \(this env has mode='frozen'\)"),
    ({"mode": "frozen"}, r"cotrain_lr and cotrain_every only apply to mode='cotrain'"),
])
def test_bad_cotrain_input_is_a_clear_error(options: dict[str, Any], match: str) -> None:
    options = dict(options)
    if options.get("model") == "frozen_layers":
        options["model"] = frozen_layers()
    elif options.get("model") == "not_a_module":
        options["model"] = Delegating(private_model())
    with pytest.raises(ValueError, match=match):
        cotrain_core(2, **options)


def test_gym_make_reaches_cotrain_and_says_non_stationary() -> None:
    env = gym.make("DynaLay-Digits-v0", model=private_model(), mode="cotrain", cotrain_lr=2e-3, cotrain_every=3)
    core = env.unwrapped.core
    assert core.cotrainer.lr == 2e-3 and core.cotrainer.every == 3
    env.reset(seed=0)
    for _ in range(12):
        _, _, terminated, _, _ = env.step(1)
        if terminated:
            env.reset()
    assert core.cotrainer.updates >= 1
    assert "non-stationary" in dynalay_env.DynaLayEnv.__doc__
    venv = gym.make_vec("DynaLay-Digits-v0", num_envs=4, model=private_model(), mode="cotrain")
    assert venv.unwrapped.core.mode == "cotrain"  # one batched core, one model


# ---- training runs -------------------------------------------------------------------------------


COTRAIN_RUN = dict(cotrain=True, agent_phase=128, model_phase=2, env_kwargs={"cotrain_every": 16, "cotrain_lr": 1e-3})


def test_alternating_run_writes_the_cotrained_model_and_logs(tmp_path: Path) -> None:
    agent, run_dir = train(train_config(tmp_path / "run", **copy.deepcopy(COTRAIN_RUN)))
    # 512 timesteps, agent phases of 128: model phases at 128, 256, 384 (none after the last).
    state = load_state(run_dir / COTRAIN_STATE_NAME)
    assert state["updates"] == 3 * 2 and state["extra"]["model_phases_done"] == 3
    initial = load_checkpoint(run_dir / INITIAL_MODEL_NAME)
    final = load_checkpoint(run_dir / MODEL_NAME)
    source = load_checkpoint(digits_checkpoint())
    assert weights_hash(initial.model) == weights_hash(source.model)
    assert weights_hash(final.model) != weights_hash(initial.model)
    assert final.extra["cotrain"]["updates"] == 6
    assert float(final.model.compute_normalizer) == float(initial.model.compute_normalizer)
    assert_same_tensors(state["model"], final.model.state_dict())
    summary = json.loads((run_dir / "train.json").read_text())
    assert summary["provenance"] == final.provenance and summary["provenance_initial"] == initial.provenance
    # The co-trained model's identity is recomputed from its new weights and matches its checkpoint.
    assert summary["model_provenance"]["id"] == final.provenance
    assert summary["model_provenance_initial"]["id"] == initial.provenance
    # Each kept agent checkpoint has its model + optimiser beside it.
    for ckpt in list_checkpoints(run_dir):
        assert cotrain_state_for(ckpt).is_file()
    assert hidden_files(run_dir) == []
    scalars = scalar_tags(run_dir)
    for tag in ("cotrain/loss", "cotrain/episode_accuracy", "cotrain/phase_loss", "cotrain/val_accuracy_after_phase",
                "dynalay/accuracy", "val/accuracy"):
        assert scalars.get(tag), f"no {tag} in tb/ ({sorted(scalars)})"
    assert sorted(step for step, _ in scalars["cotrain/loss"]) == [1, 2, 3, 4, 5, 6]
    # Evaluation envs are frozen and use the co-trained weights.
    config = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    options = env_options(config, str(run_dir / MODEL_NAME))
    assert "cotrain_lr" not in options and "mode" not in options
    core = make_core(4, **{**options, "split": "test", "sample_mode": "sequential"})
    assert core.cotrainer is None and weights_hash(core.model) == weights_hash(final.model)


def test_cotrained_runs_are_reproducible_from_their_seed(tmp_path: Path) -> None:
    runs = [train(train_config(tmp_path / name, **copy.deepcopy(COTRAIN_RUN)))[1] for name in ("a", "b")]
    models = [load_checkpoint(r / MODEL_NAME).model for r in runs]
    assert weights_hash(models[0]) == weights_hash(models[1])
    states = [load_state(r / COTRAIN_STATE_NAME) for r in runs]
    assert_same_tensors(states[0]["optimizer"], states[1]["optimizer"])
    agents = [PPO.load(r / "agent.zip") for r in runs]
    for p, q in zip(agents[0].policy.parameters(), agents[1].policy.parameters(), strict=True):
        assert torch.equal(p, q)


def test_resume_restores_model_and_optimiser(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(train_config(run_dir, **copy.deepcopy(COTRAIN_RUN)))
    # As if killed right after the checkpoint at 384 (written after the model phase at 384).
    newest = list_checkpoints(run_dir)[-1]
    newest.unlink()
    cotrain_state_for(newest).unlink()
    (run_dir / "agent.zip").unlink()
    kept = list_checkpoints(run_dir)[-1]
    assert kept.name == "agent_384_steps.zip"
    saved = load_state(cotrain_state_for(kept))
    assert saved["extra"]["model_phases_done"] == 3 and saved["updates"] == 6

    # Resumed to the checkpoint's own step count: nothing runs, so the final state is what was restored.
    train(train_config(run_dir, timesteps=384), resume=True)
    restored = load_state(run_dir / COTRAIN_STATE_NAME)
    assert_same_tensors(restored["model"], saved["model"], "model")
    assert_same_tensors(restored["optimizer"], saved["optimizer"], "optimizer")
    assert restored["optimizer"]["state"], "Adam moments are part of the checkpoint"
    assert weights_hash(load_checkpoint(run_dir / MODEL_NAME).model) != weights_hash(
        load_checkpoint(run_dir / INITIAL_MODEL_NAME).model)

    # And on to the end: the last agent phase runs against the restored model, no model phase repeats.
    agent, _ = train(train_config(run_dir, timesteps=512), resume=True)
    final = load_state(run_dir / COTRAIN_STATE_NAME)
    assert agent.num_timesteps == 512 and final["updates"] == 6 and final["extra"]["model_phases_done"] == 3
    assert_same_tensors(final["model"], saved["model"], "the model is frozen in the last agent phase")
    assert json.loads((run_dir / "train.json").read_text())["resumed_from"] == 384


def test_resume_without_the_model_state_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(train_config(run_dir, **copy.deepcopy(COTRAIN_RUN)))
    cotrain_state_for(list_checkpoints(run_dir)[-1]).unlink()
    with pytest.raises(ValueError, match=r"agent_512_steps.zip has no co-training state main_model_512_steps.pt"):
        train(train_config(run_dir), resume=True)


def test_concurrent_cotraining_learns_inside_the_agents_steps(tmp_path: Path) -> None:
    config = train_config(tmp_path / "run", cotrain=True, model_phase=0, env_kwargs={"cotrain_every": 32})
    agent, run_dir = train(config)
    state = load_state(run_dir / COTRAIN_STATE_NAME)
    assert state["updates"] >= 5 and "model_phases_done" not in state["extra"]
    for ckpt in list_checkpoints(run_dir):
        assert load_state(cotrain_state_for(ckpt))["updates"] <= state["updates"]
    assert scalar_tags(run_dir).get("cotrain/updates")


@pytest.mark.parametrize("flags,match", [
    (["--cotrain", "--cotrain-lr", "0"], "--cotrain-lr: expected a number > 0"),
    (["--cotrain", "--cotrain-every", "0"], "--cotrain-every: expected an integer >= 1"),
    (["--cotrain", "--agent-phase", "0"], "--agent-phase: expected an integer >= 1"),
    (["--cotrain", "--model-phase", "-1"], "--model-phase: expected an integer >= 0"),
    (["--cotrain-lr", "1e-3"], "only apply to co-training: add --cotrain"),
    (["--cotrain", "--env-kwargs", "mode:frozen"], "--cotrain conflicts with the env option mode: 'frozen'"),
])
def test_cli_rejects_bad_cotrain_options(tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str],
                                         match: str) -> None:
    import train_agent

    run_dir = tmp_path / "run"
    try:
        code = train_agent.main(["train", "--env", ENV_ID, "--model", str(digits_checkpoint()), "--timesteps", "128",
                                 "--run-dir", str(run_dir), "--no-progress", *flags])
    except SystemExit as exc:  # bad numbers are refused by the parser itself
        code = exc.code
    assert code == 2
    assert re.search(match, capsys.readouterr().err)
    assert not run_dir.exists(), "a rejected run must not leave a run folder behind"


def test_cli_cotrain_flags_reach_the_config(tmp_path: Path) -> None:
    import train_agent

    args = train_agent.parse_args(["train", "--cotrain", "--agent-phase", "4096", "--model-phase", "8",
                                   "--cotrain-lr", "3e-4", "--cotrain-every", "32", "--run-dir", str(tmp_path)])
    config = train_agent._train_config(args)
    assert config.cotrain and config.agent_phase == 4096 and config.model_phase == 8
    assert config.env_kwargs == {"cotrain_lr": 3e-4, "cotrain_every": 32}
    assert config.schedule() == "alternate"
    assert env_options(config, "m.pt", training=True)["mode"] == "cotrain"


# ---- the acceptance test -------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_cotrain_run_then_resume_keeps_model_and_optimiser(tmp_path: Path) -> None:
    """A CLI co-training run killed with SIGKILL resumes from its newest checkpoint with the main
    model and its optimiser exactly as checkpointed, and finishes."""
    total, phase = 2048, 512  # the kill lands at 768 at the earliest, with 1280 steps still to go
    hyperparams = write_hyperparams(tmp_path / "hp.yml", dict(TINY_PPO))
    run_dir = tmp_path / "run"
    env = cli_env(tmp_path)
    cli = [*CLI, "train"]

    def after_first_model_phase() -> bool:
        steps = [int(p.name.split("_")[1]) for p in list_checkpoints(run_dir)]
        return bool(steps) and steps[-1] > phase

    sigkill_when(cli + ["--env", ENV_ID, "--model", str(digits_checkpoint()), "--timesteps", str(total),
                        "--n-envs", str(N_ENVS), "--checkpoint-freq", "256", "--eval-freq", "2048",
                        "--hyperparams", str(hyperparams), "--no-progress", "--run-dir", str(run_dir),
                        "--cotrain", "--agent-phase", str(phase), "--model-phase", "4",
                        "--cotrain-every", "16", "--cotrain-lr", "1e-3"],
                 env, tmp_path / "first.log", ready=after_first_model_phase)
    assert not (run_dir / "agent.zip").exists()
    newest = list_checkpoints(run_dir)[-1]
    killed_at = int(newest.name.split("_")[1])
    saved = load_state(cotrain_state_for(newest))
    assert saved["updates"] >= 4 and saved["optimizer"]["state"]

    # Resume to the checkpoint's own step count: the model and optimiser come back exactly.
    done = subprocess.run(cli + ["--run-dir", str(run_dir), "--resume", "--no-progress", "--timesteps",
                                 str(killed_at)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    restored = load_state(run_dir / COTRAIN_STATE_NAME)
    assert_same_tensors(restored["model"], saved["model"], "model")
    assert_same_tensors(restored["optimizer"], saved["optimizer"], "optimizer")
    assert restored["updates"] == saved["updates"]

    # Then to the end.
    done = subprocess.run(cli + ["--run-dir", str(run_dir), "--resume", "--no-progress", "--timesteps", str(total)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    final = load_state(run_dir / COTRAIN_STATE_NAME)
    assert final["extra"]["model_phases_done"] == (total - 1) // phase
    assert final["updates"] == 4 * final["extra"]["model_phases_done"]
    assert PPO.load(run_dir / "agent.zip").num_timesteps >= total
    assert weights_hash(load_checkpoint(run_dir / MODEL_NAME).model) != weights_hash(
        load_checkpoint(run_dir / INITIAL_MODEL_NAME).model)
    assert hidden_files(run_dir) == [] and not list(run_dir.rglob("*.tmp"))
