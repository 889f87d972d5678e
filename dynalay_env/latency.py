"""Latency tables: what each piece of a main model costs in wall time on one device.

``cost="flops"`` charges the multiplications a step executed: exact, and the same on every machine.
FLOPs do not predict wall time, though: a low-rank layer is bound by memory traffic rather than by
its multiplications, so its seconds per FLOP are several times a wide layer's. ``cost="latency"``
charges a table measured on the device instead, as hardware-aware NAS (FBNet, ProxylessNAS) and
latency-aware dynamic networks (LASNet) do. Its figures are *table-estimated*, never measured per
episode, so rewards stay deterministic.

A table holds seconds per sample of each piece of the model at several batch sizes:

- ``encoder``: encoding the input (charged at reset);
- ``head``: the introspection and the head at one state (charged at reset and after every step);
- ``injection[k]``: layer k's fixed cost per solve (the injection, the map's weights, the solver's
  set-up), and ``iteration[k]``: one solver iteration of layer k. Both come from timing the real
  solve with every row forced to run exactly ``n`` iterations, for two values of ``n``, and fitting
  ``t(n) = injection + n * iteration``.

:meth:`LatencyTable.cost_table` turns the table into a :class:`LatencyCostTable` for one batch size
(log-linear interpolation between the profiled sizes), which the env charges exactly as it charges
FLOPs: a step through layer k costs ``injection[k] + iterations * iteration[k] + head``. Its
normaliser is the full-depth path's latency with layer k's mean iterations on ``val``, so 1.0 is the
full-depth model under either cost.

A table is stored beside the checkpoint it was measured for (:func:`latency_table_path`), with the
device, torch version and thread count; :func:`load_latency_table` refuses a table measured on
another device, torch version, thread count or model unless ``force=True``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dynalay_env.atomic import atomic_write_json
from dynalay_env.fpi import SolveResult
from dynalay_env.model import CostTable, MainModel, head_and_introspection, run_path, weights_hash

#: Version of the JSON layout written by :meth:`LatencyTable.to_json`.
LATENCY_FORMAT = 1

#: Batch sizes profiled by default: one episode, a small vector env, a large one, and inference.
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 16, 256, 2000)

#: The two forced iteration counts whose solve times give injection and per-iteration latency.
PROBE_ITERATIONS: tuple[int, int] = (1, 9)


@dataclass(frozen=True)
class DeviceFingerprint:
    """The machine a table was measured on: ``device`` (``"cpu: <model name>"`` or ``"cuda: <name>"``),
    ``torch_version`` and ``num_threads`` (torch's intra-op threads)."""

    device: str
    torch_version: str
    num_threads: int

    @classmethod
    def current(cls, device: str | torch.device = "cpu") -> DeviceFingerprint:
        """The fingerprint of this process on ``device``."""
        dev = torch.device(device)
        if dev.type == "cuda":
            name = f"cuda: {torch.cuda.get_device_name(dev)}"
        else:
            name = f"cpu: {_cpu_model()}"
        return cls(device=name, torch_version=torch.__version__, num_threads=torch.get_num_threads())

    def differences(self, other: DeviceFingerprint) -> list[str]:
        """Human-readable ``field: mine != other`` for every field that differs (empty: same machine)."""
        return [f"{name}: {getattr(self, name)!r} != {getattr(other, name)!r}"
                for name in ("device", "torch_version", "num_threads") if getattr(self, name) != getattr(other, name)]

    @property
    def slug(self) -> str:
        """A short file-name part: ``cpu-2t`` or ``cuda-1t``."""
        return f"{self.device.split(':')[0]}-{self.num_threads}t"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@dataclass(frozen=True)
class LatencyCostTable(CostTable):
    """A :class:`~dynalay_env.model.CostTable` in seconds per sample (table-estimated) for one batch
    size: same fields, same charging, except that a step's solve is charged ``iterations *
    iteration[k]`` from the table rather than the FLOPs the solver executed."""

    batch_size: int = 0

    unit = "seconds (table-estimated)"

    def step_cost(self, k: int, result: SolveResult) -> Tensor:
        """Seconds of one step through layer ``k`` for each row of ``result``: float64 ``[N]``."""
        return result.iterations.double() * self.iteration[k] + float(self.injection[k] + self.head)


@dataclass(frozen=True)
class LatencyTable:
    """Seconds per sample of each piece of a main model on one device, at each profiled batch size.

    ``encoder[b]`` and ``head[b]`` are for ``batch_sizes[b]``; ``injection[k][b]`` and
    ``iteration[k][b]`` for layer k (0-based) at ``batch_sizes[b]``. ``full_depth_iterations[k]`` is
    layer k's mean iterations along the full-depth path (layers 1..K once each) on the profiling
    inputs (``val``), which fixes the normaliser. ``weights_hash`` names the model measured.
    """

    batch_sizes: tuple[int, ...]
    encoder: tuple[float, ...]
    head: tuple[float, ...]
    injection: tuple[tuple[float, ...], ...]
    iteration: tuple[tuple[float, ...], ...]
    full_depth_iterations: tuple[float, ...]
    fingerprint: DeviceFingerprint
    weights_hash: str
    repeats: int
    warmup: int
    measured_at: str = field(default="")

    def __post_init__(self) -> None:
        n = len(self.batch_sizes)
        if n == 0 or list(self.batch_sizes) != sorted(set(self.batch_sizes)) or self.batch_sizes[0] < 1:
            raise ValueError(f"batch_sizes must be distinct positive sizes in increasing order, got {self.batch_sizes}")
        for name in ("encoder", "head"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} must have one entry per batch size ({n}), got {len(getattr(self, name))}")
        layers = len(self.full_depth_iterations)
        for name in ("injection", "iteration"):
            rows = getattr(self, name)
            if len(rows) != layers or any(len(row) != n for row in rows):
                raise ValueError(f"{name} must be [{layers} layers][{n} batch sizes]")

    @property
    def num_layers(self) -> int:
        """K, the number of layers profiled."""
        return len(self.full_depth_iterations)

    def _interpolate(self, values: Sequence[float], batch_size: int) -> float:
        """Seconds per sample at ``batch_size``: log-linear in the batch size between profiled sizes,
        the nearest profiled size outside them."""
        sizes = self.batch_sizes
        if batch_size <= sizes[0]:
            return float(values[0])
        if batch_size >= sizes[-1]:
            return float(values[-1])
        hi = next(i for i, size in enumerate(sizes) if size >= batch_size)
        lo = hi - 1
        t = (math.log(batch_size) - math.log(sizes[lo])) / (math.log(sizes[hi]) - math.log(sizes[lo]))
        return float(values[lo] + t * (values[hi] - values[lo]))

    def cost_table(self, flops_table: CostTable, batch_size: int) -> LatencyCostTable:
        """The latency cost table at ``batch_size`` rows per call (seconds per sample). ``flops_table``
        (the model's :meth:`~dynalay_env.model.MainModel.cost_table`) gives ``max_iterations``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(flops_table.max_iterations) != self.num_layers:
            raise ValueError(f"the latency table has {self.num_layers} layers, the model {len(flops_table.max_iterations)}")
        encoder = self._interpolate(self.encoder, batch_size)
        head = self._interpolate(self.head, batch_size)
        injection = tuple(self._interpolate(row, batch_size) for row in self.injection)
        iteration = tuple(self._interpolate(row, batch_size) for row in self.iteration)
        full_depth = encoder + head + sum(inj + its * it + head for inj, its, it
                                          in zip(injection, self.full_depth_iterations, iteration, strict=True))
        return LatencyCostTable(encoder=encoder, injection=injection, iteration=iteration, head=head,
                                normalizer=full_depth, max_iterations=flops_table.max_iterations,
                                batch_size=batch_size)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (with ``format``: :data:`LATENCY_FORMAT`)."""
        return {"format": LATENCY_FORMAT, "unit": "seconds per sample", **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyTable:
        """The table written by :meth:`to_json`; a clear error on another format."""
        if data.get("format") != LATENCY_FORMAT:
            raise ValueError(f"unsupported latency table format {data.get('format')!r}; expected {LATENCY_FORMAT}")
        return cls(batch_sizes=tuple(data["batch_sizes"]), encoder=tuple(data["encoder"]), head=tuple(data["head"]),
                   injection=tuple(tuple(row) for row in data["injection"]),
                   iteration=tuple(tuple(row) for row in data["iteration"]),
                   full_depth_iterations=tuple(data["full_depth_iterations"]),
                   fingerprint=DeviceFingerprint(**data["fingerprint"]), weights_hash=data["weights_hash"],
                   repeats=int(data["repeats"]), warmup=int(data["warmup"]), measured_at=data.get("measured_at", ""))

    def markdown(self) -> str:
        """The table in microseconds per sample, one row per piece, one column per batch size."""
        head = "| piece | " + " | ".join(f"batch {b}" for b in self.batch_sizes) + " |"
        rule = "|---|" + "---|" * len(self.batch_sizes)

        def row(name: str, values: Sequence[float]) -> str:
            return f"| {name} | " + " | ".join(f"{v * 1e6:.3f}" for v in values) + " |"

        rows = [row("encoder", self.encoder), row("head + introspection", self.head)]
        for k in range(self.num_layers):
            rows.append(row(f"layer {k + 1} injection", self.injection[k]))
            rows.append(row(f"layer {k + 1} iteration", self.iteration[k]))
        fp = self.fingerprint
        return "\n".join([f"Latency table, microseconds per sample (table-estimated cost), measured on {fp.device}, "
                          f"torch {fp.torch_version}, {fp.num_threads} thread(s); medians of {self.repeats} runs "
                          f"after {self.warmup} warm-up runs.", "", head, rule, *rows])


def _timer(device: torch.device) -> Callable[[Callable[[], Any], int, int], float]:
    """A function timing ``fn`` ``repeats`` times after ``warmup`` calls; returns the median seconds."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def measure(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
        for _ in range(warmup):
            fn()
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    return measure


def _rows(x: Tensor, batch_size: int) -> Tensor:
    """``batch_size`` rows of ``x``, cycling through them when it has fewer."""
    reps = -(-batch_size // x.shape[0])
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:batch_size].contiguous()


@torch.no_grad()
def profile_latency(model: MainModel, x_val: Tensor, *, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                    repeats: int = 15, warmup: int = 3) -> LatencyTable:
    """Measure a :class:`LatencyTable` for ``model`` on the device of its parameters.

    ``x_val``: raw ``val`` inputs ``[M, *input_shape]`` (rows are cycled up to each batch size; the
    full-depth iterations are measured on all of them). Each piece is timed ``repeats`` times after
    ``warmup`` calls and its median divided by the batch size. Profile with the thread count and
    device you will run on: the table records them.
    """
    if not isinstance(model, MainModel):
        raise TypeError(f"profile_latency needs a MainModel (its layers' solver settings are varied to time "
                        f"iterations), got {type(model).__name__}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    sizes = tuple(sorted({int(b) for b in batch_sizes}))
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    measure = _timer(device)
    x_val = x_val.to(device)
    full = run_path(model, x_val, list(range(model.num_layers)))
    full_depth_iterations = tuple(float(r.iterations.double().mean()) for r in full.results)
    encoder, head = [], []
    injection: list[list[float]] = [[] for _ in range(model.num_layers)]
    iteration: list[list[float]] = [[] for _ in range(model.num_layers)]
    lo, hi = PROBE_ITERATIONS
    try:
        for size in sizes:
            x = _rows(x_val, size)
            encoder.append(measure(partial(model.encode, x), repeats, warmup) / size)
            z0 = model.encode(x)
            head.append(measure(partial(head_and_introspection, model, z0), repeats, warmup) / size)
            for k, layer in enumerate(model.layers):
                saved = layer.tol, layer.max_iter
                times = {}
                try:
                    layer.tol = -1.0  # every row runs exactly max_iter iterations: residuals are >= 0
                    for n in (lo, hi):
                        layer.max_iter = n
                        times[n] = measure(partial(model.apply_layer, k, z0, z0), repeats, warmup) / size
                finally:
                    layer.tol, layer.max_iter = saved
                per_iteration = max((times[hi] - times[lo]) / (hi - lo), 0.0)
                iteration[k].append(per_iteration)
                injection[k].append(max(times[lo] - lo * per_iteration, 0.0))
    finally:
        model.train(was_training)
    return LatencyTable(batch_sizes=sizes, encoder=tuple(encoder), head=tuple(head),
                        injection=tuple(tuple(row) for row in injection),
                        iteration=tuple(tuple(row) for row in iteration),
                        full_depth_iterations=full_depth_iterations,
                        fingerprint=DeviceFingerprint.current(device), weights_hash=weights_hash(model),
                        repeats=repeats, warmup=warmup,
                        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def latency_table_path(checkpoint: str | os.PathLike, fingerprint: DeviceFingerprint) -> Path:
    """Where the table for ``checkpoint`` on ``fingerprint``'s device kind and thread count lives:
    beside it, ``<stem>.latency-<cpu-2t>.json``."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}.latency-{fingerprint.slug}.json")


def save_latency_table(table: LatencyTable, checkpoint: str | os.PathLike) -> Path:
    """Write ``table`` beside ``checkpoint`` (atomically); returns its path."""
    target = latency_table_path(checkpoint, table.fingerprint)
    atomic_write_json(target, table.to_json())
    return target


def read_latency_table(path: str | os.PathLike, model: MainModel | None = None, *,
                       device: str | torch.device = "cpu", force: bool = False) -> LatencyTable:
    """The table in the JSON file ``path``, checked against this process (device, torch version,
    thread count) and, when given, ``model``'s weights: ``ValueError`` naming every difference
    unless ``force``."""
    table = LatencyTable.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
    problems = table.fingerprint.differences(DeviceFingerprint.current(device))
    if model is not None and table.weights_hash != (actual := weights_hash(model)):
        problems.append(f"weights_hash: {table.weights_hash!r} != {actual!r}")
    if problems and not force:
        raise ValueError(f"the latency table {path} was measured under other settings ({'; '.join(problems)}); "
                         f"profile again on this machine, or pass force=True to use it anyway")
    return table


def load_latency_table(checkpoint: str | os.PathLike, model: MainModel, *, device: str | torch.device = "cpu",
                       force: bool = False) -> LatencyTable:
    """The table stored beside ``checkpoint`` for this process's device and thread count.

    Raises ``FileNotFoundError`` (naming the file and the command that writes it) when there is
    none, and ``ValueError`` when it was measured on another device, torch version or thread count,
    or for other weights, unless ``force`` (:func:`read_latency_table`).
    """
    here = DeviceFingerprint.current(device)
    path = latency_table_path(checkpoint, here)
    if not path.is_file():
        others = sorted(p.name for p in Path(checkpoint).parent.glob(f"{Path(checkpoint).stem}.latency-*.json"))
        raise FileNotFoundError(
            f"no latency table for {here.slug} beside {checkpoint} (looked for {path}"
            + (f"; found tables for other settings: {', '.join(others)}" if others else "")
            + f"). Measure one with: dynalay profile --model {checkpoint}")
    return read_latency_table(path, model, device=device, force=force)


def latency_costs(table: LatencyTable | str | os.PathLike, model: MainModel, *,
                  device: str | torch.device = "cpu") -> LatencyCostTable:
    """The cost table the env charges under ``cost="latency"``: ``table`` (or the JSON file it names,
    checked by :func:`read_latency_table`) at its largest profiled batch size, the size a deployed
    model runs at."""
    if not isinstance(table, LatencyTable):
        table = read_latency_table(table, model, device=device)
    return table.cost_table(model.cost_table(), table.batch_sizes[-1])
