"""MainModel: encoder -> bank of K FPI layers -> one shared exit head, plus its checkpoint format.

The environment talks to a main model only through the small interface :class:`FPIModel`
(encode, apply a layer, classify, introspect, cost table). :class:`MainModel` is the default
implementation; users can plug in their own FPI/DEQ model by implementing the same methods.

Shapes: inputs ``x`` are ``[N, *input_shape]``; states ``z`` are ``[N, *state_shape]`` where
``state_shape`` is ``(C,)`` for the ``mlp`` family, ``(C, L)`` for ``conv1d`` and ``(C, H, W)`` for
``conv2d``. Compute is counted in FLOPs (2 x multiply-accumulates, as ``FlopCounterMode`` counts).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynalay_env import buckets, version
from dynalay_env.atomic import atomic_write_bytes
from dynalay_env.fpi import LAYER_FAMILIES, FPILayer, SolveResult, get_solver

CHECKPOINT_FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is corrupt, of another format, or does not match what the caller expected."""


# --------------------------------------------------------------------------------------------------
# Configuration and costs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """One FPI layer: bottleneck ``rank``, ``kernel_size`` (conv only), stopping rule."""

    rank: int
    kernel_size: int = 3
    tol: float = 1e-3
    max_iter: int = 60


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`MainModel` (stored in checkpoints).

    ``input_shape``: per-example input shape, e.g. ``(1, 40)`` for MNIST-1D.
    ``channels``: state channels C. ``encoder_stride``: spatial stride of the encoder (conv only).
    ``lipschitz``: contraction constant of every layer's map, in (0, 1).
    ``inject_kernel``: kernel of each layer's injection convs (conv only; outside the contraction).
    ``head_grid``: what the shared head sees of a conv state: 0 = the pooled channels (mean and max
    over space, as :meth:`MainModel.introspect`); ``g > 0`` = the state average-pooled to a ``g``
    (conv1d) or ``g x g`` (conv2d) grid and flattened, so the head keeps a coarse layout.
    """

    family: str
    input_shape: tuple[int, ...]
    num_classes: int
    channels: int = 32
    layers: tuple[LayerSpec, ...] = (LayerSpec(4, 3), LayerSpec(12, 5), LayerSpec(32, 5))
    encoder_kernel: int = 3
    encoder_stride: int = 2
    head_hidden: int = 64
    head_grid: int = 0
    inject_kernel: int = 1
    lipschitz: float = 0.9
    solver: str = "fixed_point"
    backward: str = "phantom"

    def __post_init__(self) -> None:
        if self.family not in LAYER_FAMILIES:
            raise ValueError(f"unknown layer family {self.family!r}; valid families: {', '.join(LAYER_FAMILIES)}")
        get_solver(self.solver)
        expected = {"mlp": 1, "conv1d": 2, "conv2d": 3}[self.family]
        if len(self.input_shape) != expected:
            raise ValueError(f"family {self.family!r} expects inputs of {expected} dims per example, "
                             f"got input_shape {self.input_shape}")
        if not self.layers:
            raise ValueError("a MainModel needs at least one FPI layer")
        if self.head_grid < 0 or (self.head_grid > 0 and self.family == "mlp"):
            raise ValueError(f"head_grid must be 0, or > 0 for a conv family; got {self.head_grid} "
                             f"for family {self.family!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the config (tuples as lists), as checkpoints store it."""
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """The config a :meth:`to_dict` dict describes (lists back to tuples, layer specs rebuilt)."""
        d = dict(d)
        d["input_shape"] = tuple(d["input_shape"])
        d["layers"] = tuple(LayerSpec(**spec) for spec in d["layers"])
        return cls(**d)


