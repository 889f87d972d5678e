"""Fixed-point-iteration (FPI) layers and their solvers.

An FPI layer maps a state ``z_in`` to the fixed point ``z* = f(z*, u)`` of a contraction ``f``, where
the injection ``u = inject(z_in, x_emb)`` carries the incoming state and the input embedding. The solve
starts from ``z_in``.

Two facts the rest of DynaLay-Gym relies on:

* **Per-sample stopping.** Every sample stops on its own when its relative residual
  ``||f(z) - z|| / (||f(z)|| + eps)`` drops to ``tol`` or it reaches ``max_iter``. Converged samples
  leave the *active set*: the solver gathers the active rows before each iteration, so a converged
  sample is neither updated nor computed on.
* **Executed equals counted.** :class:`SolveResult.flops` is the sum over samples of
  ``iterations x flops_per_iteration`` (+ the solver's own mixing work), and it equals the FLOPs that
  :class:`torch.utils.flop_counter.FlopCounterMode` measures while the solve runs (tested).

FLOPs here follow ``FlopCounterMode``'s convention: ``2 x`` multiply-accumulates of convolutions and
matrix products; element-wise work (ReLU, additions, norms) is not counted.

Contraction is enforced on the *real* operator: :class:`OperatorNormConv` keeps a power-iteration
estimate of the operator norm of the convolution at the layer's signal size (conv followed by its
transpose), not of the reshaped weight matrix, and rescales the weight to ``lipschitz``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynalay_env import buckets
from dynalay_env.registry import lookup, register

SolverName = Literal["fixed_point", "anderson"]
BackwardName = Literal["phantom", "implicit"]
LAYER_FAMILIES: tuple[str, ...] = ("mlp", "conv1d", "conv2d")

_EPS = 1e-8


# --------------------------------------------------------------------------------------------------
# Contractive linear operators
# --------------------------------------------------------------------------------------------------


class _ContractiveMap(nn.Module):
    """A linear operator ``A`` kept at ``||A||_2 <= lipschitz`` on its real input shape.

    ``sigma`` tracks ``||A||_2`` by power iteration on ``A^T A`` (one step per training forward,
    like ``torch.nn.utils.spectral_norm``); the weight used is ``W / max(1, sigma / lipschitz)``.
    Subclasses define the operator (``_op``) and its adjoint (``_op_t``) and the shape of the
    power-iteration vector (``_u``).
    """

    weight: nn.Parameter
    lipschitz: float

    def _op(self, x: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def _op_t(self, y: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def _init_norm(self, u0: Tensor, lipschitz: float) -> None:
        self.lipschitz = float(lipschitz)
        self.register_buffer("_u", u0 / u0.norm())
        self.register_buffer("_sigma", torch.ones(()))
        # Many steps at construction: a short power iteration underestimates sigma.
        self.refresh_norm(n_power_iterations=500)

    @torch.no_grad()
    def refresh_norm(self, n_power_iterations: int = 1) -> float:
        """Update the operator-norm estimate by power iteration; returns sigma."""
        u = self._u
        for _ in range(n_power_iterations):
            # Divide by the norm itself (clamped, not + eps): adding eps would shrink u below unit
            # norm and so underestimate sigma, letting the scaled operator exceed the bound.
            v = self._op(u, self.weight)
            v = v / v.norm().clamp_min(_EPS)
            u = self._op_t(v, self.weight)
            u = u / u.norm().clamp_min(_EPS)
        self._u.copy_(u)
        self._sigma.copy_(self._op(u, self.weight).norm())
        return float(self._sigma)

    def scaled_weight(self) -> Tensor:
        # sigma is a no-grad estimate; dividing by it (not re-deriving it) keeps the backward cheap.
        return self.weight / torch.clamp(self._sigma / self.lipschitz, min=1.0)

    def effective_weight(self) -> Tensor:
        """The weight to use: refreshes the estimate first when training."""
        if self.training:
            self.refresh_norm(1)
        return self.scaled_weight()

    def forward(self, z: Tensor, weight: Tensor | None = None) -> Tensor:
        return self._op(z, self.effective_weight() if weight is None else weight)


class OperatorNormLinear(_ContractiveMap):
    """Linear map ``R^in -> R^out`` whose spectral norm is kept ``<= lipschitz``."""

    def __init__(self, in_features: int, out_features: int, lipschitz: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self._init_norm(torch.randn(1, in_features), lipschitz)

    def _op(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight)

    def _op_t(self, y: Tensor, weight: Tensor) -> Tensor:
        return F.linear(y, weight.t())

    @torch.no_grad()
    def exact_operator_norm(self) -> float:
        """Largest singular value of the scaled weight (exact SVD)."""
        return float(torch.linalg.matrix_norm(self.scaled_weight(), ord=2))

    def flops(self, sample_shape: tuple[int, ...]) -> int:
        """FLOPs of one application to one sample (``2 x out x in``); ``sample_shape`` is unused."""
        return 2 * self.weight.shape[0] * self.weight.shape[1]


class OperatorNormConv(_ContractiveMap):
    """Same-padded convolution (1-D or 2-D) with operator norm kept ``<= lipschitz``.

    ``spectral_norm`` on a conv bounds the reshaped ``(C_out, C_in*k)`` matrix, which is *not* the
    norm of the convolution operator (it can be off by the kernel's overlap factor). Here the power
    iteration runs on the operator itself at the layer's signal size: ``v <- conv(u)``,
    ``u <- conv_transpose(v)``, so ``sigma`` estimates ``||conv||_2`` on that exact input shape.
    """

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int, signal_shape: tuple[int, ...],
                 lipschitz: float) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for same padding, got {kernel_size}")
        self.dims = len(signal_shape)
        if self.dims not in (1, 2):
            raise ValueError(f"signal_shape must have 1 or 2 spatial dims, got {signal_shape}")
        kshape = (kernel_size,) * self.dims
        self.weight = nn.Parameter(torch.empty(channels_out, channels_in, *kshape))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.padding = kernel_size // 2
        self.signal_shape = tuple(signal_shape)
        self._init_norm(torch.randn(1, channels_in, *signal_shape), lipschitz)

    def _op(self, x: Tensor, weight: Tensor) -> Tensor:
        conv = F.conv1d if self.dims == 1 else F.conv2d
        return conv(x, weight, padding=self.padding)

    def channels_last_weight(self, weight: Tensor) -> Tensor:
        """``weight`` for :meth:`channels_last_op`: as a 2-D kernel (``[O, I, 1, k]`` for a 1-D
        convolution, ``[O, I, k, k]`` for a 2-D one) in channels-last memory."""
        kernel = weight.unsqueeze(2) if self.dims == 1 else weight
        return kernel.contiguous(memory_format=torch.channels_last)

    def channels_last_op(self, x: Tensor, weight: Tensor) -> Tensor:
        """The operator on a batch with channels last, ``[N, *spatial, C_in]`` -> ``[N, *spatial,
        C_out]`` (both contiguous), with ``weight`` from :meth:`channels_last_weight`. oneDNN runs
        these small convolutions faster in this memory layout than in PyTorch's default one
        (``benchmarks/results/env_throughput_2threads_repeats*_cpu.md``)."""
        x = x.movedim(-1, 1)  # the same memory seen as [N, C, *spatial]: channels-last strides
        if self.dims == 1:
            return F.conv2d(x.unsqueeze(2), weight, padding=(0, self.padding)).squeeze(2).movedim(1, -1)
        return F.conv2d(x, weight, padding=self.padding).movedim(1, -1)

    def _op_t(self, y: Tensor, weight: Tensor) -> Tensor:
        conv_t = F.conv_transpose1d if self.dims == 1 else F.conv_transpose2d
        return conv_t(y, weight, padding=self.padding)

    @torch.no_grad()
    def exact_operator_norm(self, max_dim: int = 8192) -> float:
        """Exact ``||conv||_2`` of the scaled weight at ``signal_shape``: the operator is written
        out as a dense matrix (conv of every basis vector) and its largest singular value taken.
        Independent of the power-iteration estimate, so it checks it. Only for ``C*prod(spatial) <=
        max_dim``."""
        c_in = self.weight.shape[1]
        d = c_in * math.prod(self.signal_shape)
        if d > max_dim:
            raise ValueError(f"operator of input dim {d} > max_dim={max_dim}; use refresh_norm() instead")
        basis = torch.eye(d, device=self.weight.device, dtype=self.weight.dtype).view(d, c_in, *self.signal_shape)
        matrix = self._op(basis, self.scaled_weight()).reshape(d, -1)
        return float(torch.linalg.matrix_norm(matrix, ord=2))

    def flops(self, sample_shape: tuple[int, ...]) -> int:
        """FLOPs of one sample: 2 x C_out x C_in x prod(kernel) x prod(spatial)."""
        return 2 * self.weight[0].numel() * self.weight.shape[0] * math.prod(sample_shape[1:])


# --------------------------------------------------------------------------------------------------
# FPI layers
# --------------------------------------------------------------------------------------------------


class FPIFunction(Protocol):
    """What a solver needs from a layer: ``f(z, u)`` on a batch, with weights fixed for the solve."""

    def __call__(self, z: Tensor, u: Tensor) -> Tensor: ...


class FPILayer(nn.Module):
    """One FPI layer: ``z* = relu(W_up(relu(W_down z)) + u)``, ``u = inject(z_in, x_emb)``.

    ``W_down: C -> rank`` and ``W_up: rank -> C`` are contractive (``lipschitz`` split evenly between
    them, square root each), so ``f`` is a contraction in ``z`` with constant ``<= lipschitz`` because
    ReLU is 1-Lipschitz. ``rank`` and the kernel size set the layer's cost: layers of one model differ
    in them so that *which* layer to run is a real decision.

    Shapes: states and injections are ``[N, C]`` (family ``mlp``), ``[N, C, L]`` (``conv1d``) or
    ``[N, C, H, W]`` (``conv2d``); ``state_shape`` is the per-sample shape.
    """

    def __init__(self, family: str, state_shape: tuple[int, ...], rank: int, kernel_size: int = 3,
                 lipschitz: float = 0.9, tol: float = 1e-3, max_iter: int = 50,
                 solver: SolverName = "fixed_point", backward: BackwardName = "phantom",
                 name: str = "", inject_kernel: int = 1) -> None:
        super().__init__()
        if family not in LAYER_FAMILIES:
            raise ValueError(f"unknown layer family {family!r}; valid families: {', '.join(LAYER_FAMILIES)}")
        if not 0.0 < lipschitz < 1.0:
            raise ValueError(f"lipschitz must be in (0, 1) for a contraction, got {lipschitz}")
        get_solver(solver)  # validate the name early
        if backward not in ("phantom", "implicit"):
            raise ValueError(f"unknown backward {backward!r}; valid: phantom, implicit")
        expected_dims = {"mlp": 1, "conv1d": 2, "conv2d": 3}[family]
        if len(state_shape) != expected_dims:
            raise ValueError(f"family {family!r} needs a state_shape of {expected_dims} dims "
                             f"(channels{', spatial' * (expected_dims - 1)}), got {state_shape}")
        self.family = family
        self.state_shape = tuple(state_shape)
        self.rank = rank
        self.kernel_size = kernel_size if family != "mlp" else 1
        if family != "mlp" and inject_kernel % 2 != 1:
            raise ValueError(f"inject_kernel must be odd for same padding, got {inject_kernel}")
        self.inject_kernel = inject_kernel if family != "mlp" else 1
        self.lipschitz = lipschitz
        self.tol = tol
        self.max_iter = max_iter
        self.solver = solver
        self.backward = backward
        self.name = name
        channels = state_shape[0]
        spatial = state_shape[1:]
        sub_lipschitz = math.sqrt(lipschitz)
        if family == "mlp":
            self.down: nn.Module = OperatorNormLinear(channels, rank, sub_lipschitz)
            self.up: nn.Module = OperatorNormLinear(rank, channels, sub_lipschitz)
            self.inject_state = nn.Linear(channels, channels)
            self.inject_input = nn.Linear(channels, channels, bias=False)
        else:
            self.down = OperatorNormConv(channels, rank, kernel_size, spatial, sub_lipschitz)
            self.up = OperatorNormConv(rank, channels, kernel_size, spatial, sub_lipschitz)
            conv = nn.Conv1d if family == "conv1d" else nn.Conv2d
            # The injection is outside the contraction (f is contractive in z whatever u is), so a
            # spatial kernel here gives each layer an unconstrained conv stage at a fixed cost.
            ik, pad = self.inject_kernel, self.inject_kernel // 2
            self.inject_state = conv(channels, channels, ik, padding=pad)
            self.inject_input = conv(channels, channels, ik, padding=pad, bias=False)

    # ---- costs -----------------------------------------------------------------------------------

    def flops_per_iteration(self) -> int:
        """FLOPs of one evaluation of ``f`` on one sample."""
        down_shape = (self.rank, *self.state_shape[1:])
        return self.down.flops(self.state_shape) + self.up.flops(down_shape)

    def injection_flops(self) -> int:
        """FLOPs of computing ``u`` for one sample (two C -> C maps of ``inject_kernel``)."""
        spatial = math.prod(self.state_shape[1:])
        taps = self.inject_kernel ** (len(self.state_shape) - 1)
        return 2 * 2 * self.state_shape[0] ** 2 * taps * spatial

    def lipschitz_bound(self) -> float:
        """Exact upper bound of ``f``'s Lipschitz constant in ``z``: ``||W_up||_2 * ||W_down||_2``,
        both measured exactly on the effective weights (ReLU is 1-Lipschitz)."""
        return self.down.exact_operator_norm() * self.up.exact_operator_norm()

    # ---- the map ---------------------------------------------------------------------------------

    def inject(self, z_in: Tensor, x_emb: Tensor) -> Tensor:
        """The input injection ``u`` ``[N, *state_shape]`` of a solve: the injected state plus the
        injected input embedding."""
        return self.inject_state(z_in) + self.inject_input(x_emb)

    def fixed_point_map(self, channels_last: bool = False) -> Callable[[Tensor, Tensor], Tensor]:
        """``f(z, u)`` with the contractive weights computed once (not once per iteration).

        ``channels_last`` (conv families): ``f`` maps states with the channels last, ``[N, *spatial,
        C]``, as :meth:`OperatorNormConv.channels_last_op` takes them."""
        w_down = self.down.effective_weight()
        w_up = self.up.effective_weight()
        if channels_last:
            down, up = self.down, self.up
            if not isinstance(down, OperatorNormConv) or not isinstance(up, OperatorNormConv):
                raise ValueError(f"channels_last applies to the conv families, not to {self.family!r}")
            w_down, w_up = down.channels_last_weight(w_down), up.channels_last_weight(w_up)

            def f_channels_last(z: Tensor, u: Tensor) -> Tensor:
                return up.channels_last_op(down.channels_last_op(z, w_down).relu_(), w_up).add_(u).relu_()

            return f_channels_last

        def f(z: Tensor, u: Tensor) -> Tensor:
            # In place on fresh conv outputs (neither conv saves its output for backward): two fewer
            # state-sized allocations per iteration.
            return self.up(self.down(z, w_down).relu_(), w_up).add_(u).relu_()

        return f

    def _is_bucketed(self, z: Tensor) -> bool:
        """Whether a solve from ``z`` runs its convolutions on bucketed row counts
        (:mod:`dynalay_env.buckets`): the conv families on the CPU, where oneDNN compiles one kernel
        per shape. Matrix products (mlp) compile nothing per shape, so padding them would only add work."""
        return self.family != "mlp" and z.device.type == "cpu"

    def _solve_inputs(self, z_in: Tensor, x_emb: Tensor, channels_last: bool) -> tuple[FPIFunction, Tensor, Tensor]:
        """``f``, the start ``z0`` and the injection ``u`` of a solve from ``z_in``: as they are, or
        with ``channels_last`` (the CPU inference path: bucketed, outside autograd) the injection run
        bucketed and all three with the channels last, ``[N, *spatial, C]``."""
        if not channels_last:
            return self.fixed_point_map(), z_in.detach(), self.inject(z_in, x_emb)
        u = buckets.call_bucketed(self.inject, z_in, x_emb, flops_per_row=self.injection_flops())
        return (self.fixed_point_map(channels_last=True), z_in.movedim(1, -1).contiguous(),
                u.movedim(1, -1).contiguous())

    @torch.no_grad()
    def warm_kernels(self, z_in: Tensor, x_emb: Tensor) -> None:
        """One injection and one evaluation of ``f`` on the batch ``z_in``, ``x_emb`` (``[N,
        *state_shape]``), in the layout :meth:`forward` solves in, without a solve: every kernel a
        solve of ``N`` rows runs, for warming torch's per-shape caches. Tallied in the padding stats
        as any bucketed call is."""
        f, z0, u = self._solve_inputs(z_in, x_emb, channels_last=self._is_bucketed(z_in))
        f(z0, u)

    def forward(self, z_in: Tensor, x_emb: Tensor) -> SolveResult:
        """Solve the layer for a batch. ``z_in``, ``x_emb``: ``[N, *state_shape]``."""
        if tuple(z_in.shape[1:]) != self.state_shape or z_in.shape != x_emb.shape:
            raise ValueError(f"layer {self.name or self.family} expects z_in and x_emb of shape "
                             f"[N, {', '.join(map(str, self.state_shape))}], got {tuple(z_in.shape)} "
                             f"and {tuple(x_emb.shape)}")
        bucketed = self._is_bucketed(z_in)
        # Outside autograd the solve also runs with the channels last (OperatorNormConv.channels_last_op:
        # faster kernels); a training forward keeps the default layout of its gradient step.
        channels_last = bucketed and not torch.is_grad_enabled()
        f, z0, u = self._solve_inputs(z_in, x_emb, channels_last)
        with torch.no_grad():
            result = get_solver(self.solver)(f, z0, u.detach(), tol=self.tol, max_iter=self.max_iter,
                                             flops_per_iteration=self.flops_per_iteration(),
                                             pad_to=buckets.bucket_size if bucketed else None)
        if channels_last:  # back to [N, C, *spatial]
            result.state = result.state.movedim(-1, 1).contiguous()
        if torch.is_grad_enabled() and (u.requires_grad or any(p.requires_grad for p in self.parameters())):
            # The backward fixed point contracts as slowly as the forward one: give it at least as
            # many iterations and a tolerance no looser.
            result.state = attach_gradient(f, result.state, u, self.backward, max_iter=max(self.max_iter, 200),
                                           tol=min(self.tol, 1e-6))
        return result


# --------------------------------------------------------------------------------------------------
# Solvers
# --------------------------------------------------------------------------------------------------


@dataclass
class SolveResult:
    """Outcome of one batched solve. Per-sample tensors have leading dim N.

    state:        ``[N, *state_shape]`` the fixed point (or the last iterate at ``max_iter``)
    iterations:   ``[N]`` int64, evaluations of ``f`` run for each sample
    residual:     ``[N]`` float32, final relative residual ``||f(z)-z|| / ||f(z)||``
    converged:    ``[N]`` bool, residual ``<= tol``
    flops:        ``[N]`` int64, FLOPs executed for each sample (iterations x per-iteration cost
                  + the solver's mixing cost)
    first_residual: ``[N]`` float32, relative residual of the first iteration (of the starting
                  point); ``residual / first_residual`` is the contraction the solve observed. None
                  from a solver that does not record it.
    """

    state: Tensor
    iterations: Tensor
    residual: Tensor
    converged: Tensor
    flops: Tensor
    first_residual: Tensor | None = None


def _relative_residual(fz: Tensor, z: Tensor) -> Tensor:
    # torch.linalg.vector_norm is what Tensor.norm(dim=1) calls, without its Python dispatch: this
    # runs once per solver iteration on the env's hot path.
    diff = torch.linalg.vector_norm((fz - z).flatten(1), dim=1)
    return diff / (torch.linalg.vector_norm(fz.flatten(1), dim=1) + _EPS)


def _first_or_final(first: Tensor | None, residual: Tensor) -> Tensor:
    """The first iteration's residuals ``[N]``; with no iteration run (``max_iter=0``) the final ones."""
    return residual.float() if first is None else first


def _exact(n: int) -> int:
    return n


def fixed_point_solve(f: FPIFunction, z0: Tensor, u: Tensor, *, tol: float, max_iter: int,
                      flops_per_iteration: int, pad_to: Callable[[int], int] | None = None) -> SolveResult:
    """Plain iteration ``z <- f(z, u)`` on the active set; each sample stops on its own.

    With ``pad_to`` (e.g. :func:`~dynalay_env.buckets.bucket_size`), ``f`` runs on ``pad_to(m)``
    rows when ``m`` are running: the running rows, then copies of one of them whose images are
    dropped and never counted. The running rows are kept compacted between iterations: ``f`` runs on exactly the samples still
    running, a sample is written out once, when it stops, and the running rows are gathered again
    only in an iteration where some stopped. (Gathering every running row from a full-size buffer and
    scattering it back each iteration cost as much wall time as the cheap layers' ``f``.) The
    running set, its order and every ``f`` evaluation are those of the plain per-iteration gather, so
    results are identical; one host synchronisation per iteration (how many rows stop).
    """
    n = z0.shape[0]
    dev = z0.device
    iterations = torch.zeros(n, dtype=torch.long, device=dev)
    residual = torch.full((n,), float("inf"), device=dev, dtype=z0.dtype)
    if max_iter <= 0 or n == 0:
        return SolveResult(z0.clone(), iterations, residual.float(), residual <= tol, iterations * flops_per_iteration,
                           residual.float())
    z: Tensor | None = None  # the output, allocated when rows first stop apart from the rest
    rows: Tensor | None = None  # global index of each running row; None: all n, in order
    # The running rows are the first m of z_a / u_a; the rest (up to bucket_size(m)) pad the batch.
    size = _exact if pad_to is None else pad_to
    m = n
    z_a, u_a = buckets.pad_rows(z0, size(n)), buckets.pad_rows(u, size(n))
    first: Tensor | None = None
    for it in range(1, max_iter + 1):
        fz_run = f(z_a, u_a)
        buckets.record(m, fz_run.shape[0], flops_per_iteration)
        fz = fz_run[:m]
        res = _relative_residual(fz, z_a[:m])
        if first is None:  # the first iteration runs on every sample
            first = res.float()
        # NaN residuals compare False: a diverged sample stops (unconverged), as at max_iter.
        keep = res > tol if it < max_iter else torch.zeros_like(res, dtype=torch.bool)
        n_stop = int((~keep).sum())
        if n_stop == 0:
            z_a = fz_run
            continue
        if n_stop == m:  # every running row stops here
            stop_rows = torch.arange(n, device=dev) if rows is None else rows
            if z is None:  # all n stop together: fz is the output
                z = fz
            else:
                z.index_copy_(0, stop_rows, fz)
            iterations.index_fill_(0, stop_rows, it)
            residual.index_copy_(0, stop_rows, res)
            break
        # Stable: the rows that keep running stay in their order, as a boolean gather would keep them.
        order = torch.argsort(keep.to(torch.uint8), stable=True)
        stop_local, keep_local = order[:n_stop], order[n_stop:]
        stop_rows = stop_local if rows is None else rows.index_select(0, stop_local)
        if z is None:
            z = torch.empty_like(z0)
        z.index_copy_(0, stop_rows, fz.index_select(0, stop_local))
        iterations.index_fill_(0, stop_rows, it)
        residual.index_copy_(0, stop_rows, res.index_select(0, stop_local))
        rows = keep_local if rows is None else rows.index_select(0, keep_local)
        m -= n_stop
        gather = buckets.pad_index(keep_local, size(m))
        z_a, u_a = fz_run.index_select(0, gather), u_a.index_select(0, gather)
    assert z is not None  # the last iteration stops every row still running
    converged = residual <= tol
    return SolveResult(z, iterations, residual.float(), converged, iterations * flops_per_iteration,
                       _first_or_final(first, residual))


def anderson_solve(f: FPIFunction, z0: Tensor, u: Tensor, *, tol: float, max_iter: int,
                   flops_per_iteration: int, memory: int = 5, beta: float = 1.0,
                   ridge: float = 1e-4, pad_to: Callable[[int], int] | None = None) -> SolveResult:
    """Anderson acceleration (type II) on the active set; each sample stops on its own.

    Keeps the last ``memory`` iterates ``X`` and images ``G = f(X)`` for every sample, solves the small
    (relatively) ridge-regularised least-squares problem ``min_a ||(G - X) a||, sum(a) = 1`` per active sample and
    mixes ``z = beta * G a + (1 - beta) * X a``. The mixing (two batched products with the history of
    size ``d = state numel``) costs ``2 * (m*m*d + m*d)`` FLOPs per sample and iteration, which is added
    to the count. ``pad_to``: as in :func:`fixed_point_solve` (``f`` only; the mixing runs exact).
    """
    size = _exact if pad_to is None else pad_to
    n = z0.shape[0]
    d = z0[0].numel()
    shape = z0.shape[1:]
    dev, dt = z0.device, z0.dtype
    X = torch.zeros(n, memory, d, device=dev, dtype=dt)
    G = torch.zeros(n, memory, d, device=dev, dtype=dt)
    z = z0.reshape(n, d).clone()
    iterations = torch.zeros(n, dtype=torch.long, device=dev)
    mix_flops = torch.zeros(n, dtype=torch.long, device=dev)
    residual = torch.full((n,), float("inf"), device=dev, dtype=dt)
    active = torch.arange(n, device=dev)
    first: Tensor | None = None
    for k in range(max_iter):
        if active.numel() == 0:
            break
        a = active.numel()
        gather = buckets.pad_index(active, size(a))  # padding rows' images are dropped
        z_run = z.index_select(0, gather)
        g_run = f(z_run.view(-1, *shape), u.index_select(0, gather))
        buckets.record(a, g_run.shape[0], flops_per_iteration)
        z_a, g_a = z_run[:a], g_run[:a].reshape(-1, d)
        res = _relative_residual(g_a, z_a)
        if first is None:  # the first iteration runs on every sample
            first = res.float()
        iterations.index_add_(0, active, torch.ones_like(active))
        residual.index_copy_(0, active, res)
        slot = k % memory
        X[active, slot] = z_a
        G[active, slot] = g_a
        m = min(k + 1, memory)
        if m == 1:
            new = g_a
        else:
            F_hist = (G[active, :m] - X[active, :m])               # [a, m, d]
            H = torch.bmm(F_hist, F_hist.transpose(1, 2))          # [a, m, m]
            # Ridge relative to the residuals' scale: an absolute one would dominate H as the
            # residuals shrink and turn the mix into a plain average of old iterates.
            scale = H.diagonal(dim1=1, dim2=2).mean(1).clamp_min(torch.finfo(dt).tiny).view(-1, 1, 1)
            H = H + ridge * scale * torch.eye(m, device=dev, dtype=dt)
            ones = torch.ones(active.numel(), m, 1, device=dev, dtype=dt)
            alpha = torch.linalg.solve(H, ones)                    # [a, m, 1]
            alpha = alpha / alpha.sum(dim=1, keepdim=True)
            a_t = alpha.transpose(1, 2)                            # [a, 1, m]
            mixed_g = torch.bmm(a_t, G[active, :m]).squeeze(1)
            if beta != 1.0:
                mixed_g = beta * mixed_g + (1 - beta) * torch.bmm(a_t, X[active, :m]).squeeze(1)
            new = mixed_g
            n_products = 2 if beta != 1.0 else 1
            mix_flops.index_add_(0, active, torch.full_like(active, 2 * m * m * d + n_products * 2 * m * d))
        # A sample that just converged keeps f(z) (its residual was measured against it), not a mix.
        done = res <= tol
        new = torch.where(done.unsqueeze(1), g_a, new)
        z.index_copy_(0, active, new)
        active = active[~done]
    converged = residual <= tol
    flops = iterations * flops_per_iteration + mix_flops
    return SolveResult(z.view(n, *shape), iterations, residual.float(), converged, flops,
                       _first_or_final(first, residual))


SOLVERS: dict[str, Callable[..., SolveResult]] = {
    "fixed_point": fixed_point_solve,
    "anderson": anderson_solve,
}


def get_solver(name: str) -> Callable[..., SolveResult]:
    """Solver by name; raises ``ValueError`` listing the valid names."""
    return lookup("solver", SOLVERS, name)


def register_solver(name: str, solver: Callable[..., SolveResult], *, overwrite: bool = False) -> None:
    """Add ``solver(f, z0, u, *, tol, max_iter, ...) -> SolveResult`` under ``name`` (the signature of
    :func:`fixed_point_solve`), for ``FPILayer(solver=name)``. A taken name is refused unless ``overwrite``.

    ``z0`` and ``u`` come in the layout ``f`` maps, which a solver should not assume: a conv layer's
    CPU inference solve passes them with the channels last, ``[N, *spatial, C]``
    (:meth:`FPILayer.forward`). Treat each sample's tensor as a whole (``reshape``, not ``view``)."""
    register("solver", SOLVERS, name, solver, overwrite=overwrite)


def list_solvers() -> list[str]:
    """The names of the registered solvers (``fixed_point``, ``anderson``, and any registered since)."""
    return list(SOLVERS)


# --------------------------------------------------------------------------------------------------
# Backward passes
# --------------------------------------------------------------------------------------------------


def attach_gradient(f: Callable[[Tensor, Tensor], Tensor], z_star: Tensor, u: Tensor,
                    backward: BackwardName, max_iter: int = 50, tol: float = 1e-5) -> Tensor:
    """Reconnect a fixed point solved without autograd to the graph.

    ``phantom`` (default, Jacobian-free): one differentiable step ``z = f(z*, u)``; the gradient is
    ``dL/dz (df/du, df/dtheta)`` at ``z*`` with the Jacobian inverse replaced by the identity.
    ``implicit``: the implicit-function-theorem gradient. The incoming gradient ``g`` is replaced by
    the solution of ``w = g + J_f(z*)^T w`` (fixed-point iteration on vector-Jacobian products), so
    the parameters and ``u`` receive ``w (df/du, df/dtheta)``, the exact gradient of ``z*``.
    """
    z = f(z_star.detach(), u)
    if backward == "phantom":
        return z
    z_leaf = z_star.detach().requires_grad_()
    f_leaf = f(z_leaf, u.detach())

    def implicit_hook(grad: Tensor) -> Tensor:
        w = grad
        for _ in range(max_iter):
            (jtw,) = torch.autograd.grad(f_leaf, z_leaf, w, retain_graph=True)
            w_next = grad + jtw
            if (w_next - w).norm() <= tol * (w_next.norm() + _EPS):
                w = w_next
                break
            w = w_next
        return w

    if z.requires_grad:
        z.register_hook(implicit_hook)
    return z
