"""Tests of the main model (dynalay_env/model.py): configs, shapes, costs, checkpoints, provenance."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dynalay_env import buckets
from dynalay_env.model import (
    CheckpointError,
    FPIModel,
    LayerSpec,
    MainModel,
    ModelConfig,
    atomic_write_bytes,
    default_config,
    load_checkpoint,
    provenance_hash,
    provenance_of,
    save_checkpoint,
    weights_hash,
)

INPUT_SHAPES = {"mlp": (64,), "conv1d": (1, 40), "conv2d": (1, 8, 8)}
TINY_LAYERS = (LayerSpec(2, 3), LayerSpec(4, 3), LayerSpec(8, 5))
DATASET_META = {"name": "digits", "fingerprint": "0123456789abcdef"}


def tiny_config(family: str = "mlp", **overrides) -> ModelConfig:
    kwargs = dict(channels=8, head_hidden=16, layers=TINY_LAYERS)
    kwargs.update(overrides)
    return default_config(INPUT_SHAPES[family], 10, **kwargs)


def tiny_model(family: str = "mlp", seed: int = 0, **overrides) -> MainModel:
    torch.manual_seed(seed)
    return MainModel(tiny_config(family, **overrides)).eval()


def batch(model: MainModel, n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *model.input_shape, generator=g)


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "family"), [((64,), "mlp"), ((1, 40), "conv1d"), ((3, 32, 32), "conv2d")])
def test_default_config_picks_family_by_input_shape(shape, family) -> None:
    config = default_config(shape, 10)
    assert config.family == family
    assert config.input_shape == shape
    assert config.num_classes == 10
    assert len(config.layers) >= 2


@pytest.mark.parametrize("shape", [(), (1, 2, 3, 4)])
def test_default_config_rejects_unsupported_shapes(shape) -> None:
    with pytest.raises(ValueError, match=r"\(D,\), \(C, L\) or \(C, H, W\)"):
        default_config(shape, 10)


def test_default_config_applies_overrides() -> None:
    config = default_config((1, 40), 5, channels=12, solver="anderson")
    assert (config.channels, config.solver, config.num_classes) == (12, "anderson", 5)


def test_model_config_validates() -> None:
    with pytest.raises(ValueError, match="mlp, conv1d, conv2d"):
        ModelConfig(family="rnn", input_shape=(4,), num_classes=2)
    with pytest.raises(ValueError, match="fixed_point, anderson"):
        ModelConfig(family="mlp", input_shape=(4,), num_classes=2, solver="newton")
    with pytest.raises(ValueError, match="conv1d"):
        ModelConfig(family="conv1d", input_shape=(4,), num_classes=2)
    with pytest.raises(ValueError, match="at least one"):
        ModelConfig(family="mlp", input_shape=(4,), num_classes=2, layers=())


def test_model_config_dict_round_trip_through_json() -> None:
    config = tiny_config("conv1d", solver="anderson")
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


# --------------------------------------------------------------------------------------------------
# Interface and shapes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["mlp", "conv1d", "conv2d"])
def test_interface_shapes(family: str) -> None:
    model = tiny_model(family)
    assert isinstance(model, FPIModel)
    x = batch(model)
    n = x.shape[0]
    with torch.no_grad():
        z0 = model.encode(x)
        assert tuple(z0.shape) == (n, *model.state_shape)
        result = model.apply_layer(1, z0, z0)
        assert result.state.shape == z0.shape
        assert model.classify(result.state).shape == (n, 10)
        assert model.introspect(result.state).shape == (n, model.introspection_dim)
        assert model(x).shape == (n, 10)
        assert model(x, path=[2, 0]).shape == (n, 10)
    expected_state = {"mlp": (8,), "conv1d": (8, 20), "conv2d": (8, 2, 2)}[family]
    assert model.state_shape == expected_state
    assert model.introspection_dim == (8 if family == "mlp" else 16)
    assert model.num_layers == 3 and model.num_classes == 10


def test_forward_follows_the_given_path() -> None:
    model = tiny_model("mlp")
    x = batch(model)
    with torch.no_grad():
        x_emb = model.encode(x)
        z = model.apply_layer(2, x_emb, x_emb).state
        z = model.apply_layer(0, z, x_emb).state
        expected = model.classify(z)
        torch.testing.assert_close(model(x, path=[2, 0]), expected)
        torch.testing.assert_close(model(x, path=[]), model.classify(x_emb))
        assert not torch.allclose(model(x, path=[2, 0]), model(x, path=[0, 2]))


@pytest.mark.parametrize("family", ["mlp", "conv1d"])
def test_wrong_input_shape_names_expected_shape(family: str) -> None:
    model = tiny_model(family)
    bad = torch.zeros(2, 7) if family == "mlp" else torch.zeros(2, 40)
    expected = "[N, 64]" if family == "mlp" else "[N, 1, 40]"
    for call in (model.encode, model):
        with pytest.raises(ValueError) as info:
            call(bad)
        assert expected in str(info.value)
        assert str(tuple(bad.shape)) in str(info.value)


def test_apply_layer_out_of_range() -> None:
    model = tiny_model("mlp")
    z = torch.zeros(2, 8)
    for k in (-1, 3):
        with pytest.raises(ValueError, match=r"valid 0\.\.2"):
            model.apply_layer(k, z, z)


# --------------------------------------------------------------------------------------------------
# Costs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["mlp", "conv1d", "conv2d"])
def test_layers_differ_in_cost(family: str) -> None:
    models = [tiny_model(family)]
    if family != "conv2d":  # the real defaults of digits (mlp) and mnist1d (conv1d); conv2d's is slow to build
        models.append(MainModel(default_config(INPUT_SHAPES[family], 10)))
    for model in models:
        costs = model.cost_table()
        assert len(costs.iteration) == len(costs.injection) == model.num_layers
        assert len(set(costs.iteration)) == model.num_layers, costs.iteration
        assert all(c > 0 for c in (*costs.iteration, *costs.injection, costs.encoder, costs.head))


@pytest.mark.parametrize("family", ["mlp", "conv1d", "conv2d"])
def test_full_depth_flops_equal_the_hand_sum(family: str) -> None:
    model = tiny_model(family)
    x = batch(model, n=8)
    costs = model.cost_table()
    expected = torch.full((8,), float(costs.encoder + costs.head), dtype=torch.float64)
    with torch.no_grad():
        x_emb = model.encode(x)
        z = x_emb
        for k in range(model.num_layers):
            result = model.apply_layer(k, z, x_emb)
            z = result.state
            assert torch.equal(result.flops, result.iterations * costs.iteration[k])  # fixed_point: no mixing
            expected += costs.injection[k] + result.flops.double() + costs.head
    flops = model.full_depth_flops(x)
    assert flops.dtype == torch.float64 and flops.shape == (8,)
    torch.testing.assert_close(flops, expected, rtol=0, atol=0)


@pytest.mark.parametrize("solver", ["fixed_point", "anderson"])
@pytest.mark.parametrize("family", ["mlp", "conv1d", "conv2d"])
def test_full_depth_flops_equal_executed_flops(family: str, solver: str) -> None:
    """The cost table (encoder, injections, iterations, head at every visited state) counts exactly
    what FlopCounterMode sees when the full-depth path runs."""
    model = tiny_model(family, solver=solver)
    x = batch(model, n=8)
    buckets.reset_padding_stats()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        x_emb = model.encode(x)
        z = x_emb
        model.classify(z)
        for k in range(model.num_layers):
            z = model.apply_layer(k, z, x_emb).state
            model.classify(z)
    padded = buckets.padding_stats().padded_flops  # padding rows (dynalay_env.buckets) are not charged
    assert counter.get_total_flops() - padded == int(model.full_depth_flops(x).sum())


def test_calibrate_normalizer_sets_the_mean_full_depth_flops() -> None:
    model = tiny_model("conv1d")
    model.train()
    x = batch(model, n=64)
    assert model.cost_table().normalizer == 0.0
    value = model.calibrate_normalizer(x, batch_size=3)
    assert model.training, "calibration must restore the training flag"
    model.eval()
    expected = float(model.full_depth_flops(x).mean())
    assert value == pytest.approx(expected, rel=1e-12)
    assert float(model.compute_normalizer) == pytest.approx(expected, rel=1e-12)
    assert model.cost_table().normalizer == pytest.approx(expected, rel=1e-12)
    # Samples differ in iterations, so the mean is not just the cost of one sample.
    assert model.full_depth_flops(x).unique().numel() > 1


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, MainModel]:
    model = tiny_model("conv1d")
    model.calibrate_normalizer(batch(model, n=5))
    path = tmp_path / "run" / "main_model.pt"
    save_checkpoint(path, model, DATASET_META, extra={"note": "test"})
    return path, model


def _rewrite_payload(path: Path, edit) -> None:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    edit(payload)
    torch.save(payload, path)


def test_checkpoint_round_trip(saved) -> None:
    path, model = saved
    ckpt = load_checkpoint(path, expected_dataset="digits", expected_config=model.config)
    loaded = ckpt.model
    assert not loaded.training
    assert loaded.config == model.config
    assert weights_hash(loaded) == weights_hash(model)
    assert ckpt.provenance == provenance_hash(model, DATASET_META["fingerprint"])
    assert ckpt.dataset == DATASET_META
    assert ckpt.extra == {"note": "test"}
    assert loaded.cost_table() == model.cost_table()
    x = batch(model, n=7, seed=3)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(loaded.full_depth_flops(x), model.full_depth_flops(x))


def test_checkpoint_is_written_atomically(saved) -> None:
    path, _ = saved
    assert sorted(os.listdir(path.parent)) == ["main_model.pt"]


def test_failed_write_leaves_old_file_and_no_temp_file(saved, monkeypatch: pytest.MonkeyPatch) -> None:
    path, model = saved
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    other = tiny_model("conv1d", seed=1)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, other, DATASET_META)
    monkeypatch.undo()
    assert sorted(os.listdir(path.parent)) == ["main_model.pt"]
    assert path.read_bytes() == before


def test_atomic_write_creates_parent_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(target, b"abc")
    assert target.read_bytes() == b"abc"
    assert os.listdir(target.parent) == ["file.bin"]


def test_truncated_checkpoint(saved) -> None:
    path, _ = saved
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(path)


def test_random_bytes_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "noise.pt"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_foreign_torch_file(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(path)


def test_edited_weights_fail_the_hash(saved) -> None:
    path, _ = saved

    def edit(payload):
        payload["state_dict"]["head_out.weight"] += 0.01

    _rewrite_payload(path, edit)
    with pytest.raises(CheckpointError, match="hash"):
        load_checkpoint(path)


def test_other_format_version(saved) -> None:
    path, _ = saved
    _rewrite_payload(path, lambda p: p.update(format_version=99))
    with pytest.raises(CheckpointError, match="99"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_config(saved) -> None:
    path, _ = saved
    _rewrite_payload(path, lambda p: p["state_dict"].pop("head_out.bias"))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_checkpoint_older_than_input_normalisation_loads_with_identity(saved) -> None:
    """A format-1 file saved before MainModel carried input_mean / input_std (its hash over what it
    stored) loads with mean 0 and std 1, what it was trained with, and keeps its id."""
    path, model = saved

    def drop_normalisation(payload):
        for key in ("input_mean", "input_std"):
            payload["state_dict"].pop(key)
        h = hashlib.sha256()
        for name, tensor in payload["state_dict"].items():
            h.update(name.encode())
            h.update(tensor.contiguous().numpy().tobytes())
        payload["weights_hash"] = h.hexdigest()[:16]

    _rewrite_payload(path, drop_normalisation)
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt.model.input_mean, torch.zeros_like(model.input_mean))
    assert torch.equal(ckpt.model.input_std, torch.ones_like(model.input_std))
    x = batch(model, n=7, seed=3)
    with torch.no_grad():
        assert torch.equal(ckpt.model(x), model(x))  # the saved model's normalisation was identity too
    assert provenance_of(ckpt.model)["id"] == ckpt.provenance


def test_checkpoint_missing_one_normalisation_buffer_does_not_fit(saved) -> None:
    path, _ = saved
    _rewrite_payload(path, lambda p: p["state_dict"].pop("input_std"))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


@pytest.mark.parametrize("key", ["dataset", "state_dict", "weights_hash", "provenance"])
def test_checkpoint_with_missing_field(saved, key: str) -> None:
    path, _ = saved
    _rewrite_payload(path, lambda p: p.pop(key))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_wrong_dataset_names_both(saved) -> None:
    path, _ = saved
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, expected_dataset="mnist1d")
    assert "'digits'" in str(info.value) and "'mnist1d'" in str(info.value)


def test_wrong_config(saved) -> None:
    path, model = saved
    other = dataclass_replace(model.config, channels=16)
    with pytest.raises(CheckpointError, match="config"):
        load_checkpoint(path, expected_config=other)


def dataclass_replace(config: ModelConfig, **changes) -> ModelConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_checkpoint(tmp_path / "nowhere.pt")


def test_save_needs_dataset_metadata(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        save_checkpoint(tmp_path / "m.pt", tiny_model(), {"name": "digits"})
    assert not (tmp_path / "m.pt").exists()


# --------------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------------


def test_provenance_tracks_weights_config_and_dataset() -> None:
    model = tiny_model("mlp")
    base = provenance_hash(model, "aaaa")
    assert provenance_hash(model, "aaaa") == base
    assert provenance_hash(copy.deepcopy(model), "aaaa") == base
    assert provenance_hash(model, "bbbb") != base

    edited = copy.deepcopy(model)
    with torch.no_grad():
        edited.layers[0].up.weight[0, 0] += 1e-3
    assert weights_hash(edited) != weights_hash(model)
    assert provenance_hash(edited, "aaaa") != base

    buffer_edited = copy.deepcopy(model)
    buffer_edited.compute_normalizer.fill_(123.0)
    assert provenance_hash(buffer_edited, "aaaa") != base

    # Same weights under another config (the solver) are another model.
    other_config = MainModel(dataclass_replace(model.config, solver="anderson"))
    other_config.load_state_dict(model.state_dict())
    assert weights_hash(other_config) == weights_hash(model)
    assert provenance_hash(other_config, "aaaa") != base


def test_weights_hash_format() -> None:
    digest = weights_hash(tiny_model())
    assert len(digest) == 16 and set(digest) <= set("0123456789abcdef")
    assert weights_hash(tiny_model(seed=1)) != digest


def test_atomic_write_gives_the_mode_a_plain_open_would(tmp_path: Path) -> None:
    """mkstemp's private 0600 must not leak into reports and checkpoints others should read."""
    atomic_write_bytes(tmp_path / "report.json", b"{}")
    (tmp_path / "plain.json").write_bytes(b"{}")
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == (tmp_path / "plain.json").stat().st_mode & 0o777
