"""``python -m benchmarks reproduce``: parts, resumption, provenance, no machine-local paths, README blocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import reproduce

ROOT = Path(__file__).resolve().parent.parent


def test_list_names_every_part_and_an_unknown_part_is_refused(capsys):
    assert reproduce.main(["--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(reproduce.PARTS)
    with pytest.raises(SystemExit) as exc:
        reproduce.main(["--only", "agent_seed"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown part(s) agent_seed" in err and "agent_seeds" in err


def test_only_pulls_in_what_a_part_needs_and_quick_drops_the_synthetic_model():
    full = reproduce.Context(Path("o"), Path("w"), reproduce.FULL, quick=False)
    quick = reproduce.Context(Path("o"), Path("w"), reproduce.QUICK, quick=True)
    assert reproduce.needed(["adaptive_inference"], full) == ["pretrain_mnist1d", "agent_seeds", "adaptive_inference"]
    assert reproduce.needed(["cotrain_vs_frozen"], full) == ["pretrain_mnist1d", "pretrain_synthetic",
                                                             "cotrain_vs_frozen"]
    assert reproduce.needed(["cotrain_vs_frozen"], quick) == ["pretrain_mnist1d", "cotrain_vs_frozen"]
    assert not reproduce.PARTS["pretrain_synthetic"].enabled(quick)


def test_scrub_leaves_no_machine_local_path(monkeypatch, tmp_path):
    cache = tmp_path / "model-cache"
    monkeypatch.setenv("DYNALAY_MODEL_CACHE", str(cache))
    text = reproduce.scrub(f"{sys.executable} {ROOT}/train_agent.py --model {cache}/mnist1d-x/main_model.pt "
                           f"--run-dir {ROOT}")
    assert text == "python train_agent.py --model $DYNALAY_MODEL_CACHE/mnist1d-x/main_model.pt --run-dir ."


def test_sweep_report_names_its_default_sqlite_file_relative_to_the_run_folder(tmp_path):
    from agents.sweep import SweepConfig, report_storage

    config = SweepConfig(run_dir=str(tmp_path / "sweep"))
    assert str(tmp_path) not in report_storage(config)
    assert report_storage(config).startswith("sqlite:///study.db")
    remote = SweepConfig(run_dir=str(tmp_path), storage="postgresql://u:secret@db/dynalay")
    assert "secret" not in report_storage(remote) and "db/dynalay" in report_storage(remote)


# ---- the runner, on fake parts (no models): resumption, --force, parallel jobs, failures ----------


def fake_part(name: str, work: Path, calls: list[str], exit_code: int = 0, deps: tuple[str, ...] = (),
              n_jobs: int = 2) -> reproduce.Part:
    """A part whose jobs each append a line to ``work/<name>.txt`` (one process per job) and whose
    collect writes ``<name>.json`` with the run's meta."""
    def jobs(ctx: reproduce.Context, part: reproduce.Part) -> list[reproduce.Job]:
        code = f"open({str(work / (name + '.txt'))!r}, 'a').write('x\\n'); raise SystemExit({exit_code})"
        return [reproduce.Job([sys.executable, "-c", code]) for _ in range(n_jobs)]

    def collect(ctx: reproduce.Context, part: reproduce.Part, meta: dict[str, Any]) -> None:
        calls.append(name)
        reproduce.write_json(ctx.out / f"{name}.json", {"reproduce": meta, "lines": (work / f"{name}.txt").read_text()})

    return reproduce.Part(name, "fake", lambda ctx: [], jobs, reproduce.no_jobs, collect,
                          lambda ctx: [f"{name}.json"], deps=lambda ctx: deps)


