"""The one atomic-write helper: a killed writer leaves the old file or the new one, never a torn one."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dynalay_env.atomic import (
    atomic_copy,
    atomic_dir,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    stale_temporaries,
)

REPO = Path(__file__).resolve().parent.parent
#: A writer process loads the helper's file alone (no torch import), so it starts in a blink.
CHILD_PRELUDE = textwrap.dedent(f"""
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("atomic", {str(REPO / "dynalay_env" / "atomic.py")!r})
    atomic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(atomic)
    target = sys.argv[1]
""")
MIB = 1 << 20


def plain_mode(folder: Path) -> int:
    """The mode a plain ``open(..., "w")`` gives a new file in ``folder``."""
    probe = folder / "plain"
    probe.write_bytes(b"")
    return probe.stat().st_mode & 0o777


def start_writer(body: str, target: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(body), str(target)],
                            stdout=subprocess.PIPE, text=True)


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_writes_land_whole_with_the_umask_mode_and_no_temporaries(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "b.md", "# héllo\n")
    atomic_write_json(tmp_path / "c.json", {"x": (1, 2)})
    atomic_copy(tmp_path / "a.bin", tmp_path / "sub" / "d.bin")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.md").read_text(encoding="utf-8") == "# héllo\n"
    assert (tmp_path / "c.json").read_text() == '{\n  "x": [\n    1,\n    2\n  ]\n}'
    assert (tmp_path / "sub" / "d.bin").read_bytes() == b"\x00\x01"
    mode = plain_mode(tmp_path)
    for name in ("a.bin", "b.md", "c.json", "sub/d.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old" and stale_temporaries(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="did not write"), atomic_path(target) as tmp:
        tmp.unlink()
    assert target.read_text() == "old" and stale_temporaries(tmp_path) == []


def test_atomic_dir_writes_replaces_and_on_failure_keeps_the_old_folder(tmp_path):
    target = tmp_path / "rllib"
    with atomic_dir(target) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "state.pkl").write_bytes(b"v1")
    assert (target / "sub" / "state.pkl").read_bytes() == b"v1"
    probe = tmp_path / "probe"
    probe.mkdir()  # the mode a plain mkdir gives, not mkdtemp's private 0700
    assert target.stat().st_mode & 0o777 == probe.stat().st_mode & 0o777
    probe.rmdir()
    with atomic_dir(target) as tmp:  # an existing folder is replaced whole
        (tmp / "new.pkl").write_bytes(b"v2")
    assert sorted(p.name for p in target.iterdir()) == ["new.pkl"]
    with pytest.raises(RuntimeError, match="boom"), atomic_dir(target) as tmp:
        (tmp / "half.pkl").write_bytes(b"half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["new.pkl"]
    assert stale_temporaries(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["rllib"]


def test_atomic_copy_refuses_a_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        atomic_copy(tmp_path / "missing.pt", tmp_path / "copy.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["figure.png", "agent.zip", "agent"])
def test_the_temporary_keeps_the_suffix_libraries_look_at(tmp_path, name):
    with atomic_path(tmp_path / name) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(f".{name}.") and tmp.name != name
        assert tmp.suffix == (Path(name).suffix or ".tmp")
        tmp.write_bytes(b"x")
    assert (tmp_path / name).read_bytes() == b"x"


@pytest.mark.parametrize("name", ["agent.zip", "agent"])
def test_sb3_save_writes_exactly_the_temporary(tmp_path, name):
    # SB3 appends ".zip" to a path without a suffix; the temporary has one, so the save lands in it.
    from stable_baselines3.common.save_util import load_from_zip_file, save_to_zip_file

    with atomic_path(tmp_path / name) as tmp:
        save_to_zip_file(str(tmp), data={"answer": 42})
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    data, _, _ = load_from_zip_file(tmp_path / name)
    assert data == {"answer": 42}


def test_savefig_through_the_helper_writes_a_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    with atomic_path(tmp_path / "curve.png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]


def test_a_writer_killed_inside_the_context_manager_leaves_the_old_file(tmp_path):
    target = tmp_path / "main_model.pt"
    target.write_bytes(b"old model")
    proc = start_writer("""
        with atomic.atomic_path(target) as tmp, open(tmp, "wb") as f:
            f.write(b"N" * (1 << 20))
            f.flush()
            print("writing", flush=True)
            time.sleep(120)
            f.write(b"never")
    """, target)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    kill(proc)
    assert target.read_bytes() == b"old model"
    # SIGKILL skips every cleanup: the half-written temporary stays, hidden and findable, never as the target.
    (leftover,) = stale_temporaries(tmp_path)
    assert leftover.name.startswith(".main_model.pt.") and leftover.stat().st_size == MIB


def test_a_writer_killed_at_any_moment_leaves_a_whole_version(tmp_path):
    """The writer rewrites a 4 MiB file over and over (version i = 4 MiB of byte i); whenever it
    dies, the target is the old file or one complete version."""
    target = tmp_path / "report.json"
    old = b"old" * 1000
    for lines_before_kill in (0, 1, 3):
        target.write_bytes(old)
        proc = start_writer("""
            i = 0
            while True:
                i += 1
                atomic.atomic_write_bytes(target, bytes([i % 256]) * (4 << 20))
                print(i, flush=True)
        """, target)
        assert proc.stdout is not None
        for _ in range(lines_before_kill):
            proc.stdout.readline()
        kill(proc)
        data = target.read_bytes()
        if data != old:
            assert len(data) == 4 * MIB and data == data[:1] * len(data), "torn file"
        assert lines_before_kill == 0 or data != old  # at least one version was completed
        for leftover in stale_temporaries(tmp_path):
            assert leftover != target
            leftover.unlink()


def test_nothing_in_the_package_writes_around_the_helper():
    """Renames, temporary files and in-place writes live in dynalay_env/atomic.py only; libraries
    that write to a path write to the helper's temporary (``tmp``). The cache moves files the helper
    already wrote, from its private training folder into place."""
    allowed = {"cache.py": ("os.replace(",)}
    pattern = re.compile(r"os\.replace\(|os\.rename\(|mkstemp\(|\.write_bytes\(|\.write_text\(|shutil\.copy"
                         r"|\.savefig\((?!tmp\b)|\b(agent|model)\.save(_replay_buffer)?\((?!(str\()?tmp\b)|open\((?!tmp\b)[^)]*[\"'][wa]b?[\"']")
    offenders = []
    for path in sorted([*(REPO / "dynalay_env").rglob("*.py"), *(REPO / "agents").rglob("*.py"),
                        *(REPO / "benchmarks").glob("*.py"), REPO / "train_agent.py"]):
        if path.name == "atomic.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in pattern.finditer(line):
                if match.group() not in allowed.get(path.name, ()):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == [], "write through dynalay_env.atomic instead:\n" + "\n".join(offenders)