def default_config(input_shape: tuple[int, ...], num_classes: int, **overrides: Any) -> ModelConfig:
    """The default model for a dataset's input shape: ``mlp`` for vectors, ``conv1d`` for signals
    ``(C, L)``, ``conv2d`` for images ``(C, H, W)``."""
    family = {1: "mlp", 2: "conv1d", 3: "conv2d"}.get(len(input_shape))
    if family is None:
        raise ValueError(f"no default model for inputs of shape {input_shape}; expected (D,), (C, L) or (C, H, W)")
    base: dict[str, Any] = dict(family=family, input_shape=tuple(input_shape), num_classes=num_classes)
    if family == "mlp":
        base.update(channels=128, layers=(LayerSpec(16), LayerSpec(48), LayerSpec(128)), encoder_stride=1)
    elif family == "conv2d":
        # Images: a stride-4 encoder (28x28 -> 7x7, 32x32 -> 8x8) keeps an FPI iteration on the
        # order of a MFLOP per image, so pre-training on MNIST-sized data is practical on a CPU.
        # 3x3 injections give every layer a real conv stage (outside the contraction); the head sees
        # a 2x2 grid, coarse enough that the encoder state alone classifies poorly (depth matters)
        # yet with the layout that globally pooled channels lose (those cap full depth near 0.75 on
        # MNIST-5k).
        base.update(encoder_kernel=5, encoder_stride=4, inject_kernel=3, head_grid=2,
                    layers=(LayerSpec(4, 3), LayerSpec(12, 3), LayerSpec(32, 3)))
    base.update(overrides)
    return ModelConfig(**base)


@dataclass(frozen=True)
class CostTable:
    """Per-sample FLOPs of each piece of the model.

    ``injection[k]`` and ``iteration[k]`` are for layer k (0-based); a step through layer k costs
    ``injection[k] + iterations * iteration[k]``, with at most ``max_iterations[k]`` iterations. ``normalizer`` is the mean FLOPs of the full-depth
    path (layers 1..K once each, encoder and head at every visited state included) on ``val``;
    compute / normalizer = 1.0 is the full-depth model.
    """

    encoder: int
    injection: tuple[int, ...]
    iteration: tuple[int, ...]
    head: int
    normalizer: float
    max_iterations: tuple[int, ...] = ()

    #: What the table's numbers count, for every figure that reports a cost.
    unit = "FLOPs (executed)"

    # The cost of a path is written here once; the env core, normaliser calibration, path
    # enumeration (pre-training report, oracle) and replay all charge through these methods.

    def reset_flops(self) -> float:
        """FLOPs charged when an episode starts: the encoder and the head at the encoder state
        (the observation needs the head's statistics)."""
        return float(self.encoder + self.head)

    def step_flops(self, k: int, solver_flops: Any) -> Any:
        """FLOPs of one step through layer ``k`` (0-based): the injection, the FLOPs the solver
        executed (``solver_flops``: a tensor ``[N]`` for a batch, giving float64 ``[N]``, or a
        number), and the head at the state reached."""
        if isinstance(solver_flops, Tensor):
            solver_flops = solver_flops.double()
        return solver_flops + float(self.injection[k] + self.head)

    def step_cost(self, k: int, result: SolveResult) -> Tensor:
        """The cost of one step through layer ``k`` for each row of ``result`` (float64 ``[N]``), in
        this table's unit: here the FLOPs the solver executed (:meth:`step_flops`). The env, path
        enumeration and replay charge every step through this method."""
        return self.step_flops(k, result.flops)

    def worst_step_flops(self) -> tuple[float, ...]:
        """Per layer, the largest FLOPs of one step: ``max_iterations[k]`` plain iterations
        (solvers that mix iterates add their mixing on top)."""
        return tuple(self.step_flops(k, float(self.max_iterations[k] * self.iteration[k]))
                     for k in range(len(self.max_iterations)))

    def with_per_state_flops(self, flops: int) -> CostTable:
        """This table for an env that also runs ``flops`` per sample at every visited state, as it
        runs the head (the ``router`` observation group): the head's entry grows by ``flops``, so
        resets, steps and worst cases charge it; the normaliser stays the full-depth model's."""
        if flops < 0:
            raise ValueError(f"per-state FLOPs must be >= 0, got {flops!r}")
        return dataclasses.replace(self, head=self.head + int(flops))

    def pieces(self) -> dict[str, Any]:
        """The per-sample FLOPs of each piece, as plain JSON values (for reports)."""
        return {"encoder": self.encoder, "injection": list(self.injection), "iteration": list(self.iteration),
                "head": self.head}


@dataclass
class PathRun:
    """A batch run along one path: ``state`` ``[N, *state_shape]`` reached, ``flops`` ``[N]``
    float64 charged (see :meth:`CostTable.step_flops`), ``results`` the solve of each step."""

    x_emb: Tensor
    state: Tensor
    flops: Tensor
    results: list[SolveResult]