def test_a_results_file_of_the_script_form_names_todays_command_and_stays_current(tmp_path):
    """Results files written before ``benchmarks`` became a package name ``python benchmarks/X.py``:
    the same program as ``python -m benchmarks X``, so their part is current and the pages show the
    command that runs today."""
    old = "python benchmarks/agent_seeds.py --root runs/r --model $DYNALAY_MODEL_CACHE/m/main_model.pt"
    new = "python -m benchmarks agent_seeds --root runs/r --model $DYNALAY_MODEL_CACHE/m/main_model.pt"
    assert reproduce.current_command(old) == new and reproduce.current_command(new) == new
    assert reproduce.current_command(".venv/bin/python benchmarks/reproduce.py --readme") == (
        ".venv/bin/python -m benchmarks reproduce --readme")
    # Only the program is rewritten: a path that merely ends in benchmarks/X.py is an argument.
    assert reproduce.current_command("python train_agent.py --out x/benchmarks/a.py") == (
        "python train_agent.py --out x/benchmarks/a.py")
    part = reproduce.Part("p", "fake", lambda ctx: [], reproduce.no_jobs, reproduce.no_jobs, lambda *a: None,
                          lambda ctx: ["p.json"])
    ctx = reproduce.Context(tmp_path, tmp_path / "work", {}, quick=True)
    (tmp_path / "p.json").write_text(json.dumps({"reproduce": {"commands": [old], "models": {}}}))
    assert reproduce.is_current(ctx, part, {"commands": [new], "models": {}})
    assert not reproduce.is_current(ctx, part, {"commands": [new + " --seeds 1"], "models": {}})
    total = {"reproduce": {"command": "python benchmarks/reproduce.py", "wall_seconds": 60.0, "jobs": 2,
                           "machine": {"cpu_count": 2, "processor": "x86_64"}, "parts_run": ["p"],
                           "parts_skipped": []}}
    assert "(`python -m benchmarks reproduce`)" in reproduce.render_total(total)


def run_parts(monkeypatch, tmp_path: Path, parts: list[reproduce.Part], force: bool = False,
              budget: dict[str, Any] | None = None) -> tuple[int, reproduce.Runner]:
    monkeypatch.setattr(reproduce, "PARTS", {p.name: p for p in parts})
    ctx = reproduce.Context(tmp_path / "out", tmp_path / "work", budget or {}, quick=True)
    names = [p.name for p in parts]
    runner = reproduce.Runner(ctx, names, set(names), force, slots=2, command="python -m benchmarks reproduce")
    return runner.run(), runner


def test_a_current_part_is_skipped_and_force_or_a_changed_command_reruns_it(monkeypatch, tmp_path):
    calls: list[str] = []
    parts = [fake_part("a", tmp_path, calls), fake_part("b", tmp_path, calls, deps=("a",))]
    rc, runner = run_parts(monkeypatch, tmp_path, parts)
    assert rc == 0 and calls == ["a", "b"] and runner.ran == {"a", "b"}
    meta = json.loads((tmp_path / "out" / "a.json").read_text())["reproduce"]
    assert meta["command"] == "python -m benchmarks reproduce --only a"
    assert {"commands", "models", "machine", "wall_seconds", "job_seconds"} <= set(meta)
    assert len(meta["job_seconds"]) == 2 and (tmp_path / "a.txt").read_text() == "x\nx\n"  # both jobs ran

    rc, runner = run_parts(monkeypatch, tmp_path, parts)  # resumed: nothing to do
    assert rc == 0 and calls == ["a", "b"] and runner.ran == set() and runner.done == {"a", "b"}

    rc, runner = run_parts(monkeypatch, tmp_path, parts, force=True)
    assert rc == 0 and calls == ["a", "b", "a", "b"]

    changed = [fake_part("a", tmp_path, calls, n_jobs=1), parts[1]]  # another command: rerun a only
    rc, runner = run_parts(monkeypatch, tmp_path, changed)
    assert rc == 0 and calls[4:] == ["a"]


def test_a_failed_part_stops_what_needs_it_but_not_the_others(monkeypatch, tmp_path, capsys):
    calls: list[str] = []
    parts = [fake_part("bad", tmp_path, calls, exit_code=3), fake_part("needs_bad", tmp_path, calls, deps=("bad",)),
             fake_part("ok", tmp_path, calls)]
    rc, runner = run_parts(monkeypatch, tmp_path, parts)
    assert rc == 1 and calls == ["ok"] and runner.failed == {"bad", "needs_bad"}
    out = capsys.readouterr().out
    assert "bad: FAILED" in out and "exited 3" in out
    assert not (tmp_path / "out" / "bad.json").exists()


