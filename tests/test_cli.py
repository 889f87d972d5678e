"""``train_agent.py``: argument parsing, ``--config``, clear errors (exit status 2 and a message on
stderr), and train -> resume -> evaluate -> validate end to end in-process on the tiny digits model."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest
import yaml

import train_agent
from tests.agent_fixtures import (
    ENV_ID,
    ROLLOUT,
    TINY_PPO,
    copy_run,
    digits_checkpoint,
    hidden_files,
    write_hyperparams,
)
from tests.env_fixtures import no_default_model_training  # noqa: F401  (autouse)
from train_agent import build_parser, main, parse_args, parse_env_kwargs

SUBCOMMANDS = ("pretrain", "train", "evaluate", "sweep", "demo", "export", "profile", "list-datasets")


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def run_main(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- parsing -------------------------------------------------------------------------------------


def test_every_subcommand_is_registered_and_listed():
    assert set(subparsers()) == set(SUBCOMMANDS)
    top = build_parser().format_help()
    for name in SUBCOMMANDS:
        assert name in top


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_mentions_every_option(command, capsys):
    sub = subparsers()[command]
    text = sub.format_help()
    for action in sub._actions:
        for option in action.option_strings:
            assert option in text, f"`{command} --help` does not mention {option}"
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings} has no help text"
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip()


def test_parse_env_kwargs_reads_yaml_values():
    assert parse_env_kwargs(["lambda_compute:0.2", "mask_repeats:true", "observation_groups:[hidden,head]"]) == {
        "lambda_compute": 0.2, "mask_repeats": True, "observation_groups": ["hidden", "head"]}
    assert parse_env_kwargs(["compute_budget:", "reward:paper", "reward_kwargs:{wrong_reward: -2}"]) == {
        "compute_budget": None, "reward": "paper", "reward_kwargs": {"wrong_reward": -2}}
    assert parse_env_kwargs(None) == {} and parse_env_kwargs([]) == {}


@pytest.mark.parametrize("item", ["lambda_compute", ":0.2", "lambda_compute=0.2"])
def test_parse_env_kwargs_rejects_items_without_key_and_colon(item):
    with pytest.raises(ValueError, match="key:value"):
        parse_env_kwargs([item])


def test_bad_env_kwargs_exits_2_before_creating_the_run(tmp_path, capsys):
    code, _, err = run_main(capsys, ["train", "--env", ENV_ID, "--env-kwargs", "lambda_compute",
                                     "--run-dir", str(tmp_path / "run")])
    assert code == 2 and "key:value" in err and "'lambda_compute'" in err
    assert not (tmp_path / "run").exists()


def test_config_file_supplies_defaults_and_flags_override(tmp_path):
    config = tmp_path / "train.yml"
    config.write_text(yaml.safe_dump({"algo": "a2c", "timesteps": 1234, "seed": 3, "n_envs": 4,
                                      "env_kwargs": ["lambda_compute:0.3"], "no_progress": True}))
    args = parse_args(["train", "--config", str(config), "--seed", "5"])
    assert (args.algo, args.timesteps, args.seed, args.n_envs, args.no_progress) == ("a2c", 1234, 5, 4, True)
    assert args.env_kwargs == ["lambda_compute:0.3"]
    args = parse_args(["train", "--config", str(config), "--algo", "ppo", "--env-kwargs", "max_steps:2"])
    assert args.algo == "ppo" and args.env_kwargs == ["max_steps:2"] and args.seed == 3


def test_config_file_env_kwargs_as_a_mapping(tmp_path):
    config = tmp_path / "train.yml"
    config.write_text(yaml.safe_dump({"env_kwargs": {"lambda_compute": 0.2, "mask_repeats": True}}))
    args = parse_args(["train", "--config", str(config)])
    assert train_agent._train_config(args).env_kwargs == {"lambda_compute": 0.2, "mask_repeats": True}


def test_config_file_with_an_unknown_key_errors(tmp_path, capsys):
    config = tmp_path / "train.yml"
    config.write_text(yaml.safe_dump({"algo": "ppo", "learning_rat": 0.1}))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['learning_rat'\]"):
        parse_args(["train", "--config", str(config)])
    code, _, err = run_main(capsys, ["train", "--config", str(config)])
    assert code == 2 and "learning_rat" in err and "timesteps" in err  # lists the valid ones


@pytest.mark.parametrize("content", [None, "- just\n- a list\n"])
def test_config_file_missing_or_not_a_mapping_errors(tmp_path, capsys, content):
    config = tmp_path / "train.yml"
    if content is not None:
        config.write_text(content)
    code, _, err = run_main(capsys, ["train", "--config", str(config)])
    assert code == 2 and str(config) in err


# ---- clear errors --------------------------------------------------------------------------------


def test_unknown_algo_exits_2_listing_the_valid_names(tmp_path, capsys):
    algorithms = pytest.importorskip("agents.algorithms", reason="agents/algorithms.py is not there yet")
    code, _, err = run_main(capsys, ["train", "--algo", "sac", "--env", ENV_ID, "--model", str(digits_checkpoint()),
                                     "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert code == 2 and "'sac'" in err
    for name in algorithms.ALGORITHMS:
        assert name in err
    assert not (tmp_path / "run" / "config.json").exists()


def test_unknown_framework_exits_2_listing_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--framework", "tf", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "'tf'" in err and "sb3" in err and "rllib" in err


def test_unknown_framework_from_a_config_file_exits_2_too(tmp_path, capsys):
    config = tmp_path / "train.yml"
    config.write_text("framework: jax\n")
    code, _, err = run_main(capsys, ["train", "--config", str(config), "--model", str(digits_checkpoint()),
                                     "--run-dir", str(tmp_path / "run")])
    assert code == 2 and "'jax'" in err and "sb3, rllib" in err
    assert not (tmp_path / "run").exists()


def test_rllib_without_ray_exits_2_naming_the_extra(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed (import raises)
    code, _, err = run_main(capsys, ["train", "--framework", "rllib", "--algo", "ppo", "--env", ENV_ID, "--model",
                                     str(digits_checkpoint()), "--run-dir", str(tmp_path / "run")])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert 'pip install -e ".[rllib]"' in err
    assert not (tmp_path / "run").exists()


def test_rllib_refuses_cotraining_before_creating_the_run(tmp_path, capsys, monkeypatch):
    import agents.training

    monkeypatch.setattr(agents.training, "require_ray", lambda: None)  # Ray or not, the same refusal
    code, _, err = run_main(capsys, ["train", "--framework", "rllib", "--cotrain", "--env", ENV_ID, "--model",
                                     str(digits_checkpoint()), "--run-dir", str(tmp_path / "run")])
    assert code == 2 and "does not co-train" in err
    assert not (tmp_path / "run").exists()


def test_an_algorithm_rllib_does_not_offer_exits_2_listing_those_it_does(tmp_path, capsys):
    code, _, err = run_main(capsys, ["train", "--framework", "rllib", "--algo", "a2c", "--env", ENV_ID, "--model",
                                     str(digits_checkpoint()), "--run-dir", str(tmp_path / "run")])
    assert code == 2 and "'a2c'" in err and "valid: ppo, dqn" in err
    assert not (tmp_path / "run").exists()


def test_unknown_env_exits_2_listing_the_valid_ids(tmp_path, capsys):
    code, _, err = run_main(capsys, ["train", "--env", "DynaLay-Nope-v0", "--run-dir", str(tmp_path / "run")])
    assert code == 2 and "DynaLay-Nope-v0" in err and ENV_ID in err and "DynaLay-MNIST1D-v0" in err


def test_incompatible_algo_and_env_kwargs_exit_2_saying_why(tmp_path, capsys):
    pytest.importorskip("agents.algorithms", reason="agents/algorithms.py is not there yet")
    code, _, err = run_main(capsys, ["train", "--algo", "ppo_lstm", "--env", ENV_ID, "--model",
                                     str(digits_checkpoint()), "--env-kwargs", "mask_repeats:true",
                                     "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    assert "ppo_lstm" in err and "mask_repeats" in err and "maskable_ppo" in err
    assert not (tmp_path / "run" / "config.json").exists()


def test_resume_needs_a_run_dir(capsys):
    code, _, err = run_main(capsys, ["train", "--resume"])
    assert code == 2 and "--run-dir" in err


def test_evaluate_needs_an_existing_run(tmp_path, capsys):
    code, _, err = run_main(capsys, ["evaluate", "--run-dir", str(tmp_path / "missing")])
    assert code == 2 and "missing" in err and "config.json" in err
    code, _, err = run_main(capsys, ["evaluate"])
    assert code == 2 and "--run-dir" in err


def test_validate_without_a_report_says_to_evaluate_first(tmp_path, capsys):
    run_dir = copy_run(tmp_path / "run")
    code, _, err = run_main(capsys, ["evaluate", "--run-dir", str(run_dir), "--validate"])
    assert code == 2 and "report.json" in err and "evaluate --run-dir" in err


def test_list_datasets(capsys):
    code, out, _ = run_main(capsys, ["list-datasets"])
    assert code == 0 and {"digits", "mnist1d", "synthetic"} <= set(out.split())


# ---- end to end (in-process) ---------------------------------------------------------------------


def test_train_resume_evaluate_validate(tmp_path, capsys):
    run_dir = tmp_path / "run"
    hyperparams = write_hyperparams(tmp_path / "hp.yml", dict(TINY_PPO))
    train_args = ["train", "--env", ENV_ID, "--model", str(digits_checkpoint()), "--n-envs", "8",
                  "--hyperparams", str(hyperparams), "--env-kwargs", "lambda_compute:0.2", "max_steps:3",
                  "--checkpoint-freq", "128", "--eval-freq", "100000", "--no-progress", "--run-dir", str(run_dir)]
    code, out, err = run_main(capsys, train_args + ["--timesteps", "256"])
    assert code == 0, err
    assert "256 timesteps" in out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env_kwargs"] == {"lambda_compute": 0.2, "max_steps": 3}
    assert config["env_id"] == ENV_ID and config["hyperparams_file"] == str(hyperparams)

    code, out, err = run_main(capsys, ["train", "--run-dir", str(run_dir), "--resume", "--timesteps", "384",
                                       "--no-progress"])
    assert code == 0, err
    summary = json.loads((run_dir / "train.json").read_text())
    assert summary["resumed_from"] == 256 and 384 <= summary["timesteps_done"] <= 384 + ROLLOUT

    code, out, err = run_main(capsys, ["evaluate", "--run-dir", str(run_dir), "--n-envs", "128", "--n-boot", "50",
                                       "--no-figures"])
    assert code == 0, err
    report = json.loads((run_dir / "report.json").read_text())
    assert report["env_id"] == ENV_ID and report["dataset"] == "digits" and report["algo"] == "ppo"
    assert report["split"] == "test" and report["n_examples"] == 359 and report["reward"]["lambda_compute"] == 0.2
    assert report["env_kwargs"] == {"lambda_compute": 0.2, "max_steps": 3}
    assert max(len(p) for p in report["examples"]["path"]) <= 3  # the run's max_steps reached the evaluation
    from dynalay_env.model import load_checkpoint

    assert report["provenance"] == summary["provenance"] == load_checkpoint(digits_checkpoint()).provenance
    assert "difficulty correlation" in out

    code, out, err = run_main(capsys, ["evaluate", "--run-dir", str(run_dir), "--validate"])
    assert code == 0, err
    assert "VALID" in out and "MISMATCH" not in out

    report["examples"]["prediction"][0] = (report["examples"]["prediction"][0] + 1) % 10
    (run_dir / "report.json").write_text(json.dumps(report))
    code, out, err = run_main(capsys, ["evaluate", "--run-dir", str(run_dir), "--validate"])
    assert code == 2 and "MISMATCH" in out and "does not replay" in err
    assert hidden_files(run_dir) == []


@pytest.mark.slow
def test_demo_with_a_pretrained_model_runs_end_to_end(tmp_path, capsys):
    from dynalay_env.pretrain import CHECKPOINT_NAME

    run_dir = tmp_path / "demo"
    (run_dir / "pretrain").mkdir(parents=True)
    shutil.copyfile(digits_checkpoint(), run_dir / "pretrain" / CHECKPOINT_NAME)
    code, out, err = run_main(capsys, ["demo", "--dataset", "digits", "--timesteps", "256", "--n-boot", "50",
                                       "--run-dir", str(run_dir)])
    assert code == 0, err
    assert "[1/3] main model: using" in out and "[3/3]" in out
    report = json.loads((run_dir / "agent" / "report.json").read_text())
    assert report["dataset"] == "digits" and report["env_id"] == ENV_ID
    for name in ("accuracy_vs_compute.png", "action_histogram.png", "compute_vs_difficulty.png"):
        assert (run_dir / "agent" / name).is_file()


# ---- bad values on the command line: one line on stderr, exit 2, nothing created -----------------


def exits_2(capsys, argv: list[str]) -> str:
    """Run ``main(argv)`` as a user meets it; assert exit status 2 and a one-line message (no
    traceback); return that line."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2, f"{argv}: exit status {code}, stderr {err!r}"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("argv", "expected"), [
    (["train", "--timesteps", "-5"], "--timesteps: expected an integer >= 1, got '-5'"),
    (["train", "--timesteps", "abc"], "--timesteps: expected an integer >= 1, got 'abc'"),
    (["train", "--n-envs", "0"], "--n-envs: expected an integer >= 1"),
    (["train", "--n-envs", "2.5"], "--n-envs: expected an integer >= 1"),
    (["train", "--checkpoint-freq", "0"], "--checkpoint-freq: expected an integer >= 1"),
    (["train", "--eval-freq", "-100"], "--eval-freq: expected an integer >= 1"),
    (["train", "--cotrain", "--cotrain-lr", "0"], "--cotrain-lr: expected a number > 0"),
    (["pretrain", "--epochs", "0"], "--epochs: expected an integer >= 1"),
    (["pretrain", "--lr", "-3e-3"], "--lr: expected a number > 0, got '-3e-3'"),
    (["pretrain", "--lr", "nan"], "--lr: expected a number > 0"),
    (["pretrain", "--batch-size", "many"], "--batch-size: expected an integer >= 1"),
    (["sweep", "--n-trials", "0"], "--n-trials: expected an integer >= 1"),
    (["sweep", "--workers", "-2"], "--workers: expected an integer >= 1"),
    (["sweep", "--timesteps", "1e-3"], "--timesteps: expected an integer >= 1"),
    (["evaluate", "--n-boot", "0"], "--n-boot: expected an integer >= 1"),
    (["demo", "--seed", "-1"], "--seed: expected an integer >= 0"),
    (["train", "--threads", "0"], "--threads: expected an integer >= 1"),
])
def test_bad_numbers_exit_2_naming_the_option(tmp_path, capsys, argv, expected):
    err = exits_2(capsys, argv + ["--run-dir", str(tmp_path / "run")])
    assert expected in err
    assert not (tmp_path / "run").exists()


