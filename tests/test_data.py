"""Tests of the dataset registry and its readers (dynalay_env/datasets/).

Every test runs with DYNALAY_CACHE_DIR pointing into tmp and DYNALAY_DATA_ROOT unset, so nothing
touches the user's cache or data. File datasets are tested on tiny files the tests write themselves.
"""

from __future__ import annotations

import gzip
import os
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dynalay_env.datasets as data
from dynalay_env.datasets import (
    SPLITS,
    Dataset,
    DatasetFormatError,
    DatasetNotFoundError,
    list_datasets,
    load_dataset,
    make_synthetic,
    read_idx,
    register_dataset,
    registry,
)
from dynalay_env.datasets import mnist1d as mnist1d_reader
from dynalay_env.datasets import splits as splitting

BUILTIN = ["cifar10", "digits", "fashion_mnist", "mnist", "mnist1d", "mnist5k", "mnist5k_corrupted",
           "mnist5k_noisy_labels", "synthetic"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(data.DATA_ROOT_ENV, raising=False)
    data.clear_cache()
    yield
    data.clear_cache()


#: The package's shipped generated data (``make models``); the tests below of generation and caching
#: hide it, so that a cold load really generates.
SHIPPED_DATA_DIR = data.SHIPPED_DATA_DIR


@pytest.fixture(autouse=True)
def _no_shipped_data(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setattr(mnist1d_reader, "SHIPPED_DATA_DIR", tmp_path_factory.mktemp("no_shipped_data"))


@pytest.fixture(scope="session")
def mnist1d_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cold generation of mnist1d for the whole session (it takes a few seconds)."""
    cache = tmp_path_factory.mktemp("mnist1d_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data, "SHIPPED_DATA_DIR", tmp_path_factory.mktemp("no_shipped_data"))
        data.load_dataset("mnist1d", cache_dir=cache)
    return cache


@pytest.fixture
def mnist1d(mnist1d_cache: Path) -> Dataset:
    return load_dataset("mnist1d", cache_dir=mnist1d_cache)


def _rows(x: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in x.reshape(len(x), -1)}


def _assert_disjoint(ds: Dataset) -> None:
    seen: set[bytes] = set()
    for split in SPLITS:
        rows = _rows(ds.split(split)[0])
        assert len(rows) == ds.num_examples(split), f"duplicate rows inside {split}"
        assert not rows & seen, f"{split} shares examples with an earlier split"
        seen |= rows


def _assert_well_formed(ds: Dataset, input_shape: tuple[int, ...], num_classes: int, sizes: list[int]) -> None:
    assert ds.input_shape == input_shape and ds.num_classes == num_classes
    assert [ds.num_examples(s) for s in SPLITS] == sizes
    for split in SPLITS:
        x, y = ds.split(split)
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape == (sizes[SPLITS.index(split)], *input_shape) and y.shape == (x.shape[0],)
        assert x.flags.c_contiguous and y.flags.c_contiguous
        assert not x.flags.writeable and not y.flags.writeable
        assert np.isfinite(x).all()
        assert y.min() >= 0 and y.max() < num_classes
    assert len(ds.fingerprint) == 16 and int(ds.fingerprint, 16) >= 0


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def test_splits_and_registry_names():
    assert SPLITS == ("model_train", "agent_train", "val", "test")
    assert list_datasets() == BUILTIN
    assert data.DEFAULT_DATASET == "mnist1d"


def test_unknown_dataset_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown dataset 'mnist-1d'") as exc:
        load_dataset("mnist-1d")
    assert "(did you mean 'mnist1d'?); valid datasets: " + ", ".join(BUILTIN) in str(exc.value)
    assert "did you mean 'mnist1d'" in str(exc.value)


def test_unknown_split_lists_valid_splits():
    ds = load_dataset("synthetic")
    for call in (lambda: ds.split("train"), lambda: ds.num_examples("train")):
        with pytest.raises(ValueError, match="unknown split 'train'") as exc:
            call()
        for split in SPLITS:
            assert repr(split) in str(exc.value)


def test_register_dataset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))  # keep the real registry untouched
    calls = []

    def loader(data_root, cache_dir):
        calls.append((data_root, cache_dir))
        return make_synthetic(sizes=(4, 4, 4, 4), name="tiny")

    register_dataset("tiny", loader)
    assert "tiny" in list_datasets()
    ds = load_dataset("tiny", data_root=tmp_path, cache_dir=tmp_path / "c")
    assert load_dataset("tiny", data_root=tmp_path, cache_dir=tmp_path / "c") is ds  # in-process cache
    assert calls == [(tmp_path.resolve(), (tmp_path / "c").resolve())]
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("tiny", loader)
    register_dataset("tiny", lambda r, c: make_synthetic(sizes=(5, 5, 5, 5), name="tiny"), overwrite=True)
    assert load_dataset("tiny").num_examples("test") == 5  # replaced loader, no stale cache
    register_dataset("bad", lambda r, c: "not a dataset")
    with pytest.raises(TypeError, match="expected Dataset"):
        load_dataset("bad")
    with pytest.raises(TypeError):
        register_dataset("nope", 42)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Dataset container
# --------------------------------------------------------------------------------------------------


def _tiny_splits(n: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return {s: (rng.normal(size=(n, 2, 3)), np.arange(n) % 2) for s in SPLITS}


def test_dataset_normalises_and_protects_arrays():
    splits = _tiny_splits()
    x_user = splits["val"][0]
    ds = Dataset("toy", (2, 3), 2, splits)
    x, y = ds.split("val")
    assert x.dtype == np.float32 and y.dtype == np.int64  # float64 / default int converted
    with pytest.raises(ValueError, match="read-only"):
        x[0, 0, 0] = 1.0
    assert x_user.flags.writeable  # the caller's own array is left alone
    xt, yt = ds.as_tensors("val")
    xt[0, 0, 0] = 123.0  # a copy: writable, and the dataset is unchanged
    assert x[0, 0, 0] != 123.0 and str(xt.dtype) == "torch.float32" and str(yt.dtype) == "torch.int64"
    assert "fingerprint=" in repr(ds) and "val=3" in repr(ds)


def test_fingerprint_tracks_content():
    splits = _tiny_splits()
    a, b = Dataset("toy", (2, 3), 2, splits), Dataset("toy", (2, 3), 2, _tiny_splits())
    assert a.fingerprint == b.fingerprint and a == b and hash(a) == hash(b)
    changed = dict(splits)
    x = splits["test"][0].copy()
    x[0, 0, 0] += 1e-3
    changed["test"] = (x, splits["test"][1])
    assert Dataset("toy", (2, 3), 2, changed).fingerprint != a.fingerprint
    assert Dataset("toy2", (2, 3), 2, splits).fingerprint != a.fingerprint
    Dataset("toy", (2, 3), 2, splits, fingerprint=a.fingerprint)  # a matching stored fingerprint is fine
    with pytest.raises(DatasetFormatError, match="fingerprint"):
        Dataset("toy", (2, 3), 2, splits, fingerprint="0" * 16)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s.pop("val"), "missing \\['val'\\]"),
        (lambda s: s.update(train=s["val"]), "unexpected \\['train'\\]"),
        (lambda s: s.update(val=(s["val"][0][:, :1], s["val"][1])), "expected \\(N, \\*\\(2, 3\\)\\)"),
        (lambda s: s.update(val=(s["val"][0], s["val"][1][:2])), "y has shape"),
        (lambda s: s.update(val=(s["val"][0], s["val"][1] + 5)), "labels must be in \\[0, 2\\)"),
        (lambda s: s.update(val=(s["val"][0], s["val"][1].astype(float))), "integer dtype"),
        (lambda s: s.update(val=(s["val"][0] * np.nan, s["val"][1])), "NaN"),
    ],
)
def test_dataset_validation(mutate, message):
    splits = _tiny_splits()
    mutate(splits)
    with pytest.raises(ValueError, match=message):
        Dataset("toy", (2, 3), 2, splits)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(3, 100_000))
def test_split_sizes_partition(n: int):
    fractions = splitting.TRAIN_FRACTIONS
    sizes = splitting.split_sizes(n, fractions, SPLITS[:3], "x")
    assert sum(sizes) == n and min(sizes) >= 1
    if n >= 8:
        assert all(abs(s - n * f) < 1 for s, f in zip(sizes, fractions, strict=True))


def test_split_sizes_too_small():
    assert splitting.split_sizes(3, splitting.TRAIN_FRACTIONS, SPLITS[:3], "x") == [1, 1, 1]
    assert splitting.split_sizes(40, splitting.TRAIN_FRACTIONS, SPLITS[:3], "x") == [20, 10, 10]
    with pytest.raises(DatasetFormatError, match="only 2 examples"):
        splitting.split_sizes(2, splitting.TRAIN_FRACTIONS, SPLITS[:3], "train set")


# --------------------------------------------------------------------------------------------------
# mnist1d
# --------------------------------------------------------------------------------------------------


def test_mnist1d_shapes_and_splits(mnist1d: Dataset):
    _assert_well_formed(mnist1d, (1, 40), 10, [6000, 2000, 2000, 2000])
    assert mnist1d.difficulty is None and mnist1d.name == "mnist1d"
    for split in SPLITS:
        assert set(np.unique(mnist1d.split(split)[1])) == set(range(10))
    _assert_disjoint(mnist1d)


def test_mnist1d_cached_on_disk_and_in_process(mnist1d_cache: Path, mnist1d: Dataset):
    files = list(mnist1d_cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temp files left behind
    assert load_dataset("mnist1d", cache_dir=mnist1d_cache) is mnist1d  # in-process cache
    data.clear_cache()
    again = load_dataset("mnist1d", cache_dir=mnist1d_cache)  # from the .npz this time
    assert again is not mnist1d and again.fingerprint == mnist1d.fingerprint
    for split in SPLITS:
        np.testing.assert_array_equal(again.split(split)[0], mnist1d.split(split)[0])


def test_mnist1d_generation_keeps_global_rng_and_never_downloads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mnist1d: Dataset
):
    import mnist1d.data as md

    def no_download(*args, **kwargs):
        raise AssertionError("mnist1d.data.get_dataset must never be called (it may download)")

    monkeypatch.setattr(md, "get_dataset", no_download)
    random.seed(1234)
    np.random.seed(4321)
    random.random(), np.random.rand()  # move off the seeded position
    py_state, np_state = random.getstate(), np.random.get_state()
    fresh = load_dataset("mnist1d")  # cold: DYNALAY_CACHE_DIR is an empty tmp folder
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert after[0] == np_state[0] and after[2:] == np_state[2:]
    np.testing.assert_array_equal(after[1], np_state[1])
    # A regeneration in a fresh folder reproduces the same data byte for byte.
    assert fresh.fingerprint == mnist1d.fingerprint
    assert list((tmp_path / "cache").glob("mnist1d_*.npz"))  # default dir taken from the env var


def test_the_shipped_mnist1d_is_what_the_generator_makes(mnist1d: Dataset):
    """``make models`` ships MNIST-1D under the name its cache file has for this recipe and mnist1d
    version; its bytes are those a generation gives."""
    path = mnist1d_reader._mnist1d_cache_path(SHIPPED_DATA_DIR)
    assert path.is_file(), f"no shipped MNIST-1D at {path}: run `make models`"
    assert [p.name for p in SHIPPED_DATA_DIR.glob("mnist1d_*.npz")] == [path.name]
    assert mnist1d_reader._read_mnist1d_cache(path).fingerprint == mnist1d.fingerprint  # mnist1d: generated here


def test_a_cold_load_reads_the_shipped_mnist1d_without_generating(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                    mnist1d: Dataset):
    monkeypatch.setattr(mnist1d_reader, "SHIPPED_DATA_DIR", SHIPPED_DATA_DIR)
    monkeypatch.setattr(mnist1d_reader, "_generate_mnist1d", lambda: pytest.fail("generated although a copy ships"))
    data.clear_cache()
    ds = load_dataset("mnist1d", cache_dir=tmp_path / "empty")
    assert ds.fingerprint == mnist1d.fingerprint
    assert ds.info["cache_file"] == str(mnist1d_reader._mnist1d_cache_path(SHIPPED_DATA_DIR))


@pytest.mark.parametrize("corruption", ["garbage", "truncated", "tampered", "empty"])
def test_mnist1d_corrupt_cache_is_regenerated(
    corruption: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mnist1d: Dataset, mnist1d_cache: Path
):
    cache = tmp_path / "cache"
    cache.mkdir()
    path = mnist1d_reader._mnist1d_cache_path(cache)
    good = mnist1d_reader._mnist1d_cache_path(mnist1d_cache).read_bytes()
    if corruption == "garbage":
        path.write_bytes(b"this is not a zip file")
    elif corruption == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif corruption == "empty":
        path.write_bytes(b"")
    else:  # valid npz, one value changed: only the stored fingerprint can tell
        arrays = mnist1d_reader._dataset_to_npz(mnist1d)
        x = arrays["val_x"].copy()
        x[0, 0, 0] += 1.0
        arrays["val_x"] = x
        mnist1d_reader._write_npz_atomic(path, arrays)

    # Regeneration is the real generator's job; a stand-in returning the known arrays keeps this fast.
    calls = []

    def fake_generate():
        calls.append(1)
        xs = np.concatenate([mnist1d.split(s)[0] for s in SPLITS])
        ys = np.concatenate([mnist1d.split(s)[1] for s in SPLITS])
        return xs, ys, {}

    monkeypatch.setattr(mnist1d_reader, "_generate_mnist1d", fake_generate)
    ds = load_dataset("mnist1d")
    assert calls == [1] and ds.fingerprint == mnist1d.fingerprint
    data.clear_cache()
    assert load_dataset("mnist1d").fingerprint == mnist1d.fingerprint
    assert calls == [1]  # the rewritten cache file is valid now
    assert [p.name for p in cache.iterdir()] == [path.name]


# --------------------------------------------------------------------------------------------------
# digits and synthetic
# --------------------------------------------------------------------------------------------------


def test_digits():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    _assert_well_formed(ds, (64,), 10, [719, 360, 359, 359])
    xs = np.concatenate([ds.split(s)[0] for s in SPLITS])
    ys = np.concatenate([ds.split(s)[1] for s in SPLITS])
    assert xs.min() == 0.0 and xs.max() == 1.0
    # The four splits are a partition of the original 1797 examples: nothing lost, nothing repeated.
    raw = load_digits()
    got = np.column_stack([xs * 16, ys])
    ref = np.column_stack([raw.data, raw.target])
    np.testing.assert_array_equal(got[np.lexsort(got.T)], ref[np.lexsort(ref.T)])
    data.clear_cache()
    assert load_dataset("digits").fingerprint == ds.fingerprint


def test_synthetic_shapes_difficulty_and_determinism():
    ds = load_dataset("synthetic")
    _assert_well_formed(ds, (1, 32), 4, [2000, 1500, 1250, 1250])
    _assert_disjoint(ds)
    assert ds.difficulty is not None
    for split in SPLITS:
        d = ds.difficulty[split]
        assert d.dtype == np.float32 and d.shape == (ds.num_examples(split),)
        assert 0.1 <= d.min() and d.max() <= 2.5 and not d.flags.writeable
    assert make_synthetic().fingerprint == ds.fingerprint
    assert make_synthetic(seed=1).fingerprint != ds.fingerprint


def test_synthetic_difficulty_is_the_noise_and_makes_examples_harder():
    from sklearn.linear_model import LogisticRegression

    ds = load_dataset("synthetic")
    x = np.concatenate([ds.split(s)[0] for s in SPLITS])
    d = np.concatenate([ds.difficulty[s] for s in SPLITS])
    # Templates have unit variance and amplitude ~1, so a sample's variance is ~ 1 + d^2 on average
    # (one sample's variance over 32 points is too noisy to compare alone, so compare in bins).
    var = x.reshape(len(x), -1).var(axis=1)
    bins = np.digitize(d, np.quantile(d, np.linspace(0, 1, 11)[1:-1]))
    for b in range(10):
        in_bin = bins == b
        np.testing.assert_allclose(var[in_bin].mean(), 1 + (d[in_bin] ** 2).mean(), rtol=0.1)
    x_train, y_train = ds.split("model_train")
    clf = LogisticRegression(max_iter=1000).fit(x_train.reshape(len(x_train), -1), y_train)
    xv, yv = ds.split("val")
    dv = ds.difficulty["val"]
    correct = clf.predict(xv.reshape(len(xv), -1)) == yv
    easy, hard = dv < np.quantile(dv, 1 / 3), dv > np.quantile(dv, 2 / 3)
    assert correct[easy].mean() > correct[hard].mean() + 0.15


# --------------------------------------------------------------------------------------------------
# mnist / fashion_mnist (IDX)
# --------------------------------------------------------------------------------------------------

IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
TORCHVISION_DIR = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def _idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write(path: Path, payload: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def _write_idx_set(folder: Path, gz: bool, n_train: int = 40, n_test: int = 10) -> dict[str, np.ndarray]:
    """Tiny IDX set; train image i has pixel (0, 0) = i so the split permutation can be recovered."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    arrays["train_images"][:, 0, 0] = np.arange(n_train)
    for fname, key in zip(IDX_NAMES, arrays, strict=True):
        _write(folder / fname, _idx_bytes(arrays[key]), gz)
    return arrays


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_loader(name: str, layout: str, gz: bool, tmp_path: Path):
    folder = tmp_path if layout == "flat" else tmp_path / TORCHVISION_DIR[name] / "raw"
    arrays = _write_idx_set(folder, gz)
    ds = load_dataset(name, data_root=tmp_path)
    _assert_well_formed(ds, (1, 28, 28), 10, [20, 10, 10, 10])
    assert ds.name == name
    x_test, y_test = ds.split("test")  # the official test set, in file order
    np.testing.assert_allclose(x_test[:, 0], arrays["test_images"] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y_test, arrays["test_labels"])
    # model_train/agent_train/val are a permutation of the official train set, labels kept aligned.
    idx = np.concatenate([np.rint(ds.split(s)[0][:, 0, 0, 0] * 255).astype(int) for s in SPLITS[:3]])
    assert sorted(idx) == list(range(40))
    labels = np.concatenate([ds.split(s)[1] for s in SPLITS[:3]])
    np.testing.assert_array_equal(labels, arrays["train_labels"][idx])
    assert idx.tolist() != list(range(40))  # actually shuffled
    np.testing.assert_allclose(ds.split("val")[0][:, 0], arrays["train_images"][idx[30:]] / 255.0, atol=1e-7)


def test_idx_split_is_deterministic_and_data_root_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    _write_idx_set(tmp_path / "a", gz=False)
    _write_idx_set(tmp_path / "b", gz=True)
    first = load_dataset("mnist", data_root=tmp_path / "a")
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(tmp_path / "b"))
    second = load_dataset("mnist")  # same content, gzipped, found through DYNALAY_DATA_ROOT
    assert second is not first and second.fingerprint == first.fingerprint


def test_file_dataset_without_data_root_says_how_to_pass_it():
    for name in ("mnist", "fashion_mnist", "cifar10"):
        with pytest.raises(DatasetNotFoundError, match="data_root") as exc:
            load_dataset(name)
        assert "DYNALAY_DATA_ROOT" in str(exc.value)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_missing_files_name_every_searched_path(name: str, tmp_path: Path):
    with pytest.raises(DatasetNotFoundError) as exc:
        load_dataset(name, data_root=tmp_path)
    assert isinstance(exc.value, FileNotFoundError)
    msg = str(exc.value)
    for fname in IDX_NAMES:
        for folder in (tmp_path, tmp_path / TORCHVISION_DIR[name] / "raw"):
            for suffix in ("", ".gz"):
                assert str(folder.resolve() / (fname + suffix)) in msg

    # With three of four present, only the missing one is reported.
    _write_idx_set(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError, match="1 file\\(s\\) not found") as exc:
        load_dataset(name, data_root=tmp_path)
    assert "t10k-labels-idx1-ubyte" in str(exc.value) and "train-images-idx3-ubyte" not in str(exc.value)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_bad_magic(gz: bool, tmp_path: Path):
    _write_idx_set(tmp_path, gz=gz)
    labels = (np.arange(40) % 10).astype(np.uint8)
    bad = _write(tmp_path / "train-labels-idx1-ubyte", b"\x12\x34" + _idx_bytes(labels)[2:], gz)
    with pytest.raises(DatasetFormatError, match="bad IDX magic number 0x12340801") as exc:
        load_dataset("mnist", data_root=tmp_path)
    assert str(bad.resolve()) in str(exc.value)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_truncated(gz: bool, tmp_path: Path):
    arrays = _write_idx_set(tmp_path, gz=gz)
    bad = _write(tmp_path / "t10k-images-idx3-ubyte", _idx_bytes(arrays["test_images"])[:-100], gz)
    with pytest.raises(DatasetFormatError, match="truncated IDX data") as exc:
        load_dataset("fashion_mnist", data_root=tmp_path)
    assert str(bad.resolve()) in str(exc.value)


def test_idx_truncated_header_and_gzip_stream(tmp_path: Path):
    header_only = tmp_path / "h"
    header_only.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DatasetFormatError, match="truncated IDX header"):
        read_idx(header_only)
    broken_gz = tmp_path / "g.gz"
    broken_gz.write_bytes(gzip.compress(_idx_bytes(np.zeros((5, 28, 28), np.uint8)))[:-30])
    with pytest.raises(DatasetFormatError, match="corrupt gzip") as exc:
        read_idx(broken_gz)
    assert str(broken_gz) in str(exc.value)