# ---- README blocks ---------------------------------------------------------------------------------


def test_readme_blocks_are_rendered_from_the_results_files(tmp_path):
    text = ("intro\n<!-- results:adaptive_inference -->\nold text 0.63x\n<!-- /results:adaptive_inference -->\n"
            "<!-- results:env_throughput -->\n<!-- /results:env_throughput -->\nend\n")
    missing = reproduce.rewrite_readme(text, tmp_path)
    assert "old text" not in missing and missing.count(reproduce.MISSING) == 2
    data = {"reproduce": {"wall_seconds": 1.0}, "agent": "PPO seed-0 agent", "dataset": "mnist1d",
            "split": "test", "n_examples": 2000, "repeats": 5,
            "rows": [{"policy": "agent", "accuracy": 0.929, "mean_compute": 0.277, "seconds": 0.14,
                      "time_vs_full_depth": 0.628},
                     {"policy": "full depth", "accuracy": 0.939, "mean_compute": 1.0, "seconds": 0.223,
                      "time_vs_full_depth": 1.0}]}
    (tmp_path / "adaptive_inference_cpu.json").write_text(json.dumps(data))
    out = reproduce.rewrite_readme(text, tmp_path)
    assert "in 0.63x the wall-clock time" in out and "(0.140 s vs 0.223 s" in out
    assert out.startswith("intro\n") and out.endswith("end\n") and out.count(reproduce.MISSING) == 1
    assert reproduce.rewrite_readme(out, tmp_path) == out  # idempotent
    # With the per-layer table, the block says why the wall-time ratio exceeds the compute ratio.
    data["rows"][0]["time_ratio_over_compute_ratio"] = 0.628 / 0.277
    data["layers"] = [{"layer": 1, "seconds": 0.06, "gflops": 0.6, "ms_per_gflop": 100.0},
                      {"layer": 2, "seconds": 0.04, "gflops": 8.4, "ms_per_gflop": 4.8}]
    (tmp_path / "adaptive_inference_cpu.json").write_text(json.dumps(data))
    out = reproduce.rewrite_readme(text, tmp_path)
    assert "at 0.277 of the full-depth compute (decisions counted): 2.27x its compute ratio" in out
    assert "Layer 1 executes 0.067 of the full-depth FLOPs but takes 0.600 of its time (100 ms per GFLOP" in out
    with pytest.raises(ValueError, match="unknown; valid"):
        reproduce.rewrite_readme("<!-- results:nope -->\n<!-- /results:nope -->", tmp_path)


# ---- end to end ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_throughput_part_end_to_end(tmp_path):
    """The real pipeline on one part: the pinned default model, the script by command line, the
    results files with provenance and no machine-local path, then a resumed run that skips it."""
    cmd = [sys.executable, "-m", "benchmarks", "reproduce", "--quick", "--only", "env_throughput", "--out",
           str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "total wall time" in first.stdout
    data = json.loads((tmp_path / "out" / "env_throughput_cpu.json").read_text())
    meta = data["reproduce"]
    model = meta["models"]["mnist1d"]
    assert model["dataset"] == "mnist1d" and len(model["provenance"]) >= 12 and model["dataset_fingerprint"]
    assert meta["machine"]["torch_threads_per_job"] == 1 and meta["wall_seconds"] > 0
    assert set(data["sizes"]) == {"1", "256"} and data["torch_threads"] == 1
    for f in (tmp_path / "out").iterdir():
        text = f.read_text()
        assert str(tmp_path) not in text and str(ROOT) not in text and str(Path.home()) + "/" not in text, f.name
    md = (tmp_path / "out" / "env_throughput_cpu.md").read_text()
    assert model["provenance"] in md and "| 256 |" in md
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "env_throughput: current, skipped" in second.stdout
