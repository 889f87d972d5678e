"""``python -m benchmarks introspection``: ``--quick`` end to end on a tiny digits model,
pre-registration and resumption (the full study's figures are in benchmarks/results/, not checked
here)."""

from __future__ import annotations

import importlib
import json

import pytest

from tests.agent_fixtures import digits_checkpoint


def load_study():
    return importlib.import_module("benchmarks.introspection")


def test_the_quick_study_runs_end_to_end_chooses_primaries_on_val_and_resumes(tmp_path):
    study = load_study()
    argv = ["--run-dir", str(tmp_path), "--quick", "--tasks", "digits", "--model", f"digits={digits_checkpoint()}",
            "--jobs", "1", "--n-boot", "50"]
    assert study.main(argv) == 0
    report = json.loads((tmp_path / "introspection.json").read_text())
    task = report["tasks"]["digits"]
    assert {r["policy"] for r in task["runs"]} == {s.name for s in study.study_plan(quick=True)}
    for family in ("supervised", "rl"):
        runs = [r for r in task["runs"] if r["family"] == family]
        primary = task["families"][family]["primary"]
        # Pre-registered on val: the family's run with the largest val margin, whatever test says.
        assert primary["val_vs_confidence_hull"] == max(r["val"]["vs_confidence_hull"] for r in runs)
        corrected = primary["vs_confidence_hull_bonferroni"]
        assert corrected["level"] == pytest.approx(1 - 0.05 / 2)  # one task x two learned families
        # The family front is the union of its seeds' fronts, so it dominates each of them.
        per_seed = task["families"][family]["hypervolume_test_per_seed"].values()
        assert task["families"][family]["hypervolume_test"] >= max(per_seed) - 1e-12
    for run in task["runs"]:  # the policy's own decisions are counted
        assert run["test"]["mean_compute"] > run["test"]["mean_env_compute"]
        assert run["test"]["vs_confidence_hull"]["curve"] == "confidence"
    assert task["history"]["with"]["mean"] is not None and task["history"]["without"]["mean"] is not None
    assert "prefix_oracle" in task and task["path_oracle"]["kind"] == "path"
    assert (tmp_path / "introspection.png").stat().st_size > 0
    assert "Does introspection pay?" in (tmp_path / "introspection.md").read_text()
    # The study folder is recorded by its role, not by this machine's path.
    assert str(tmp_path) not in (tmp_path / "introspection.md").read_text()
    assert "--run-dir $STUDY_DIR" in report["command"]

    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("digits/runs/*/study_eval.json")}
    assert len(stamps) == len(task["runs"])
    assert study.main(argv) == 0  # resumes: nothing is trained or played again
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("digits/runs/*/study_eval.json")} == stamps
    again = json.loads((tmp_path / "introspection.json").read_text())
    assert len(again["invocations"]) == 2  # a study split into invocations reports each one and their sum
    assert again["study_wall_seconds"] == pytest.approx(sum(i["wall_seconds"] for i in again["invocations"]))
    # ... but never reuses a run trained for another budget (it would be compared with the wrong curves).
    with pytest.raises(RuntimeError, match="use a fresh --run-dir"):
        study.main(argv + ["--timesteps", "999"])


def test_bad_study_arguments_name_the_valid_choices(tmp_path, capsys):
    study = load_study()
    with pytest.raises(SystemExit):
        study.main(["--run-dir", str(tmp_path), "--quick", "--policies", "nope"])
    assert "the plan has" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main(["--run-dir", str(tmp_path), "--quick", "--tasks", "digits", "--model", "mnist1d=x.pt"])
    assert "TASK one of the studied tasks" in capsys.readouterr().err