def head_and_introspection(model: FPIModel, z: Tensor) -> tuple[Tensor, Tensor]:
    """The head's logits ``[N, num_classes]`` and the introspection ``[N, introspection_dim]`` of
    states ``z``: what runs at every visited state. A model with ``classify_introspection`` (whose
    head reads the introspection) introspects each state once for both."""
    hidden = model.introspect(z)
    head = getattr(model, "classify_introspection", None)
    if head is None or not getattr(model, "head_reads_introspection", True):
        return model.classify(z), hidden
    return head(hidden), hidden


@torch.no_grad()
def run_path(model: FPIModel, x: Tensor, path: Sequence[int], costs: CostTable | None = None) -> PathRun:
    """Encode ``x`` ``[N, *input_shape]`` and apply the layers of ``path`` (0-based) to the whole
    batch, charging the reset and every step as the env does. ``costs`` defaults to the model's."""
    costs = model.cost_table() if costs is None else costs
    x_emb = model.encode(x)
    z = x_emb
    flops = torch.full((x.shape[0],), costs.reset_flops(), dtype=torch.float64, device=x.device)
    results = []
    for k in path:
        result = model.apply_layer(int(k), z, x_emb)
        z = result.state
        flops += costs.step_cost(int(k), result)
        results.append(result)
    return PathRun(x_emb, z, flops, results)


# --------------------------------------------------------------------------------------------------
# The interface the environment uses
# --------------------------------------------------------------------------------------------------


@runtime_checkable
class FPIModel(Protocol):
    """The interface DynaLay-Gym needs from a main model (batched; see module docstring for shapes)."""

    num_layers: int
    """K, the number of FPI layers: the action space is ``Discrete(K + 1)``."""
    num_classes: int
    """Number of classes the head predicts."""
    input_shape: tuple[int, ...]
    """Shape of one input example, without the batch dimension (checked against the dataset's)."""
    state_shape: tuple[int, ...]
    """Shape of one example's hidden state ``z``, without the batch dimension."""

    def encode(self, x: Tensor) -> Tensor:
        """``[N, *input_shape] -> z0 [N, *state_shape]``; z0 is also the input embedding."""

    def apply_layer(self, k: int, z: Tensor, x_emb: Tensor) -> SolveResult:
        """Solve layer ``k`` (0-based) from state ``z`` with input embedding ``x_emb``."""

    def classify(self, z: Tensor) -> Tensor:
        """``[N, *state_shape] -> logits [N, num_classes]``."""

    def introspect(self, z: Tensor) -> Tensor:
        """``[N, *state_shape] -> [N, introspection_dim]`` pooled summary of the state."""

    def cost_table(self) -> CostTable:
        """The model's FLOP costs: encoder, per-layer injection and iteration, head, the compute
        normaliser (> 0) and each layer's maximum iterations.
        """