def test_integers_may_be_written_in_scientific_notation():
    assert parse_args(["train", "--timesteps", "2e5"]).timesteps == 200_000


def test_bad_numbers_from_a_config_file_are_refused_too(tmp_path, capsys):
    config = tmp_path / "train.yml"
    config.write_text(yaml.safe_dump({"timesteps": -5}))
    err = exits_2(capsys, ["train", "--config", str(config)])
    assert "--timesteps" in err and "expected an integer >= 1" in err and str(config) in err


@pytest.mark.parametrize(("option", "value"), [("--wrong-reward", "-1.5,0"), ("--wrong-reward", "-2"),
                                               ("--correct-reward", "-.5,1"), ("--lambda-compute", "0.01,1,log")])
def test_range_options_take_negative_numbers_as_written(option, value):
    args = parse_args(["sweep", option, value])
    assert getattr(args, option[2:].replace("-", "_")) == value
    config = train_agent._sweep_config(args).validate()
    low = float(value.split(",")[0])
    assert getattr(config, option[2:].replace("-", "_")).low == low


def test_a_negative_range_reaches_the_options_own_check(tmp_path, capsys):
    """`--mu-redundant -0.1,0.2` is read as a value (not as an unknown option) and refused by the
    sweep's own range check."""
    err = exits_2(capsys, ["sweep", "--mu-redundant", "-0.1,0.2", "--run-dir", str(tmp_path / "s")])
    assert "mu_redundant: must be >= 0" in err


