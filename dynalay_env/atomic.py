"""Atomic file writes: a reader, or the next run after a crash, sees the old file or the new one, never a torn one.

Every file the project writes itself goes through this module: main-model checkpoints and
co-training states, agent zips and replay buffers, copies of models into run folders, reports
(``pretrain.json``, ``train.json``, ``report.json``/``.md``, ``sweep.json``/``.md``), figures,
configs, validation histories and dataset caches. Each write goes to a temporary file in the
target's folder, is flushed and fsynced, gets the mode a plain ``open()`` would give it (the
umask, read once at import), is renamed over the target with ``os.replace``, and finally the
folder is fsynced so the rename itself survives a power cut.

Entry points:

- :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_write_json`: data in memory.
- :func:`atomic_path`: a context manager yielding a temporary path, for libraries that write to a
  path themselves (``torch.save``, matplotlib's ``savefig``, SB3's ``model.save``). The temporary
  keeps the target's suffix, so ``savefig`` picks the right format and SB3, which appends
  ``.zip`` only to a path without a suffix, writes exactly the temporary.
- :func:`atomic_copy`: a copy of a file (e.g. a main model into a run folder).
- :func:`atomic_dir`: the same for a library that writes a whole folder (an RLlib checkpoint).

Temporaries are hidden files named ``.<target name>.<random>.tmp<target suffix>``; a write killed
by SIGKILL leaves one behind (nothing can clean up after SIGKILL), never a torn target.
:func:`stale_temporaries` finds them so a resumed run can delete them.

Exceptions, files that other libraries own and write in place: TensorBoard event files (SB3's
logger), Optuna's SQLite/PostgreSQL databases and journal files, files Optuna's artifact store
copies, ``filelock``'s ``.lock`` files, and the rl-zoo3 / SB3 outputs of commands that run those
libraries' own scripts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_copy", "atomic_dir", "atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "stale_temporaries"]


def _read_umask() -> int:
    # os.umask can only be read by setting it; do that once, at import, not beside other threads.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename is still atomic
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); on a clean exit, fsync it, give it the
    umask's mode and rename it over ``path``. On an exception the temporary is deleted and ``path``
    is untouched.

    Example: ``with atomic_path(run_dir / "agent.zip") as tmp: agent.save(tmp)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"the writer did not write the temporary file {tmp} for {path}")
        fd = os.open(tmp, os.O_RDONLY)  # the writer may have closed it without fsync
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, default: Any = None) -> None:
    """Write ``obj`` as JSON (``json.dumps(obj, indent=indent, default=default)``) to ``path`` atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=indent, default=default).encode())


def atomic_copy(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy the file ``source`` to ``target`` atomically; returns ``target``."""
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise FileNotFoundError(f"cannot copy {source}: no such file")
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside the folder ``path``; on a clean exit, fsync every file
    in it and rename it to ``path``. An existing ``path`` is first renamed aside (a hidden
    ``.<name>.<random>.tmp`` folder) and deleted once the new one is in place, so a crash leaves
    the old folder, the new one, or the old one aside -- never a half-written ``path``. On an
    exception the temporary is deleted and ``path`` is untouched.

    Example: ``with atomic_dir(run_dir / "rllib") as tmp: algo.save_to_path(tmp)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                fd = os.open(file, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes the folder private (0700)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_folder(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """The temporaries that killed writes left in ``folder`` (not recursive)."""
    folder = Path(folder)
    return sorted({*folder.glob(".*.tmp"), *folder.glob(".*.tmp.*")})