class MainModel(nn.Module):
    """Encoder -> K FPI layers of different cost -> shared head (see :class:`ModelConfig`).

    The head pools the state (mean and max over space, or a coarse grid: ``head_grid``), so it
    classifies *any* state, whichever path produced it; EXIT is meaningful after every path.

    The model carries its own input normalisation: ``encode`` standardises raw inputs with the
    buffers ``input_mean`` / ``input_std`` (per input channel, i.e. per entry of ``input_shape[0]``;
    identity by default), which pre-training sets from the ``model_train`` split and the checkpoint
    stores. Callers always pass raw inputs.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        in_ch = config.input_shape[0]
        if config.family == "mlp":
            self.encoder: nn.Module = nn.Linear(in_ch, c)
            self.state_shape: tuple[int, ...] = (c,)
        else:
            conv = nn.Conv1d if config.family == "conv1d" else nn.Conv2d
            k, s = config.encoder_kernel, config.encoder_stride
            self.encoder = conv(in_ch, c, k, stride=s, padding=k // 2)
            if config.family == "conv2d":
                # He init for the ReLU that follows: PyTorch's default (gain 1/sqrt(3)) shrinks the
                # state's scale, and with it the head's logits and gradients, so that image models sat
                # at chance for epochs. (conv1d keeps the default its recipes were tuned with.)
                nn.init.kaiming_normal_(self.encoder.weight, nonlinearity="relu")
                nn.init.zeros_(self.encoder.bias)
            spatial = tuple((n + 2 * (k // 2) - k) // s + 1 for n in config.input_shape[1:])
            self.state_shape = (c, *spatial)
        self.layers = nn.ModuleList(
            FPILayer(config.family, self.state_shape, rank=spec.rank, kernel_size=spec.kernel_size,
                     lipschitz=config.lipschitz, tol=spec.tol, max_iter=spec.max_iter,
                     solver=config.solver, backward=config.backward, name=f"layer{i + 1}",  # type: ignore[arg-type]
                     inject_kernel=config.inject_kernel)
            for i, spec in enumerate(config.layers))
        self.head_hidden = nn.Linear(self.head_dim, config.head_hidden)
        self.head_out = nn.Linear(config.head_hidden, config.num_classes)
        # Fixed at pre-training time on `val`; co-training never moves it (docs/design.md).
        self.register_buffer("compute_normalizer", torch.zeros((), dtype=torch.float64))
        # Raw inputs -> (x - mean) / std per input channel; identity until set_input_normalization.
        self.register_buffer("input_mean", torch.zeros(in_ch))
        self.register_buffer("input_std", torch.ones(in_ch))

    @torch.no_grad()
    def set_input_normalization(self, mean: Tensor, std: Tensor) -> None:
        """Standardise inputs with per-channel ``mean`` / ``std`` (shape ``[input_shape[0]]``, raw
        input units) from now on; stored in the checkpoint with the weights."""
        mean, std = torch.as_tensor(mean).flatten(), torch.as_tensor(std).flatten()
        if mean.shape != self.input_mean.shape or std.shape != self.input_std.shape:
            raise ValueError(f"input normalisation needs mean and std of shape {tuple(self.input_mean.shape)} "
                             f"(one per input channel), got {tuple(mean.shape)} and {tuple(std.shape)}")
        if not bool((std > 0).all()) or not bool(torch.isfinite(mean).all()):
            raise ValueError(f"input std must be > 0 and mean finite, got mean {mean.tolist()} std {std.tolist()}")
        self.input_mean.copy_(mean)
        self.input_std.copy_(std)

    # ---- interface -------------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        """K, the number of FPI layers (actions ``1..K``)."""
        return len(self.layers)

    @property
    def num_classes(self) -> int:
        """Number of classes the head predicts."""
        return self.config.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example, without the batch dimension (e.g. ``(1, 40)``)."""
        return self.config.input_shape

    @property
    def introspection_dim(self) -> int:
        """Width D of :meth:`introspect`'s output: the state's for ``mlp`` models, else 2C (per-channel
        mean and max)."""
        return self.state_shape[0] if self.config.family == "mlp" else 2 * self.state_shape[0]

    @property
    def head_dim(self) -> int:
        """Width of what the head sees (:meth:`head_features`)."""
        grid = self.config.head_grid
        if grid == 0:
            return self.introspection_dim
        return self.state_shape[0] * grid ** (len(self.state_shape) - 1)

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``[N, *input_shape]``."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"MainModel expects inputs of shape [N, {', '.join(map(str, self.input_shape))}], "
                             f"got {tuple(x.shape)}")

    def normalize_input(self, x: Tensor) -> Tensor:
        """Raw ``x`` ``[N, *input_shape]`` -> standardised, per input channel."""
        view = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.input_mean.view(view)) / self.input_std.view(view)

    def encode(self, x: Tensor) -> Tensor:
        """Raw inputs ``x`` ``[N, *input_shape]`` -> the initial state ``[N, *state_shape]``
        (standardised, encoded, ReLU)."""
        self.check_input(x)
        if self.config.family == "mlp" or x.device.type != "cpu" or torch.is_grad_enabled():
            return F.relu(self.encoder(self.normalize_input(x)))
        # A convolution: on a bucketed row count, as the FPI layers run theirs (dynalay_env.buckets).
        return F.relu(buckets.call_bucketed(self.encoder, self.normalize_input(x), flops_per_row=self.encoder_flops()))

    def warm_bucketed_shapes(self, x: Tensor, limit: int) -> int:
        """Run the encoder, every layer and the head once at every bucket size up to ``limit`` rows
        (:func:`dynalay_env.buckets.bucket_sizes`), largest first, on rows of ``x`` ``[n, *input_shape]``
        (repeated when ``n`` is smaller), without gradients and untallied. Returns the number of sizes run.

        The per-shape caches of torch's CPU convolutions and the allocator then hold every shape a
        batch of up to ``limit`` rows can meet, so a long run's memory is flat from its first step
        instead of growing as rarer group sizes first occur. A no-op (0) where nothing is bucketed:
        the ``mlp`` family, an accelerator, padding off."""
        if self.config.family == "mlp" or x.device.type != "cpu" or buckets.bucket_ratio() <= 1.0:
            return 0
        sizes = buckets.bucket_sizes(limit)
        with torch.no_grad(), buckets.untallied():
            for size in reversed(sizes):
                rows = x.index_select(0, torch.arange(size, device=x.device) % x.shape[0])
                x_emb = self.encode(rows)
                for layer in self.layers:
                    layer.warm_kernels(x_emb, x_emb)
                self.classify(x_emb)
        return len(sizes)

    def apply_layer(self, k: int, z: Tensor, x_emb: Tensor) -> SolveResult:
        """Solve layer ``k`` (0-based) from state ``z`` with the input embedding ``x_emb``, both
        ``[N, *state_shape]``.

        Returns the :class:`~dynalay_env.fpi.SolveResult`: the new state and, per sample, the iterations,
        the final residual and the FLOPs executed. ``ValueError`` for ``k`` outside ``0..K-1``.
        """
        if not 0 <= k < self.num_layers:
            raise ValueError(f"layer index {k} out of range; valid 0..{self.num_layers - 1}")
        return self.layers[k](z, x_emb)

    def introspect(self, z: Tensor) -> Tensor:
        """The ``hidden`` observation of states ``z``: ``[N, D]`` (:attr:`introspection_dim`)."""
        if self.config.family == "mlp":
            return z
        flat = z.flatten(2)
        return torch.cat([flat.mean(dim=2), flat.amax(dim=2)], dim=1)

    def head_features(self, z: Tensor) -> Tensor:
        """What the head sees: ``[N, head_dim]`` (the pooled channels, or a ``head_grid`` grid)."""
        grid = self.config.head_grid
        if grid == 0:
            return self.introspect(z)
        pool = F.adaptive_avg_pool1d if z.dim() == 3 else F.adaptive_avg_pool2d
        return pool(z, grid).flatten(1)

    def classify(self, z: Tensor) -> Tensor:
        """The head's logits ``[N, num_classes]`` at states ``z`` ``[N, *state_shape]``."""
        return self.head_out(F.relu(self.head_hidden(self.head_features(z))))

    @property
    def head_reads_introspection(self) -> bool:
        """True when the head's input is the introspection itself (``head_grid == 0``), so
        :meth:`classify_introspection` applies."""
        return self.config.head_grid == 0

    def classify_introspection(self, h: Tensor) -> Tensor:
        """Logits ``[N, num_classes]`` from an introspection ``h = introspect(z)``: lets the env
        introspect a state once for both the observation and the head (optional in :class:`FPIModel`).
        Only valid when :attr:`head_reads_introspection`; a grid head needs :meth:`classify`."""
        if not self.head_reads_introspection:
            raise ValueError(f"this model's head reads a {self.config.head_grid}x{self.config.head_grid} grid of the "
                             "state, not its introspection: call classify(z)")
        return self.head_out(F.relu(self.head_hidden(h)))

    def forward(self, x: Tensor, path: list[int] | tuple[int, ...] | None = None) -> Tensor:
        """Logits after applying ``path`` (0-based layer indices; default: full depth 0..K-1)."""
        x_emb = self.encode(x)
        z = x_emb
        for k in (range(self.num_layers) if path is None else path):
            z = self.apply_layer(k, z, x_emb).state
        return self.classify(z)

    # ---- costs -----------------------------------------------------------------------------------

    def encoder_flops(self) -> int:
        """FLOPs of encoding one example."""
        if self.config.family == "mlp":
            return 2 * self.encoder.weight.numel()
        return 2 * self.encoder.weight.numel() * math.prod(self.state_shape[1:])

    def head_flops(self) -> int:
        """FLOPs of one head evaluation on one example."""
        return 2 * (self.head_hidden.weight.numel() + self.head_out.weight.numel())

    def cost_table(self) -> CostTable:
        """The model's :class:`CostTable` (FLOPs per example; the normaliser fixed at pre-training)."""
        return CostTable(
            encoder=self.encoder_flops(),
            injection=tuple(layer.injection_flops() for layer in self.layers),
            iteration=tuple(layer.flops_per_iteration() for layer in self.layers),
            head=self.head_flops(),
            normalizer=float(self.compute_normalizer),
            max_iterations=tuple(layer.max_iter for layer in self.layers),
        )

    @torch.no_grad()
    def full_depth_flops(self, x: Tensor) -> Tensor:
        """Per-sample FLOPs ``[N]`` (float64) of the full-depth path with the head at every state."""
        return run_path(self, x, range(self.num_layers)).flops

    @torch.no_grad()
    def calibrate_normalizer(self, x_val: Tensor, batch_size: int = 1024) -> float:
        """Set ``compute_normalizer`` to the mean full-depth FLOPs on ``x_val``; returns it."""
        was_training = self.training
        self.eval()
        total = torch.cat([self.full_depth_flops(x_val[i:i + batch_size])
                           for i in range(0, x_val.shape[0], batch_size)])
        self.train(was_training)
        self.compute_normalizer.fill_(float(total.mean()))
        return float(self.compute_normalizer)

    @torch.no_grad()
    def refresh_operator_norms(self, n_power_iterations: int = 100) -> list[float]:
        """Converge the power iterations of every contractive map; returns the measured norms."""
        norms = []
        for layer in self.layers:
            norms += [layer.down.refresh_norm(n_power_iterations), layer.up.refresh_norm(n_power_iterations)]
        return norms