def test_idx_count_mismatch_names_both_files(tmp_path: Path):
    _write_idx_set(tmp_path, gz=False)
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(np.zeros(39, np.uint8)), gz=False)
    with pytest.raises(DatasetFormatError, match="40 images but .* 39 labels") as exc:
        load_dataset("mnist", data_root=tmp_path)
    assert "train-images-idx3-ubyte" in str(exc.value) and "train-labels-idx1-ubyte" in str(exc.value)


def test_idx_wrong_image_size_or_label_range(tmp_path: Path):
    _write_idx_set(tmp_path, gz=False)
    _write(tmp_path / "t10k-images-idx3-ubyte", _idx_bytes(np.zeros((10, 32, 32), np.uint8)), gz=False)
    with pytest.raises(DatasetFormatError, match="shape \\(N, 28, 28\\)"):
        load_dataset("mnist", data_root=tmp_path)
    _write_idx_set(tmp_path, gz=False)
    _write(tmp_path / "t10k-labels-idx1-ubyte", _idx_bytes(np.full(10, 10, np.uint8)), gz=False)
    with pytest.raises(DatasetFormatError, match="label 10 out of range"):
        load_dataset("mnist", data_root=tmp_path)


def test_read_idx_dtypes(tmp_path: Path):
    for code, dtype in [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32),
                        (0x0D, np.float32), (0x0E, np.float64)]:
        arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype) if code != 0x08 else np.arange(24, dtype=dtype)
        path = tmp_path / f"a{code}"
        path.write_bytes(_idx_bytes(arr, code))
        np.testing.assert_array_equal(read_idx(path), arr)
    extra = tmp_path / "extra"
    extra.write_bytes(_idx_bytes(np.zeros(4, np.uint8)) + b"\x00")
    with pytest.raises(DatasetFormatError, match="trailing bytes"):
        read_idx(extra)