def test_negative_values_are_joined_only_for_options_that_take_a_value():
    parser = build_parser()
    argv = ["sweep", "--wrong-reward", "-1.5,0", "--env-kwargs", "max_steps:2", "--", "--seed", "-1"]
    assert train_agent.attach_negative_values(parser, argv) == [
        "sweep", "--wrong-reward=-1.5,0", "--env-kwargs", "max_steps:2", "--", "--seed", "-1"]
    assert train_agent.attach_negative_values(parser, ["train", "--no-progress", "-h"]) == [
        "train", "--no-progress", "-h"]


def test_hv_reference_help_matches_the_default():
    from agents.sweep import default_hv_reference

    class Record:
        def __init__(self, path, accuracy, mean_compute):
            self.params, self.accuracy, self.mean_compute = {"path": path}, accuracy, mean_compute

    curves = {"fixed_paths": [Record([], 0.7, 0.01), Record([1, 2, 3], 0.93, 1.0), Record([3, 3], 0.92, 1.4)]}
    assert default_hv_reference(curves, [(0.9, 0.3)]) == (0.7, pytest.approx(1.1 * 1.4))
    text = " ".join(subparsers()["sweep"].format_help().split())
    assert "always-EXIT accuracy and 1.1 x the largest compute" in text


@pytest.mark.parametrize(("item", "expected"), [
    ("lambda_compute:abc", "--env-kwargs lambda_compute: expected a finite number, got 'abc'"),
    ("lambda_compute:.nan", "--env-kwargs lambda_compute: expected a finite number"),
    ("lambda_compute:-0.5", "lambda_compute and mu_redundant must be >= 0"),
    ("wrong_reward:[1]", "--env-kwargs wrong_reward: expected a finite number"),
    ("shaping_gamma:2", "shaping_gamma must be in [0, 1]"),
    ("shaping:potential", "unknown shaping 'potential'"),
    ("reward:bogus", "unknown reward 'bogus'"),
    ("reward_kwargs:{correct_reward: high}", "reward_kwargs.correct_reward: expected a finite number"),
    ("reward_kwargs:{gamma: 0.9}", "'gamma' is ambiguous"),
    ("mask_repeats:maybe", "--env-kwargs mask_repeats: expected true or false, got 'maybe'"),
    ("max_steps:1.5", "--env-kwargs max_steps: expected an integer, got 1.5"),
    ("max_steps:0", "max_steps must be an integer >= 1"),
    ("observation_groups:hidden", "--env-kwargs observation_groups: expected a list of strings"),
    ("observation_groups:[hidden,nope]", "unknown observation group 'nope'"),
    ("compute_budget:-1", "compute_budget must be > 0"),
    ("decision_flops:-1", "decision_flops must be a finite number >= 0"),
    ("decision_flops:many", "--env-kwargs decision_flops: expected a finite number"),
    ("split:training", "unknown split 'training'"),
    ("sample_mode:shuffled", "unknown sample_mode 'shuffled'"),
    ("learning_rate:0.1", "unknown env option 'learning_rate'; valid options:"),
])
def test_bad_env_kwargs_exit_2_naming_the_option(tmp_path, capsys, item, expected):
    err = exits_2(capsys, ["train", "--env", ENV_ID, "--model", str(digits_checkpoint()), "--env-kwargs", item,
                           "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert expected in err
    assert not (tmp_path / "run").exists()


def test_bad_env_kwargs_of_a_sweep_exit_2_before_any_trial(tmp_path, capsys):
    err = exits_2(capsys, ["sweep", "--env", ENV_ID, "--model", str(digits_checkpoint()),
                           "--env-kwargs", "mask_repeats:3", "--run-dir", str(tmp_path / "s")])
    assert "--env-kwargs mask_repeats: expected true or false, got 3" in err
    err = exits_2(capsys, ["sweep", "--env", ENV_ID, "--model", str(digits_checkpoint()),
                           "--env-kwargs", "max_steps:0", "--run-dir", str(tmp_path / "s")])
    assert "max_steps must be an integer >= 1" in err
    assert not (tmp_path / "s" / "study.db").exists()


# ---- options that can be given two ways ----------------------------------------------------------


def test_a_model_given_through_env_kwargs_is_the_model_the_run_uses(tmp_path, capsys):
    """Not replaced by the cached default (whose pre-training the autouse fixture forbids)."""
    from dynalay_env.model import load_checkpoint

    run_dir = tmp_path / "run"
    hyperparams = write_hyperparams(tmp_path / "hp.yml", dict(TINY_PPO))
    code, _, err = run_main(capsys, ["train", "--env", ENV_ID, "--env-kwargs", f"model:{digits_checkpoint()}",
                                     "lambda_compute:0.2", "--hyperparams", str(hyperparams), "--n-envs", "8",
                                     "--timesteps", "128", "--eval-freq", "100000", "--no-progress",
                                     "--run-dir", str(run_dir)])
    assert code == 0, err
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == str(digits_checkpoint()) and config["env_kwargs"] == {"lambda_compute": 0.2}
    expected = load_checkpoint(digits_checkpoint()).provenance
    assert load_checkpoint(run_dir / "main_model.pt").provenance == expected
    assert json.loads((run_dir / "train.json").read_text())["provenance"] == expected


@pytest.mark.parametrize("how", ["--model", "--env-kwargs"])
def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, capsys, how):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint\n")
    model = ["--model", str(garbage)] if how == "--model" else ["--env-kwargs", f"model:{garbage}"]
    err = exits_2(capsys, ["train", "--env", ENV_ID, *model, "--run-dir", str(tmp_path / "run")])
    assert str(garbage) in err and "is not a readable DynaLay checkpoint" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("how", ["--model", "--env-kwargs"])
def test_a_checkpoint_of_another_dataset_is_refused(tmp_path, capsys, how):
    model = ["--model", str(digits_checkpoint())] if how == "--model" else [
        "--env-kwargs", f"model:{digits_checkpoint()}"]
    err = exits_2(capsys, ["train", "--env", "DynaLay-Synthetic-v0", *model, "--run-dir", str(tmp_path / "run")])
    assert "was trained on dataset 'digits', but 'synthetic' was requested" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("argv", "expected"), [
    (["--model", "a.pt", "--env-kwargs", "model:b.pt"],
     "model is given twice, as --model a.pt and as --env-kwargs model:b.pt; give it once, as --model"),
    (["--data-root", "/data", "--env-kwargs", "data_root:/elsewhere"], "give it once, as --data-root"),
    (["--env-kwargs", "device:cuda"], "device is given twice, as --device cpu (the default) and as --env-kwargs "
                                      "device:cuda; give it once, as --device"),
    (["--env", "DynaLay-v0", "--dataset", "digits", "--env-kwargs", "dataset:synthetic"],
     "give it once, as --dataset"),
    (["--env", "DynaLay-MNIST1D-v0", "--dataset", "digits"], "use --env DynaLay-Digits-v0"),
    (["--env", "DynaLay-MNIST1D-v0", "--env-kwargs", "dataset:synthetic"], "use --env DynaLay-Synthetic-v0"),
    (["--env-kwargs", "model:"], "--env-kwargs model: expected a non-empty string"),
])
def test_an_option_given_two_ways_that_disagree_is_refused(tmp_path, capsys, argv, expected):
    err = exits_2(capsys, ["train", *argv, "--run-dir", str(tmp_path / "run")])
    assert expected in err
    assert not (tmp_path / "run").exists()