# --------------------------------------------------------------------------------------------------
# Provenance and checkpoints
# --------------------------------------------------------------------------------------------------


def package_version() -> str:
    """The version of the installed ``dynalay_env`` (``dynalay_env.__version__``)."""
    return version.__version__


def weights_hash(model: nn.Module) -> str:
    """sha256 (16 hex chars) of all parameters and buffers, in state-dict order."""
    return _state_hash(model.state_dict())


def _state_hash(state: Mapping[str, Tensor]) -> str:
    h = hashlib.sha256()
    for name, tensor in state.items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


#: Buffers MainModel gained within checkpoint format 1: a checkpoint without them (only them) was
#: trained on raw inputs, so it loads with identity normalisation (mean 0, std 1).
_IDENTITY_NORMALISATION = ("input_mean", "input_std")


def provenance_hash(model: MainModel, dataset_fingerprint: str) -> str:
    """One id for (weights, config, dataset, package version): what a result can be traced to."""
    payload = json.dumps({"weights": weights_hash(model), "config": model.config.to_dict(),
                          "dataset": dataset_fingerprint, "version": package_version()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def recipe_version() -> int:
    """The current ``dynalay_env.version.RECIPE_VERSION`` (read at call time, so the one constant rules)."""
    return version.RECIPE_VERSION


def config_hash(config: ModelConfig) -> str:
    """sha256 (16 hex chars) of a model config."""
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


#: Attribute under which :func:`load_checkpoint` leaves the identity a checkpoint was saved with.
_SAVED_PROVENANCE = "saved_provenance"


def provenance_of(model: FPIModel, dataset: Any = None) -> dict[str, Any]:
    """The identity of a main model, as every results file records it (``model_provenance``).

    ``dataset``: a :class:`~dynalay_env.datasets.Dataset`, a mapping with ``name`` and ``fingerprint``,
    or None (then the dataset the model's checkpoint names, if it was loaded from one). Returns
    ``id`` (:func:`provenance_hash`: weights, config, dataset fingerprint, package version),
    ``weights_hash``, ``config_hash``, ``dataset`` (``name``, ``fingerprint``), ``package_version``
    (of the code that made the model) and ``recipe_version`` (``RECIPE_VERSION`` of the recipe that
    pre-trained it; None for checkpoints older than recipe versions). A model loaded by
    :func:`load_checkpoint` and unchanged since keeps the id and versions stored in its file; a
    model whose weights moved (co-training) is described as it is now, by this code.
    """
    saved = getattr(model, _SAVED_PROVENANCE, None) or {}
    if dataset is None:
        dataset = saved.get("dataset") or {}
    if isinstance(dataset, Mapping):
        name, fingerprint = dataset.get("name"), dataset.get("fingerprint")
    else:
        name, fingerprint = getattr(dataset, "name", None), getattr(dataset, "fingerprint", None)
    weights = weights_hash(model) if isinstance(model, nn.Module) else None
    if not isinstance(model, MainModel):
        return {"id": f"user-model:{type(model).__name__}", "weights_hash": weights, "config_hash": None,
                "dataset": {"name": name, "fingerprint": fingerprint}, "package_version": package_version(),
                "recipe_version": None}
    unchanged = saved.get("weights_hash") == weights and (saved.get("dataset") or {}).get("fingerprint") == fingerprint
    return {"id": saved["id"] if unchanged else provenance_hash(model, str(fingerprint)),
            "weights_hash": weights, "config_hash": config_hash(model.config),
            "dataset": {"name": name, "fingerprint": fingerprint},
            "package_version": saved.get("package_version") if unchanged else package_version(),
            "recipe_version": getattr(model, "recipe_version", recipe_version())}


def format_provenance(record: dict[str, Any]) -> str:
    """One line of Markdown for a :func:`provenance_of` record (the reports' "Main model" line)."""
    data = record.get("dataset") or {}
    return (f"Main model `{record.get('id')}` (weights `{record.get('weights_hash')}`, config "
            f"`{record.get('config_hash')}`), dataset {data.get('name')} (fingerprint `{data.get('fingerprint')}`), "
            f"dynalay_env {record.get('package_version')}, recipe version {record.get('recipe_version')}.")


@dataclass
class Checkpoint:
    """A loaded main model with the metadata it was saved with."""

    model: MainModel
    dataset: dict[str, Any]
    provenance: str
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# Expert layers: a main model with a router (trained by dynalay_env.experts)
# --------------------------------------------------------------------------------------------------


class Router(nn.Module):
    """Top-1 router: flattened state ``[N, state_dim]`` -> layer logits ``[N, K]`` through one hidden
    ReLU layer of width ``hidden``."""

    def __init__(self, state_dim: int, num_layers: int, hidden: int = 32) -> None:
        super().__init__()
        self.state_dim, self.num_layers, self.hidden = int(state_dim), int(num_layers), int(hidden)
        self.inner = nn.Linear(self.state_dim, self.hidden)
        self.out = nn.Linear(self.hidden, self.num_layers)

    def forward(self, z: Tensor) -> Tensor:
        """Logits ``[N, K]`` of the layer to apply next, from states ``z`` ``[N, *state_shape]``."""
        return self.out(F.relu(self.inner(z.flatten(1))))

    def flops(self) -> int:
        """Forward FLOPs for one example (2 x multiply-accumulates of both linear maps)."""
        return 2 * (self.inner.weight.numel() + self.out.weight.numel())


class ExpertModel(MainModel):
    """A :class:`~dynalay_env.model.MainModel` whose layers are experts, with its :class:`Router`.

    The router is a submodule: its weights are in ``state_dict`` (so in the weights hash and the
    provenance id), and :func:`~dynalay_env.model.save_checkpoint` stores :meth:`router_spec` under
    the checkpoint key ``router`` so that :func:`~dynalay_env.model.load_checkpoint` rebuilds this
    class. The env sees a plain :class:`FPIModel` unless its ``router`` observation group is on; the
    router policies read the router too. Expert pre-training: :mod:`dynalay_env.experts`.
    """

    def __init__(self, config: ModelConfig, router: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        spec = {"hidden": 32, **(router or {})}
        unknown = set(spec) - {"hidden"}
        if unknown:
            raise ValueError(f"unknown router setting(s) {sorted(unknown)}; valid: ['hidden']")
        self.router = Router(math.prod(self.state_shape), self.num_layers, int(spec["hidden"]))

    def router_spec(self) -> dict[str, Any]:
        """What rebuilds the router (its weights travel in the state dict): ``{"hidden": width}``."""
        return {"hidden": self.router.hidden}

    @torch.no_grad()
    def route(self, z: Tensor) -> Tensor:
        """The router's top-1 layer ``[N]`` (0-based) at states ``z`` ``[N, *state_shape]``."""
        return self.router(z).argmax(1)


def save_checkpoint(path: str | os.PathLike, model: MainModel, dataset: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> str:
    """Save ``model`` atomically. ``dataset``: at least ``name`` and ``fingerprint``. Returns the
    provenance hash."""
    for key in ("name", "fingerprint"):
        if key not in dataset:
            raise ValueError(f"dataset metadata needs {key!r}; got keys {sorted(dataset)}")
    provenance = provenance_hash(model, dataset["fingerprint"])
    payload = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "package_version": package_version(),
        # The recipe that pre-trained the model: the loaded model's own, else this code's.
        "recipe_version": getattr(model, "recipe_version", recipe_version()),
        "config": model.config.to_dict(),
        "dataset": dict(dataset),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "weights_hash": weights_hash(model),
        "provenance": provenance,
        "extra": extra or {},
    }
    router_spec = getattr(model, "router_spec", None)
    if router_spec is not None:  # expert layers (dynalay_env.experts): the router is saved with the model
        payload["router"] = router_spec()
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return provenance


def load_checkpoint(path: str | os.PathLike, *, expected_dataset: str | None = None,
                    expected_config: ModelConfig | None = None, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises ``FileNotFoundError`` if missing, :class:`CheckpointError` if the file is corrupt, of an
    unknown format version, its weights do not match their stored hash, or it was trained on another
    dataset / config than expected. A format-1 file saved before the model carried ``input_mean`` /
    ``input_std`` (and lacking only those) loads with identity normalisation, what it was trained with.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no main-model checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f"{path} is not a readable DynaLay checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{path} is not a DynaLay checkpoint (no format_version field)")
    missing = [k for k in ("config", "dataset", "state_dict", "weights_hash", "provenance") if k not in payload]
    if missing:
        raise CheckpointError(f"{path} is missing checkpoint field(s) {missing}")
    if payload["format_version"] != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {payload['format_version']}; this version of "
                              f"dynalay_env reads format {CHECKPOINT_FORMAT_VERSION}")
    try:
        config = ModelConfig.from_dict(payload["config"])
    except (TypeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} holds an invalid model config: {exc}") from exc
    dataset = payload["dataset"]
    if expected_dataset is not None and dataset.get("name") != expected_dataset:
        raise CheckpointError(f"{path} was trained on dataset {dataset.get('name')!r}, but {expected_dataset!r} "
                              f"was requested; pre-train a model for {expected_dataset!r} or pick that dataset")
    if expected_config is not None and expected_config != config:
        raise CheckpointError(f"{path} was saved with config {config}, which differs from the expected {expected_config}")
    if payload.get("router") is None:
        model = MainModel(config)
    else:  # expert layers: the model carries its router
        model = ExpertModel(config, payload["router"])
    state = dict(payload["state_dict"])
    legacy = set(model.state_dict()) - set(state) == set(_IDENTITY_NORMALISATION)
    if legacy:  # saved before the model carried its input normalisation: it saw raw inputs
        state["input_mean"] = torch.zeros_like(model.input_mean)
        state["input_std"] = torch.ones_like(model.input_std)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit its config: {exc}") from exc
    # A legacy file's hash covers the tensors it stored, without the identity buffers added here.
    if (_state_hash(payload["state_dict"]) if legacy else weights_hash(model)) != payload["weights_hash"]:
        raise CheckpointError(f"{path}: weights hash mismatch (file corrupt or edited)")
    model.eval()
    # None: saved before recipe versions existed. Kept on the model so a re-save and reports carry it.
    model.recipe_version = payload.get("recipe_version")
    setattr(model, _SAVED_PROVENANCE, {
        # A legacy file's model hashes differently once its identity buffers are in; it is the
        # same model, so it keeps the file's id while its weights stay as loaded.
        "id": payload["provenance"], "weights_hash": weights_hash(model) if legacy else payload["weights_hash"],
        "dataset": dict(dataset),
        "package_version": payload.get("package_version")})
    return Checkpoint(model.to(device), dataset, payload["provenance"], payload.get("extra", {}))
