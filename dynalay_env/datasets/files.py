"""Shared helpers of the readers of local files: where to look, what was missing, gzip."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path

from dynalay_env.datasets.base import DATA_ROOT_ENV, DatasetFormatError, DatasetNotFoundError


def require_root(name: str, data_root: Path | None) -> Path:
    """``data_root``, or a :class:`DatasetNotFoundError` saying how to give it for dataset ``name``."""
    if data_root is None:
        raise DatasetNotFoundError(
            f"dataset {name!r} is read from local files and nothing is downloaded: pass "
            f"data_root=<folder with the files> to load_dataset, or set ${DATA_ROOT_ENV}"
        )
    return data_root


def find_files(
    name: str, filenames: Sequence[str], search_dirs: Sequence[Path], suffixes: Sequence[str], hint: str
) -> dict[str, Path]:
    """Locate each file as ``dir/filename+suffix`` (first hit wins). Missing files are reported all
    at once, each with every path that was tried."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for fname in filenames:
        tried = [d / (fname + s) for d in search_dirs for s in suffixes]
        hit = next((p for p in tried if p.is_file()), None)
        if hit is None:
            missing.append(f"  {fname}: looked for\n" + "\n".join(f"    {p}" for p in tried))
        else:
            found[fname] = hit
    if missing:
        if not any(d.is_dir() for d in search_dirs):
            hint = f"None of the searched folders exists: is data_root right?\n{hint}"
        raise DatasetNotFoundError(
            f"dataset {name!r}: {len(missing)} file(s) not found (nothing is downloaded).\n"
            + "\n".join(missing)
            + f"\n{hint}"
        )
    return found


def read_bytes(path: Path) -> bytes:
    """File contents, transparently gunzipped when the file starts with the gzip magic (1f 8b)."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetFormatError(f"{path}: corrupt gzip data ({e})") from e
    return data