# --------------------------------------------------------------------------------------------------
# cifar10
# --------------------------------------------------------------------------------------------------

CIFAR_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]


def _write_cifar(folder: Path, per_batch: int = 8, n_test: int = 10, legacy: bool = False) -> dict[str, np.ndarray]:
    """Tiny batches in the official layout (dict with bytes keys, data uint8 (n, 3072), labels list).
    Channel c of every image is filled with 40 * c + (index mod 40) so layout and order are checkable.
    ``legacy``: name numpy's array rebuilder ``numpy.core...`` as the official (NumPy 1.x) files do."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    start = 0
    for fname in CIFAR_FILES:
        n = n_test if fname == "test_batch" else per_batch
        idx = np.arange(start, start + n) if fname != "test_batch" else np.arange(n)
        start += 0 if fname == "test_batch" else n
        img = np.zeros((n, 3, 32, 32), np.uint8)
        for c in range(3):
            img[:, c] = (40 * c + idx % 40)[:, None, None]
        labels = [int(i % 10) for i in idx]
        batch = {b"batch_label": fname.encode(), b"labels": labels, b"data": img.reshape(n, 3072),
                 b"filenames": [f"{i}.png".encode() for i in idx]}
        payload = pickle.dumps(batch, protocol=2)
        if legacy:  # protocol 2 names globals as newline-terminated text, so a plain replace is safe
            assert b"numpy._core.multiarray\n" in payload
            payload = payload.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        (folder / fname).write_bytes(payload)
        out[fname] = img
    return out


@pytest.mark.parametrize("layout, legacy", [("batches_dir", False), ("flat", False), ("batches_dir", True)])
def test_cifar10_loader(layout: str, legacy: bool, tmp_path: Path):
    folder = tmp_path / "cifar-10-batches-py" if layout == "batches_dir" else tmp_path
    written = _write_cifar(folder, legacy=legacy)
    ds = load_dataset("cifar10", data_root=tmp_path)
    _assert_well_formed(ds, (3, 32, 32), 10, [20, 10, 10, 10])
    x_test, y_test = ds.split("test")
    np.testing.assert_allclose(x_test, written["test_batch"] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y_test, np.arange(10) % 10)
    idx = np.concatenate([np.rint(ds.split(s)[0][:, 0, 5, 7] * 255).astype(int) for s in SPLITS[:3]])
    assert sorted(idx) == list(range(40))
    for s in SPLITS[:3]:
        x, y = ds.split(s)
        i = np.rint(x[:, 0, 0, 0] * 255).astype(int)
        np.testing.assert_allclose(x[:, 2, 31, 31], (80 + i) / 255.0, atol=1e-6)  # channel order kept
        np.testing.assert_array_equal(y, i % 10)
    assert len(ds.info["channel_mean"]) == 3 and len(ds.info["channel_std"]) == 3
    assert ds.info["channel_mean"][1] == pytest.approx(ds.split("model_train")[0][:, 1].mean(), rel=1e-5)


def test_cifar10_missing_files_name_every_searched_path(tmp_path: Path):
    with pytest.raises(DatasetNotFoundError) as exc:
        load_dataset("cifar10", data_root=tmp_path)
    msg = str(exc.value)
    for fname in CIFAR_FILES:
        assert str(tmp_path.resolve() / "cifar-10-batches-py" / fname) in msg
        assert str(tmp_path.resolve() / fname) in msg
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="extract it"):
        load_dataset("cifar10", data_root=tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"garbage, not a pickle", "not a readable CIFAR-10 pickle"),
        (pickle.dumps([1, 2, 3]), "expected a dict"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), "missing 'data' or 'labels'"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "uint8 \\(n, 3072\\)"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "count mismatch"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 11]}), "out of range"),
        (pickle.dumps({b"data": _Evil(), b"labels": []}), "refusing to unpickle"),
    ],
)
def test_cifar10_corrupt_batch(payload: bytes, message: str, tmp_path: Path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder)
    (folder / "data_batch_3").write_bytes(payload)
    with pytest.raises(DatasetFormatError, match=message) as exc:
        load_dataset("cifar10", data_root=tmp_path)
    assert str(folder.resolve() / "data_batch_3") in str(exc.value)


def test_registry_has_the_shape_of_every_registry():
    """``register_dataset`` / ``get_dataset`` / ``list_datasets``."""
    assert data.list_datasets() == BUILTIN
    assert data.get_dataset("digits") is data.load_dataset("digits")
    with pytest.raises(TypeError, match="dataset 'toy' must be callable"):
        register_dataset("toy", "not a loader")  # type: ignore[arg-type]
