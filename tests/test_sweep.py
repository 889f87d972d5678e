"""The reward-shaping sweep (agents/sweep.py, ``train_agent.py sweep``).

Fast tests check the search space, the errors, the hypervolume, the surplus rule and the worker loop
with a stand-in objective. The slow ones run the real command on digits with a tiny PPO: two local
workers on one SQLite study, a worker killed mid-trial, and two workers on a real PostgreSQL server
that asks for a password (given by ``PGPASSWORD`` to one, by ``~/.pgpass`` to the other).
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from agents.reports import baseline_points
from agents.sweep import (
    STORAGE_ENV,
    SearchRange,
    SweepConfig,
    claim_slot,
    hypervolume,
    open_storage,
    open_study,
    quiet_optuna,
    run_worker,
    suggest,
)
from tests.agent_fixtures import (
    CLI,
    ENV_ID,
    N_ENVS,
    REPO,
    TINY_PPO,
    cli_env,
    digits_checkpoint,
    sigkill_when,
    write_hyperparams,
)
from tests.postgres_server import PostgresServer, postgres_server

quiet_optuna()


# ---- search space and bad input --------------------------------------------------------------------


def test_search_range_forms():
    assert SearchRange.parse("x", "0.01,1") == SearchRange(0.01, 1.0)
    assert SearchRange.parse("x", "0.01, 1, log") == SearchRange(0.01, 1.0, log=True)
    assert SearchRange.parse("x", [0.0, 0.2]) == SearchRange(0.0, 0.2)
    fixed = SearchRange.parse("x", "0.3")
    assert fixed.fixed and fixed.low == 0.3
    assert SearchRange.parse("x", 0.3) == fixed
    assert fixed.suggest(None, "x") == 0.3  # a fixed value is not a dimension of the study


def test_a_validated_config_survives_validation_and_the_trip_to_a_worker():
    config = SweepConfig(reward_kinds="paper", correct_reward="1", lambda_compute="0.01,1,log",
                         learning_rate="3e-4").validate()
    assert config.validate().to_dict() == config.to_dict()
    again = SweepConfig.from_dict(config.to_dict()).validate()  # what a spawned worker rebuilds
    assert again == config and again.correct_reward.fixed and again.lambda_compute.log


@pytest.mark.parametrize(("text", "problem"), [
    ("", "empty range"), ("0.1,", "empty range"), (",", "empty range"), ("0.1,0.1", "empty range"),
    ("1,0.1", "inverted range"), ("0,1,log", "LOW > 0"), ("a,b", "must be numbers"), ("0,1,lin", "must be 'log'"),
    ("0,inf", "finite")])
def test_bad_ranges_name_the_problem(text, problem):
    with pytest.raises(ValueError, match="lambda_compute") as info:
        SearchRange.parse("lambda_compute", text)
    assert problem in str(info.value)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"reward_kinds": "paper,ponder"}, "unknown reward kind 'ponder'; valid kinds: paper, blockdrop, logprob"),
    ({"reward_kinds": ""}, "at least one"),
    ({"algos": "ppo,sac"}, "unknown algorithm 'sac'"),
    ({"lambda_compute": "-0.1,0.5"}, "lambda_compute: must be >= 0"),
    ({"wrong_reward": "0,-1"}, "wrong_reward: inverted range"),
    ({"mu_redundant": "0.1,0.1"}, "mu_redundant: empty range"),
    ({"learning_rate": "0,1e-3"}, "learning_rate: must be > 0"),
    ({"sampler": "cmaes"}, "unknown sampler 'cmaes'; valid samplers: tpe, nsga2, random"),
    ({"n_trials": 0}, "n_trials must be an integer >= 1"),
    ({"heartbeat_interval": 5, "grace_period": 5}, "grace_period"),
    ({"env_kwargs": {"lambda_compute": 0.1}}, "env_kwargs may not set"),
    ({"env_id": "DynaLay-Nope-v0"}, "unknown env id"),
])
def test_bad_sweep_options_are_refused(overrides, message):
    with pytest.raises(ValueError) as info:
        SweepConfig(**overrides).validate()
    assert message in str(info.value)


def test_unreachable_storage_is_a_clear_error_without_the_password(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = SweepConfig(storage=f"postgresql+psycopg2://sweeper:s3cret@127.0.0.1:{port}/study",
                         run_dir=str(tmp_path)).validate()
    with pytest.raises(ValueError, match="cannot open the study storage") as info:
        open_storage(config)
    assert "s3cret" not in str(info.value) and f"127.0.0.1:{port}" in str(info.value)
    for url in ("not a url", "nosuchdb://host/db", f"sqlite:///{tmp_path}/missing/dir/study.db"):
        with pytest.raises(ValueError, match="cannot open the study storage"):
            open_storage(SweepConfig(storage=url, run_dir=str(tmp_path)).validate())


def test_only_the_parameters_a_reward_reads_are_searched():
    config = SweepConfig(algos="ppo,a2c", learning_rate="1e-4,1e-3,log").validate()
    choice = suggest(optuna.trial.FixedTrial({"algo": "a2c", "reward": "logprob", "lambda_compute": 0.05,
                                              "learning_rate": 3e-4}), config)
    assert (choice.algo, choice.reward, choice.reward_params, choice.hyperparams) == (
        "a2c", "logprob", {"lambda_compute": 0.05}, {"learning_rate": 3e-4})
    paper = suggest(optuna.trial.FixedTrial({"reward": "paper", "lambda_compute": 0.1, "mu_redundant": 0.0,
                                             "correct_reward": 1.0, "wrong_reward": -1.0, "algo": "ppo",
                                             "learning_rate": 1e-4}), config)
    assert set(paper.reward_params) == {"lambda_compute", "mu_redundant", "correct_reward", "wrong_reward"}
    fixed = SweepConfig(reward_kinds="paper", correct_reward="1", mu_redundant="0.05").validate()
    trial = optuna.create_study(directions=["maximize", "minimize"]).ask()
    drawn = suggest(trial, fixed)
    assert drawn.reward_params["correct_reward"] == 1.0 and drawn.reward_params["mu_redundant"] == 0.05
    assert set(trial.params) == {"lambda_compute", "wrong_reward"}  # fixed values are not searched


def test_hypervolume_matches_the_hand_computed_area():
    # Against (accuracy 0.7, compute 1.0): (0.9, 0.5) dominates 0.2 x 0.5; (0.8, 0.2) adds 0.1 x 0.3.
    assert hypervolume([(0.9, 0.5), (0.8, 0.2)], (0.7, 1.0)) == pytest.approx(0.13)
    # A dominated point, a point below the reference accuracy and one beyond its compute add nothing.
    assert hypervolume([(0.9, 0.5), (0.8, 0.2), (0.85, 0.6), (0.6, 0.1), (0.95, 1.2)], (0.7, 1.0)) == \
        pytest.approx(0.13)
    assert hypervolume([], (0.7, 1.0)) == 0.0


# ---- study bookkeeping -------------------------------------------------------------------------------


def _config(tmp_path: Path, **overrides) -> SweepConfig:
    return SweepConfig(run_dir=str(tmp_path / "sweep"), env_id=ENV_ID, heartbeat_interval=1, grace_period=2,
                       **overrides).validate()


def test_trials_beyond_the_total_are_surplus(tmp_path):
    study = open_study(_config(tmp_path, n_trials=2), open_storage(_config(tmp_path, n_trials=2)), "prov")
    first, second, third = study.ask(), study.ask(), study.ask()
    claim_slot(first, 2)
    claim_slot(second, 2)
    with pytest.raises(optuna.TrialPruned, match="surplus"):
        claim_slot(third, 2)
    assert study.get_trials()[2].user_attrs["surplus"] is True
    study.tell(third, state=optuna.trial.TrialState.PRUNED)  # what Study.optimize makes of it
    study.tell(second, state=optuna.trial.TrialState.FAIL)  # a failed trial frees its place
    fourth = study.ask()
    claim_slot(fourth, 2)


def test_joining_a_study_with_other_settings_is_refused(tmp_path):
    config = _config(tmp_path, timesteps=1000)
    storage = open_storage(config)
    open_study(config, storage, "prov-a")
    open_study(_config(tmp_path, timesteps=1000, workers=3, n_trials=40), storage, "prov-a")  # local choices
    with pytest.raises(ValueError, match="timesteps: study has 1000, this command 2000"):
        open_study(_config(tmp_path, timesteps=2000), storage, "prov-a")
    with pytest.raises(ValueError, match="main model prov-a"):
        open_study(config, storage, "prov-b")


def test_worker_completes_resumes_and_extends_a_study(tmp_path):
    for total in (3, 3, 5):  # run, re-run (nothing to do), extend
        config = _config(tmp_path, n_trials=total)

        def stand_in(trial: optuna.trial.Trial, total: int = total) -> tuple[float, float]:
            claim_slot(trial, total)
            x = trial.suggest_float("lambda_compute", 0.01, 1.0, log=True)
            return 1.0 - x, 1.0 / x

        open_study(config, open_storage(config), "prov")
        counts = run_worker(config, Path("unused.pt"), "prov", objective=stand_in)
        assert counts["complete"] == total and counts["total"] == total and counts["fail"] == 0


def test_ctrl_c_fails_the_trial_and_queues_its_retry(tmp_path):
    config = _config(tmp_path, n_trials=2)
    open_study(config, open_storage(config), "prov")

    def interrupted(trial: optuna.trial.Trial) -> tuple[float, float]:
        claim_slot(trial, 2)
        trial.suggest_float("lambda_compute", 0.01, 1.0, log=True)
        raise KeyboardInterrupt

    runner = type("Runner", (), {"current": 0, "__call__": lambda self, trial: interrupted(trial)})()
    with pytest.raises(KeyboardInterrupt):
        run_worker(config, Path("unused.pt"), "prov", objective=runner)
    study = _load(config.storage_url())
    failed, retry = study.get_trials()
    assert failed.state == optuna.trial.TrialState.FAIL
    assert retry.state == optuna.trial.TrialState.WAITING and retry.params == failed.params
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == failed.number


def test_joining_workers_compare_hyperparameter_files_by_content(tmp_path):
    first, second = tmp_path / "a.yml", tmp_path / "b.yml"
    first.write_text("x: 1\n")
    second.write_text("x: 1\n")
    assert _config(tmp_path, hyperparams_file=str(first)).identity() == \
        _config(tmp_path, hyperparams_file=str(second)).identity()
    second.write_text("x: 2\n")
    assert _config(tmp_path, hyperparams_file=str(first)).identity() != \
        _config(tmp_path, hyperparams_file=str(second)).identity()


def test_figure_and_table_handle_ties_and_rewards_without_lambda(tmp_path):
    from agents.plots import plot_sweep as plot_report
    from agents.reports import render_sweep as render_markdown

    def trial(number, kind, params, values):
        return {"number": number, "state": "COMPLETE", "pareto": True, "values": values,
                "choice": {"algo": "ppo", "reward": kind, "reward_params": params, "hyperparams": {}}}

    trials = [trial(0, "blockdrop", {"wrong_reward": -1.0}, [0.9, 0.1]),
              trial(1, "paper", {"lambda_compute": 0.5, "mu_redundant": 0.0, "correct_reward": 1.0,
                                 "wrong_reward": -1.0}, [0.9, 0.1]),  # the same point as trial 0
              trial(2, "logprob", {"lambda_compute": 0.05}, [0.95, 0.6])]
    point = {"accuracy": 0.8, "mean_compute": 0.3, "params": {"path": []}}
    versus = {"difference": 0.01, "ci95": [-0.01, 0.03]}
    report = {"study_name": "s", "dataset": "digits", "storage": "sqlite://", "study_wall_seconds": 1.0,
              "mean_trial_seconds": 1.0, "counts": {"complete": 3, "fail": 0, "surplus": 0}, "trials": trials,
              "pareto": [{"number": t["number"], **t["choice"], "val_accuracy": t["values"][0],
                          "val_mean_compute": t["values"][1], "test_accuracy": 0.9, "test_mean_compute": 0.1,
                          "test_vs_confidence": versus} for t in trials],
              "hypervolume": {split: {"reference_point": {"accuracy": 0.7, "mean_compute": 2.0}, "agent_front": 0.1,
                                      "confidence_threshold_front": 0.1, "agent_points": "x"}
                              for split in ("val", "test")},
              "baselines": {split: {**{name: [point] for name in ("fixed_paths", "random", "oracle", "prefix_oracle")},
                                    **{name: {"mean_compute": [0.1, 0.5], "accuracy": [0.8, 0.9]}
                                       for name in ("confidence", "entropy", "margin", "stable_prediction")}}
                            for split in ("val", "test")}}
    plot_report(report, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    table = render_markdown(report)
    assert "ppo blockdrop(wrong_reward=-1)" in table and "ppo logprob(lambda_compute=0.05)" in table
    assert "prefix oracle" in table


# ---- the real command (slow) -----------------------------------------------------------------------------


def _sweep_cli(run_dir: Path, hyperparams: Path, *extra: str) -> list[str]:
    return [*CLI, "sweep", "--env", ENV_ID,
            "--model", str(digits_checkpoint()), "--run-dir", str(run_dir), "--hyperparams", str(hyperparams),
            "--n-envs", str(N_ENVS), "--n-boot", "50", "--heartbeat-interval", "1", "--grace-period", "3", *extra]


def _load(storage_url: str, name: str = "reward-shaping") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage_url)


def _check_complete_study(study: optuna.Study, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == n_trials
    run_dirs = [t.user_attrs["run_dir"] for t in complete]
    assert len(set(run_dirs)) == n_trials, "a trial ran twice"
    assert all(Path(d, "agent.zip").is_file() for d in run_dirs)
    others = [t for t in study.get_trials() if t.state != optuna.trial.TrialState.COMPLETE]
    assert all(t.user_attrs.get("surplus") or t.state == optuna.trial.TrialState.FAIL for t in others)
    return complete


def _check_report(run_dir: Path, study: optuna.Study, n_trials: int) -> dict:
    report = json.loads((run_dir / "sweep.json").read_text())
    assert report["complete"] and report["counts"]["complete"] == n_trials
    values = {t.number: tuple(t.values) for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    dominated = {n for n, (a, c) in values.items()
                 if any(a2 >= a and c2 <= c and (a2, c2) != (a, c) for a2, c2 in values.values())}
    assert {p["number"] for p in report["pareto"]} == set(values) - dominated
    for p in report["pareto"]:
        assert 0.0 <= p["test_accuracy"] <= 1.0 and p["test_mean_compute"] >= 0.0
        assert p["test_vs_confidence"]["ci95"][0] <= p["test_vs_confidence"]["difference"]
    for split in ("val", "test"):
        hv = report["hypervolume"][split]
        ref = (hv["reference_point"]["accuracy"], hv["reference_point"]["mean_compute"])
        curves = report["baselines"][split]
        assert set(curves) == {"fixed_paths", "confidence", "entropy", "margin", "stable_prediction", "random",
                               "oracle", "prefix_oracle"}
        always_exit = next(b for b in curves["fixed_paths"] if b["params"]["path"] == [])
        assert ref[0] == always_exit["accuracy"]
        threshold = [(a, c) for c, a in baseline_points(curves["confidence"])]
        assert len(threshold) == curves["confidence"]["n_thresholds"] > 20  # every distinct threshold
        assert hv["confidence_threshold_front"] == pytest.approx(hypervolume(threshold, ref))
        agents = ([tuple(values) for values in values.values()] if split == "val"
                  else [(p["test_accuracy"], p["test_mean_compute"]) for p in report["pareto"]])
        assert hv["agent_front"] == pytest.approx(hypervolume(agents, ref))
        assert all(c < ref[1] for _, c in agents + threshold)
    assert (run_dir / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Pareto-optimal trials" in (run_dir / "sweep.md").read_text()
    assert report["model_provenance"]["id"] == report["main_model_provenance"]
    assert f"Main model `{report['main_model_provenance']}`" in (run_dir / "sweep.md").read_text()
    return report


@pytest.mark.slow
def test_two_local_workers_share_one_study_then_a_rerun_extends_it(tmp_path):
    hyperparams = write_hyperparams(tmp_path / "hp.yml", dict(TINY_PPO))
    run_dir = tmp_path / "sweep"
    done = subprocess.run(_sweep_cli(run_dir, hyperparams, "--n-trials", "4", "--workers", "2",
                                     "--timesteps", "2048"),
                          cwd=REPO, env=cli_env(tmp_path), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    url = f"sqlite:///{run_dir / 'study.db'}"
    complete = _check_complete_study(_load(url), 4)
    assert len({t.user_attrs["worker"] for t in complete}) == 2, "both workers should have run trials"
    _check_report(run_dir, _load(url), 4)
    first_values = {t.number: t.values for t in complete}

    again = subprocess.run(_sweep_cli(run_dir, hyperparams, "--n-trials", "5", "--timesteps", "2048"),
                           cwd=REPO, env=cli_env(tmp_path), capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    complete = _check_complete_study(_load(url), 5)
    assert {t.number: t.values for t in complete if t.number in first_values} == first_values
    _check_report(run_dir, _load(url), 5)


@pytest.mark.slow
def test_a_worker_killed_mid_trial_leaves_it_failed_and_a_restart_finishes_the_study(tmp_path):
    hyperparams = write_hyperparams(tmp_path / "hp.yml", dict(TINY_PPO))
    run_dir = tmp_path / "sweep"
    url = f"sqlite:///{run_dir / 'study.db'}"
    # Checkpoints every timesteps / 4 = 1024 steps: the kill lands after the first, with 3072 steps
    # (seconds of training) still to go, ample for a poll every 20 ms.
    cli = _sweep_cli(run_dir, hyperparams, "--n-trials", "2", "--timesteps", "4096")
    sigkill_when(cli, cli_env(tmp_path), tmp_path / "first.log", timeout=240,
                 ready=lambda: bool(list(run_dir.glob("trials/*/trial_*/checkpoints/agent_*_steps.zip"))))
    running = _load(url).get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert len(running) == 1, "the killed worker's trial should still look running"
    killed = running[0].number

    done = subprocess.run(cli, cwd=REPO, env=cli_env(tmp_path), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    study = _load(url)
    _check_complete_study(study, 2)
    assert study.get_trials()[killed].state == optuna.trial.TrialState.FAIL
    retries = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.COMPLETE
    assert retries[0].params == study.get_trials()[killed].params
    assert retries[0].user_attrs["resumed"] is True, "the retry should resume the killed trial's checkpoints"
    _check_report(run_dir, study, 2)


# ---- several machines: a real PostgreSQL server (slow) ---------------------------------------------------


#: The test server's password; the workers get it from the environment, never from a command line.
PG_PASSWORD = "dynalay-test-pw"


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL server that asks for :data:`PG_PASSWORD`."""
    with postgres_server(password=PG_PASSWORD) as server:
        yield server