def test_options_given_through_env_kwargs_alone_are_honoured():
    args = parse_args(["train", "--env", "DynaLay-v0", "--env-kwargs", "dataset:digits", "data_root:/data",
                       "device:cpu", "model:m.pt", "max_steps:2"])
    config = train_agent._train_config(args)
    config.check_options()
    assert (config.dataset, config.data_root, config.device, config.model) == ("digits", "/data", "cpu", "m.pt")
    assert config.env_kwargs == {"max_steps": 2} and config.dataset_name() == "digits"
    sweep = train_agent._sweep_config(parse_args(["sweep", "--env-kwargs", "model:m.pt", "mask_repeats:true"]))
    sweep.validate()
    assert sweep.model == "m.pt" and sweep.env_kwargs == {"mask_repeats": True}


@pytest.mark.parametrize(("argv", "expected"), [
    ([], {"epochs": 30, "batch_size": 64, "min_steps": 960, "min_steps_per_epoch": 31}),
    (["--epochs", "2"], {"epochs": 2, "batch_size": 64, "min_steps": 0, "min_steps_per_epoch": 31}),
    (["--batch-size", "32"], {"epochs": 30, "batch_size": 32, "min_steps": 960, "min_steps_per_epoch": 0}),
])
def test_pretrain_epochs_and_batch_size_given_switch_off_the_recipe_minimums(monkeypatch, tmp_path, argv, expected):
    """``--epochs`` / ``--batch-size`` are kept as given: no extra epochs or smaller batches."""
    seen = {}

    def fake_run_pretraining(dataset, run_dir, config, **kwargs):
        seen["config"] = config
        return run_dir / "main_model.pt", {}

    monkeypatch.setattr(train_agent, "run_pretraining", fake_run_pretraining)
    monkeypatch.setattr(train_agent, "print_pretrain_summary", lambda report: None)
    main(["pretrain", "--dataset", "mnist5k", "--run-dir", str(tmp_path), "--quiet", *argv])
    assert {k: getattr(seen["config"], k) for k in expected} == expected