def test_the_long_run_keeps_the_rollout_size_and_a_run_started_with_other_envs_is_refused(tmp_path):
    study = load_study()
    plan = {spec.name: spec for spec in study.study_plan()}
    env_id = study.TASK_ENVS["mnist1d"]
    import yaml

    sizes = {}
    for name in ("ppo-l0.1", "ppo-long-l0.1"):
        folder = tmp_path / name
        folder.mkdir()
        hp = yaml.safe_load(study.write_hyperparams(plan[name], env_id, folder).read_text())[env_id]
        sizes[name] = (hp["n_envs"], hp["n_steps"])
    assert sizes["ppo-l0.1"] == (study.BATCHED_ENVS, 4096 // study.BATCHED_ENVS)
    assert sizes["ppo-long-l0.1"] == (study.LONG_PPO_ENVS, 4096 // study.LONG_PPO_ENVS)

    job = study.Job("mnist1d", plan["ppo-long-l0.1"], 0, str(tmp_path / "run"), "model.pt", "hp", "id")
    study.check_resumable(job, {"n_envs": study.LONG_PPO_ENVS})
    with pytest.raises(RuntimeError, match="started with 64 envs, not 256"):
        study.check_resumable(job, {"n_envs": 64})
    # Longest first: the long run, then DQN, then the PPO runs, the supervised learners last.
    jobs = [job._replace(spec=plan[name]) for name in ("value_exit", "ppo-l0.1", "dqn-l0.1", "ppo-long-l0.1")]
    assert [j.spec.name for j in sorted(jobs, key=lambda j: -study.expected_cost(j))] == [
        "ppo-long-l0.1", "dqn-l0.1", "ppo-l0.1", "value_exit"]


def test_the_experts_task_adds_the_router_comparisons_to_the_correction():
    study = load_study()
    assert study.study_comparisons(["mnist1d"]) == 2
    assert study.study_comparisons(["mnist5k", "mnist5k_noisy_labels", "mnist5k_corrupted"]) == 6
    # Each learned family is also compared with router_confidence on the experts task.
    assert study.study_comparisons(["mnist5k", "mnist5k_experts"]) == 6
    assert set(study.MNIST5K_TASKS) <= set(study.TASK_ENVS)
    assert study.study_comparisons(["mnist5k_experts", "mnist5k_experts_router"]) == 8


def test_the_router_task_adds_the_router_group_to_every_policy():
    study = load_study()
    plan = study.study_plan()
    assert study.task_plan(plan, "mnist5k_experts") == plan
    routed = study.task_plan(plan, "mnist5k_experts_router")
    assert [s.name for s in routed] == [s.name for s in plan]
    for spec, original in zip(routed, plan, strict=True):
        groups = [kw for kw in spec.env_kwargs if kw.startswith("observation_groups:")]
        assert len(groups) == 1 and groups[0].endswith(",router]")
        # the rest of the spec, and its own groups (history or not), are kept
        assert [kw for kw in spec.env_kwargs if not kw.startswith("observation_groups:")] == \
            [kw for kw in original.env_kwargs if not kw.startswith("observation_groups:")]
        own = [kw for kw in original.env_kwargs if kw.startswith("observation_groups:")]
        if own:
            assert groups[0] == own[0][:-1] + ",router]"
    assert "mnist5k_experts_router" not in study.DEFAULT_MNIST5K_TASKS


def run_row(algo: str, seed: int, margin: float) -> dict:
    return {"algo": algo, "seed": seed, "test": {"vs_confidence_hull": {"difference": margin}}}


def test_seed_rank_agreement_is_kendalls_tau_of_the_seeds_rankings():
    study = load_study()
    same = [run_row(a, s, m + 0.01 * s) for s in (0, 1, 2) for a, m in (("ppo", 0.03), ("dqn", -0.02), ("bc", 0.0))]
    agreement = study.seed_rank_agreement(same)
    assert [p["seeds"] for p in agreement["pairs"]] == [[0, 1], [0, 2], [1, 2]]
    assert agreement["mean_tau"] == pytest.approx(1.0)
    flipped = same + [run_row(a, 3, -m) for a, m in (("ppo", 0.03), ("dqn", -0.02), ("bc", 0.0))]
    taus = {tuple(p["seeds"]): p["tau"] for p in study.seed_rank_agreement(flipped)["pairs"]}
    assert taus[(0, 3)] == pytest.approx(-1.0)
    # An algorithm's value is the mean over its runs on the seed (several lambdas).
    two = [run_row("ppo", 0, 0.1), run_row("ppo", 0, -0.3), run_row("bc", 0, 0.0), run_row("dqn", 0, 0.05)]
    assert study.seed_rank_agreement(two)["per_seed"]["0"]["ppo"] == pytest.approx(-0.1)
    assert study.seed_rank_agreement(two)["mean_tau"] is None  # one seed: nothing to agree with


def test_a_report_counts_the_invocations_that_ran_its_tasks(tmp_path):
    study = load_study()
    study.record_invocation(tmp_path, "first", ["mnist1d", "synthetic"], 10.0)
    study.record_invocation(tmp_path, "follow-up", ["mnist5k_experts_router"], 5.0)
    mine = study.record_invocation(tmp_path, "publish", ["mnist1d", "mnist5k"], 1.0)
    assert [i["command"] for i in mine] == ["first", "publish"]  # the follow-up ran none of these tasks
    assert len(json.loads((tmp_path / "invocations.json").read_text())) == 3  # every invocation is kept