@pytest.mark.slow
def test_two_machines_share_a_postgresql_study_with_the_password_from_the_environment(tmp_path, postgres):
    hyperparams = write_hyperparams(tmp_path / "hp.yml", dict(TINY_PPO))
    artifacts = tmp_path / "shared_artifacts"  # what a shared folder is to several machines
    machines = [tmp_path / "machine_a", tmp_path / "machine_b"]
    home = tmp_path / "home"  # machine B's ~/.pgpass (libpq ignores one that others can read)
    home.mkdir()
    (home / ".pgpass").write_text(f"*:{postgres.port}:*:postgres:{PG_PASSWORD}\n")
    (home / ".pgpass").chmod(0o600)
    base = {k: v for k, v in cli_env(tmp_path).items() if k not in ("PGPASSWORD", "PGSERVICE", STORAGE_ENV)}
    # Machine A: a password-free --storage and PGPASSWORD; machine B: the URL in DYNALAY_STORAGE
    # (no --storage; the bare postgresql:// scheme) and the password in ~/.pgpass.
    setups = [(["--storage", postgres.url()], {**base, "HOME": str(tmp_path), "PGPASSWORD": PG_PASSWORD}),
              ([], {**base, "HOME": str(home), STORAGE_ENV: postgres.url(driver="postgresql")})]
    procs = [subprocess.Popen(_sweep_cli(run_dir, hyperparams, "--n-trials", "4", "--timesteps", "2048", *storage,
                                         "--study-name", "shared", "--artifact-dir", str(artifacts)),
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for run_dir, (storage, env) in zip(machines, setups, strict=True)]
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
    assert f"(from {STORAGE_ENV})" in outputs[1] and not any("carries a password" in out for out in outputs)
    study = _load(postgres.url(PG_PASSWORD), "shared")
    complete = _check_complete_study(study, 4)
    ran_on = {Path(t.user_attrs["run_dir"]).parents[2] for t in complete}
    assert ran_on == set(machines), "both workers should have completed trials of the shared study"
    for run_dir in machines:  # each machine reports the whole study, Pareto agents from the shared store
        _check_report(run_dir, study, 4)
