"""``agents.training`` and ``agents.callbacks``: the run folder, resume, checkpoints, TensorBoard and
validation logs; and the acceptance test: SIGKILL a CLI training run, resume it, finish it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.save_util import load_from_pkl

from agents.callbacks import AtomicCheckpointCallback, EpisodeMetricsCallback, list_checkpoints, replay_buffer_for
from agents.training import CONFIG_NAME, TrainConfig, load_run, prepare_run_dir, train
from dynalay_env.datasets import load_dataset
from dynalay_env.model import load_checkpoint, weights_hash
from tests.agent_fixtures import (
    CLI,
    ENV_ID,
    N_ENVS,
    REPO,
    ROLLOUT,
    RUN_CHECKPOINT_FREQ,
    RUN_EVAL_FREQ,
    RUN_TIMESTEPS,
    TINY_PPO,
    cli_env,
    copy_run,
    digits_checkpoint,
    fresh_run,
    hidden_files,
    scalar_tags,
    sigkill_when,
    train_config,
    trained_ppo_run,
    write_hyperparams,
)
from tests.env_fixtures import no_default_model_training  # noqa: F401  (autouse)


def checkpoint_steps(run_dir: Path) -> list[int]:
    return [int(p.name.split("_")[1]) for p in list_checkpoints(run_dir)]


# ---- the run folder ------------------------------------------------------------------------------


def test_train_writes_a_complete_run_folder():
    run_dir = trained_ppo_run()
    config = TrainConfig.from_dict(json.loads((run_dir / CONFIG_NAME).read_text()))
    assert (config.algo, config.env_id, config.timesteps, config.n_envs) == ("ppo", ENV_ID, RUN_TIMESTEPS, N_ENVS)
    assert config.hyperparams["n_steps"] == TINY_PPO["n_steps"]

    source = load_checkpoint(digits_checkpoint())
    copied = load_checkpoint(run_dir / "main_model.pt")
    assert weights_hash(copied.model) == weights_hash(source.model) and copied.provenance == source.provenance

    agent = PPO.load(run_dir / "agent.zip")
    assert agent.num_timesteps == RUN_TIMESTEPS

    # Checkpoints every 128 steps, the newest two kept, nothing half-written anywhere.
    assert checkpoint_steps(run_dir) == [RUN_TIMESTEPS - RUN_CHECKPOINT_FREQ, RUN_TIMESTEPS]
    assert PPO.load(list_checkpoints(run_dir)[-1]).num_timesteps == RUN_TIMESTEPS
    assert hidden_files(run_dir) == []

    history = json.loads((run_dir / "val_history.json").read_text())
    n_val = load_dataset("digits").num_examples("val")
    assert [h["timesteps"] for h in history] == list(range(RUN_EVAL_FREQ, RUN_TIMESTEPS + 1, RUN_EVAL_FREQ))
    for h in history:
        # Every val example counted once: the accuracy is a whole number of examples out of the split.
        assert h["accuracy"] * n_val == pytest.approx(round(h["accuracy"] * n_val), abs=1e-6)
        assert h["mean_compute"] > 0 and 0 <= h["mean_steps"] <= 4

    summary = json.loads((run_dir / "train.json").read_text())
    assert summary["timesteps_done"] == RUN_TIMESTEPS and summary["resumed_from"] is None
    assert summary["provenance"] == source.provenance == summary["model_provenance"]["id"]
    # The FLOPs per decision the reward charged: the policy's measured cost, in train.json only.
    assert summary["decision_flops"] == load_run(run_dir)[1].decision_flops() > 0
    assert "decision_flops" not in json.loads((run_dir / CONFIG_NAME).read_text())


def test_tensorboard_logs_hold_dynalay_and_val_scalars():
    scalars = scalar_tags(trained_ppo_run())
    for tag in ("dynalay/accuracy", "dynalay/compute", "dynalay/steps", "dynalay/action_exit",
                "dynalay/action_layer1", "dynalay/action_layer3", "val/accuracy", "val/compute"):
        assert scalars.get(tag), f"no {tag} scalar in tb/ (found {sorted(scalars)})"
    history = json.loads((trained_ppo_run() / "val_history.json").read_text())
    logged = dict(scalars["val/accuracy"])
    for h in history:
        if h["timesteps"] in logged:
            assert logged[h["timesteps"]] == pytest.approx(h["accuracy"], abs=1e-6)


def test_load_run_gives_config_agent_and_model():
    config, agent, model_path = load_run(trained_ppo_run())
    assert config.algo == "ppo" and agent.num_timesteps == RUN_TIMESTEPS
    assert model_path == trained_ppo_run() / "main_model.pt"


def test_load_run_reads_a_config_written_by_an_older_version(tmp_path):
    """Older versions copied the measured decision cost into config.json: such runs still load."""
    run_dir = copy_run(tmp_path / "run")
    saved = json.loads((run_dir / CONFIG_NAME).read_text())
    (run_dir / CONFIG_NAME).write_text(json.dumps({**saved, "decision_flops": 1234.0}))
    config, agent, _ = load_run(run_dir)
    assert config.algo == "ppo" and agent.num_timesteps == RUN_TIMESTEPS
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({**saved, "decision_flop": 1.0})


def test_load_run_of_an_unfinished_run_says_resume(tmp_path):
    run_dir = copy_run(tmp_path / "run")
    (run_dir / "agent.zip").unlink()
    with pytest.raises(FileNotFoundError, match="resume"):
        load_run(run_dir)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_run(tmp_path)


# ---- starting and resuming -----------------------------------------------------------------------


def test_second_train_in_the_same_folder_needs_resume():
    run_dir = trained_ppo_run()
    before = (run_dir / CONFIG_NAME).read_bytes()
    with pytest.raises(ValueError, match="--resume"):
        train(train_config(run_dir))
    assert (run_dir / CONFIG_NAME).read_bytes() == before


def test_resume_of_a_missing_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(train_config(tmp_path / "nowhere"), resume=True)
    assert not (tmp_path / "nowhere").exists()


def test_resume_of_a_folder_without_config_errors(tmp_path):
    (tmp_path / "something.txt").write_text("not a run")
    with pytest.raises(ValueError, match="not a DynaLay training run"):
        train(train_config(tmp_path), resume=True)


@pytest.mark.parametrize("content", ["{not json", json.dumps({"algo": "ppo", "colour": "blue"})])
def test_resume_of_a_foreign_config_errors(tmp_path, content):
    (tmp_path / CONFIG_NAME).write_text(content)
    with pytest.raises(ValueError, match="unreadable or foreign"):
        prepare_run_dir(train_config(tmp_path), resume=True)


def test_resume_continues_the_step_count(tmp_path):
    run_dir = fresh_run(tmp_path / "run")
    target = 1000  # not a whole number of rollouts: PPO overshoots by less than one rollout
    agent, _ = train(TrainConfig(run_dir=str(run_dir), timesteps=target, progress_bar=False), resume=True)
    assert target <= agent.num_timesteps <= target + ROLLOUT
    assert PPO.load(run_dir / "agent.zip").num_timesteps == agent.num_timesteps
    summary = json.loads((run_dir / "train.json").read_text())
    assert summary["resumed_from"] == RUN_TIMESTEPS and summary["timesteps_done"] == agent.num_timesteps
    config = json.loads((run_dir / CONFIG_NAME).read_text())
    assert config["hyperparams"]["n_steps"] == TINY_PPO["n_steps"]  # the run's own settings survive resume
    assert checkpoint_steps(run_dir)[-1] == agent.num_timesteps
    history = [h["timesteps"] for h in json.loads((run_dir / "val_history.json").read_text())]
    assert history == list(range(RUN_EVAL_FREQ, agent.num_timesteps + 1, RUN_EVAL_FREQ))
    assert max(step for step, _ in scalar_tags(run_dir)["dynalay/accuracy"]) > RUN_TIMESTEPS
    assert hidden_files(run_dir) == []


def test_resume_of_a_finished_run_without_more_steps_trains_nothing(tmp_path):
    run_dir = fresh_run(tmp_path / "run")
    agent, _ = train(TrainConfig(run_dir=str(run_dir), progress_bar=False), resume=True)
    assert agent.num_timesteps == RUN_TIMESTEPS
    assert checkpoint_steps(run_dir) == [RUN_TIMESTEPS - RUN_CHECKPOINT_FREQ, RUN_TIMESTEPS]


def test_resume_of_a_moved_run_logs_into_its_own_folder(tmp_path):
    original = fresh_run(tmp_path / "original")
    moved = tmp_path / "moved"
    original.rename(moved)
    train(TrainConfig(run_dir=str(moved), timesteps=768, progress_bar=False), resume=True)
    recreated = original.exists()
    assert max(step for step, _ in scalar_tags(moved)["dynalay/accuracy"]) > RUN_TIMESTEPS
    assert not recreated, f"the resumed run wrote into {original}"


def test_resume_from_an_older_checkpoint_keeps_val_history_monotonic(tmp_path):
    # A kill between the val evaluation at 512 and the checkpoint at 512 (the eval callback runs first).
    run_dir = fresh_run(tmp_path / "run")
    (run_dir / "checkpoints" / f"agent_{RUN_TIMESTEPS}_steps.zip").unlink()
    (run_dir / "agent.zip").unlink()
    train(TrainConfig(run_dir=str(run_dir), timesteps=1024, progress_bar=False), resume=True)
    steps = [h["timesteps"] for h in json.loads((run_dir / "val_history.json").read_text())]
    assert steps == sorted(set(steps)), steps


def test_resume_removes_temporaries_left_by_a_killed_save(tmp_path):
    run_dir = fresh_run(tmp_path / "run")
    stale = [run_dir / "checkpoints" / ".agent_640_steps.k2j4h1.zip", run_dir / ".val_history.json.x8a.tmp",
             run_dir / ".main_model.pt.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    train(TrainConfig(run_dir=str(run_dir), timesteps=768, progress_bar=False), resume=True)
    assert hidden_files(run_dir) == []


# ---- off-policy: the replay buffer travels with the checkpoint ------------------------------------


@pytest.fixture(scope="module")
def dqn_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("dqn") / "run"
    agent, _ = train(train_config(run_dir, algo="dqn", timesteps=256, eval_freq=10**9))
    return run_dir, agent


def test_dqn_checkpoints_carry_their_replay_buffer(dqn_run):
    run_dir, _ = dqn_run
    for checkpoint in list_checkpoints(run_dir):
        assert replay_buffer_for(checkpoint).is_file()
    assert len(list((run_dir / "checkpoints").glob("replay_buffer_*.pkl"))) == 2  # pruned with their agents
    assert hidden_files(run_dir) == []


def test_dqn_resume_restores_the_replay_buffer(tmp_path):
    run_dir = tmp_path / "run"
    train(train_config(run_dir, algo="dqn", timesteps=256, eval_freq=10**9))
    newest = list_checkpoints(run_dir)[-1]
    saved = load_from_pkl(replay_buffer_for(newest))
    saved_steps = DQN.load(newest).num_timesteps
    assert saved.size() > 0

    # Resumed at the checkpoint's own step count: nothing to learn, the buffer is the checkpoint's.
    agent, _ = train(TrainConfig(run_dir=str(run_dir), timesteps=256, progress_bar=False), resume=True)
    assert isinstance(agent.model, DQN) and agent.replay_buffer.size() == saved.size()
    np.testing.assert_array_equal(agent.replay_buffer.observations[:saved.size()], saved.observations[:saved.size()])

    # Resumed further: the restored transitions are kept and new ones appended.
    agent, _ = train(TrainConfig(run_dir=str(run_dir), timesteps=512, progress_bar=False), resume=True)
    new_vector_steps = (agent.num_timesteps - saved_steps) // N_ENVS
    assert agent.replay_buffer.size() == saved.size() + new_vector_steps
    np.testing.assert_array_equal(agent.replay_buffer.observations[:saved.size()], saved.observations[:saved.size()])


def test_dqn_checkpoint_buffer_holds_every_counted_transition(dqn_run):
    run_dir, _ = dqn_run
    newest = list_checkpoints(run_dir)[-1]
    buffer = load_from_pkl(replay_buffer_for(newest))
    assert buffer.size() * N_ENVS == DQN.load(newest).num_timesteps


# ---- callbacks -----------------------------------------------------------------------------------


class FakeAgent:
    """What AtomicCheckpointCallback needs of an SB3 model."""

    def __init__(self, fail: bool = False) -> None:
        self.num_timesteps = 0
        self.replay_buffer = object()
        self.fail = fail

    def save(self, path) -> None:
        Path(path).write_bytes(b"half an agent")
        if self.fail:
            raise OSError("disk full")
        Path(path).write_bytes(b"agent")

    def save_replay_buffer(self, path) -> None:
        Path(path).write_bytes(b"buffer")


def test_atomic_checkpoint_keeps_the_newest_and_prunes_buffers(tmp_path):
    callback = AtomicCheckpointCallback(tmp_path, save_freq=100, keep=2)
    callback.model = FakeAgent()
    for steps in (90, 100, 110, 1000):  # numeric, not lexicographic, order
        callback.num_timesteps = steps
        callback.save()
    assert checkpoint_steps(tmp_path) == [110, 1000]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "agent_1000_steps.zip", "agent_110_steps.zip", "replay_buffer_1000_steps.pkl", "replay_buffer_110_steps.pkl"]
    assert (tmp_path / "checkpoints" / "agent_1000_steps.zip").read_bytes() == b"agent"
    assert hidden_files(tmp_path) == []


def test_atomic_checkpoint_failure_leaves_nothing_half_written(tmp_path):
    callback = AtomicCheckpointCallback(tmp_path, save_freq=100, keep=2)
    callback.model = FakeAgent(fail=True)
    callback.num_timesteps = 100
    with pytest.raises(OSError, match="disk full"):
        callback.save()
    assert list_checkpoints(tmp_path) == [] and hidden_files(tmp_path) == []


def test_atomic_checkpoint_frequency_counts_from_a_resumed_step(tmp_path):
    agent = FakeAgent()
    agent.num_timesteps = 250
    callback = AtomicCheckpointCallback(tmp_path, save_freq=100, keep=10)
    callback.model = agent
    callback.on_training_start({}, {})
    for _ in range(40):
        agent.num_timesteps += 8
        callback.on_step()
        callback.on_rollout_end()  # checkpoints are written at rollout ends (after transitions are stored)
    assert checkpoint_steps(tmp_path) == [306, 402, 506]  # first rollout end at or past 300, 400, 500


def test_episode_metrics_count_chosen_actions_not_forced_exits():
    callback = EpisodeMetricsCallback(num_actions=4, max_steps=4)
    callback.model = SimpleNamespace(logger=Logger(folder=None, output_formats=[]))
    callback.locals = {
        "infos": [{"correct": True, "compute": 0.5, "step": 2, "path": [1, 2]},
                  {"step": 1, "compute": 0.1},                                           # still running
                  {"correct": False, "compute": 1.5, "step": 4, "path": [1, 2, 3, 3]}],  # forced exit
        "dones": np.array([True, False, True])}
    callback._on_step()
    callback._on_rollout_end()
    logged = callback.logger.name_to_value
    assert logged["dynalay/accuracy"] == pytest.approx(0.5)
    assert logged["dynalay/compute"] == pytest.approx(1.0)
    assert logged["dynalay/steps"] == pytest.approx(3.0)
    # actions: EXIT once (episode 1), layer1 x2, layer2 x2, layer3 x2 -> 7 actions
    assert logged["dynalay/action_exit"] == pytest.approx(1 / 7)
    assert logged["dynalay/action_layer1"] == pytest.approx(2 / 7)
    assert logged["dynalay/action_layer3"] == pytest.approx(2 / 7)


# ---- the acceptance test -------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_finishes_the_run(tmp_path):
    total = 2048  # the kill lands at the first checkpoint (256): 1792 steps, seconds, still to go
    hyperparams = write_hyperparams(tmp_path / "hp.yml", dict(TINY_PPO))
    run_dir = tmp_path / "run"
    env = cli_env(tmp_path)
    cli = [*CLI, "train"]
    sigkill_when(cli + ["--env", ENV_ID, "--model", str(digits_checkpoint()), "--timesteps", str(total),
                        "--n-envs", str(N_ENVS), "--checkpoint-freq", "256", "--eval-freq", "2048",
                        "--hyperparams", str(hyperparams), "--no-progress", "--run-dir", str(run_dir)],
                 env, tmp_path / "first.log", ready=lambda: bool(list_checkpoints(run_dir)))
    killed_at = checkpoint_steps(run_dir)[-1]
    assert killed_at < total and not (run_dir / "agent.zip").exists()

    done = subprocess.run(cli + ["--run-dir", str(run_dir), "--resume", "--no-progress"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr

    agent = PPO.load(run_dir / "agent.zip")
    assert total <= agent.num_timesteps <= total + ROLLOUT
    summary = json.loads((run_dir / "train.json").read_text())
    assert summary["resumed_from"] >= killed_at and summary["timesteps_done"] == agent.num_timesteps
    for path in run_dir.rglob("*.json"):
        json.loads(path.read_text())
    assert json.loads((run_dir / CONFIG_NAME).read_text())["timesteps"] == total
    assert hidden_files(run_dir) == [], "temporary files left in the run folder"
    assert not list(run_dir.rglob("*.tmp"))
    assert checkpoint_steps(run_dir)[-1] == agent.num_timesteps
