"""Tests of the FPI layers and solvers (dynalay_env/fpi.py).

What is checked: solved states really are fixed points; iteration counts are per sample; the solver
shrinks its active set so that FLOPs executed (measured by FlopCounterMode) equal FLOPs counted;
Anderson vs plain iteration on a linear contraction with a known solution; the implicit gradient
against finite differences; contraction of the operators; clear errors on bad input.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dynalay_env import buckets
from dynalay_env.fpi import (
    LAYER_FAMILIES,
    SOLVERS,
    FPILayer,
    OperatorNormConv,
    OperatorNormLinear,
    anderson_solve,
    fixed_point_solve,
    get_solver,
    list_solvers,
    register_solver,
)

# Per-sample state shapes small enough to keep every test well under a second.
SHAPES = {"mlp": (16,), "conv1d": (6, 12), "conv2d": (4, 5, 5)}
SOLVER_NAMES = ("fixed_point", "anderson")


def make_layer(family: str, solver: str = "fixed_point", *, rank: int = 4, tol: float = 1e-4,
               max_iter: int = 200, lipschitz: float = 0.9, **kwargs) -> FPILayer:
    return FPILayer(family, SHAPES[family], rank=rank, kernel_size=3, lipschitz=lipschitz, tol=tol,
                    max_iter=max_iter, solver=solver, **kwargs).eval()


def varied_batch(shape: tuple[int, ...], n: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``z_in, x_emb`` whose samples differ in scale over two decades (so their solves differ)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.logspace(-1, 1, n).view(n, *[1] * len(shape))
    z = torch.randn(n, *shape, generator=g) * scale
    x = torch.randn(n, *shape, generator=g) * scale.flip(0)
    return z, x


def mixed_start(layer: FPILayer, n: int = 10, warm: int = 3):
    """``f, z0, u`` for a batch whose first ``warm`` samples start at their fixed point (one
    evaluation each) and the rest from scratch, so iteration counts certainly differ."""
    z_in, x_emb = varied_batch(layer.state_shape, n=n)
    with torch.no_grad():
        u = layer.inject(z_in, x_emb)
        f = layer.fixed_point_map()
        solved = fixed_point_solve(f, z_in, u, tol=layer.tol * 1e-2, max_iter=10 * layer.max_iter,
                                   flops_per_iteration=0).state
    return f, torch.cat([solved[:warm], z_in[warm:]]), u


def relative_residual(f, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    fz = f(z, u)
    return (fz - z).flatten(1).norm(dim=1) / fz.flatten(1).norm(dim=1)


# --------------------------------------------------------------------------------------------------
# Solved states are fixed points
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVER_NAMES)
@pytest.mark.parametrize("family", LAYER_FAMILIES)
def test_forward_returns_a_fixed_point(family: str, solver: str) -> None:
    torch.manual_seed(0)
    layer = make_layer(family, solver)
    z_in, x_emb = varied_batch(layer.state_shape)
    with torch.no_grad():
        result = layer(z_in, x_emb)
        u = layer.inject(z_in, x_emb)
        f = layer.fixed_point_map()
        rel = relative_residual(f, result.state, u)

    n = z_in.shape[0]
    assert result.state.shape == z_in.shape
    assert result.iterations.shape == result.residual.shape == result.converged.shape == result.flops.shape == (n,)
    assert result.iterations.dtype == result.flops.dtype == torch.int64
    assert result.converged.dtype == torch.bool
    # A contraction with L = 0.9 converges to tol=1e-4 in far fewer than 200 iterations.
    assert bool(result.converged.all()), result.residual
    assert bool((result.iterations > 1).all()), "a start far from the fixed point needs several iterations"
    assert bool((result.residual <= layer.tol).all())
    # Recomputed independently: the returned state is a fixed point of f(., u) to tol.
    assert bool((rel <= layer.tol).all()), rel
    # ... and a non-trivial one: the solve moved the state.
    assert float((result.state - z_in).norm()) > 0.1 * float(z_in.norm())


@pytest.mark.parametrize("solver", SOLVER_NAMES)
def test_max_iter_caps_iterations_and_reports_unconverged(solver: str) -> None:
    torch.manual_seed(0)
    layer = make_layer("mlp", solver, tol=1e-12, max_iter=3)
    z_in, x_emb = varied_batch(layer.state_shape)
    with torch.no_grad():
        result = layer(z_in, x_emb)
    assert bool((result.iterations == 3).all())
    assert not bool(result.converged.any())
    assert bool((result.residual > layer.tol).all())


# --------------------------------------------------------------------------------------------------
# Per-sample iteration counts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVER_NAMES)
def test_iterations_are_counted_per_sample(solver: str) -> None:
    """Half of the batch starts at its fixed point (a previous solve), half from scratch: the warm
    half needs exactly one evaluation of f (to see that its residual is already <= tol), the cold
    half as many as before."""
    torch.manual_seed(0)
    layer = make_layer("mlp", solver, tol=1e-4)
    z_in, x_emb = varied_batch(layer.state_shape, n=10)
    solve = get_solver(solver)
    kwargs = dict(tol=layer.tol, max_iter=layer.max_iter, flops_per_iteration=layer.flops_per_iteration())
    with torch.no_grad():
        u = layer.inject(z_in, x_emb)
        f = layer.fixed_point_map()
        first = solve(f, z_in, u, **kwargs)
        z0 = torch.cat([first.state[:5], z_in[5:]])
        second = solve(f, z0, u, **kwargs)

    assert bool(first.converged.all()) and bool(second.converged.all())
    assert second.iterations[:5].tolist() == [1] * 5
    assert bool((second.iterations[5:] >= 3).all())
    # The cold half repeats its first solve (allow one iteration of float noise at the tol boundary).
    assert bool(((second.iterations[5:] - first.iterations[5:]).abs() <= 1).all())
    # Counted per sample: FLOPs follow the sample's own iterations.
    if solver == "fixed_point":
        assert torch.equal(second.flops, second.iterations * layer.flops_per_iteration())
    else:
        assert bool((second.flops >= second.iterations * layer.flops_per_iteration()).all())
    assert torch.equal(second.flops[:5], torch.full((5,), layer.flops_per_iteration()))


@pytest.mark.parametrize("solver", SOLVER_NAMES)
def test_inputs_of_different_scale_take_different_iterations(solver: str) -> None:
    torch.manual_seed(0)
    layer = make_layer("conv1d", solver, tol=1e-5)
    z_in, x_emb = varied_batch(layer.state_shape, n=12)
    z_in[:3] = 0.0  # a few easy samples: no incoming state to forget
    with torch.no_grad():
        result = layer(z_in, x_emb)
    assert result.iterations.unique().numel() > 1, result.iterations


# --------------------------------------------------------------------------------------------------
# Executed equals counted; the active set shrinks
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVER_NAMES)
@pytest.mark.parametrize("family", LAYER_FAMILIES)
def test_solver_flops_equal_flop_counter(family: str, solver: str) -> None:
    torch.manual_seed(0)
    layer = make_layer(family, solver)
    f, z0, u = mixed_start(layer)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        result = get_solver(solver)(f, z0, u, tol=layer.tol, max_iter=layer.max_iter,
                                    flops_per_iteration=layer.flops_per_iteration())
    # Samples stop at different iterations, so a masked (non-shrinking) solver would over-run.
    assert result.iterations[:3].tolist() == [1, 1, 1] and int(result.iterations[3:].min()) > 1
    assert counter.get_total_flops() == int(result.flops.sum())


@pytest.mark.parametrize("solver", SOLVER_NAMES)
@pytest.mark.parametrize("family", ["mlp", "conv1d"])
def test_layer_forward_flops_equal_flop_counter(family: str, solver: str) -> None:
    """The whole forward: two 1x1 injection maps per sample plus the solve."""
    torch.manual_seed(0)
    layer = make_layer(family, solver)
    z_in, x_emb = varied_batch(layer.state_shape)
    n = z_in.shape[0]
    buckets.reset_padding_stats()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        result = layer(z_in, x_emb)
    # What ran = what is charged + the padding rows (conv on the CPU), which are tallied apart.
    padded = buckets.padding_stats().padded_flops
    assert counter.get_total_flops() == int(result.flops.sum()) + n * layer.injection_flops() + padded
    assert (padded > 0) == (family != "mlp")  # 10 rows run as 12


@pytest.mark.parametrize("solver", SOLVER_NAMES)
@pytest.mark.parametrize("family", LAYER_FAMILIES)
@pytest.mark.parametrize("ratio", [1.25, 2.0, 3.0])
def test_padding_rows_change_nothing_and_are_charged_nothing(family: str, solver: str, ratio: float) -> None:
    """A layer's forward with bucketed row counts gives the results of exact row counts: the same
    iterations, convergence and charged FLOPs, and the same states and residuals up to float32
    rounding (oneDNN may round a row differently at another batch size, as it does when the active
    set shrinks); with padding off, everything that ran is charged."""
    torch.manual_seed(0)
    layer = make_layer(family, solver)
    for n in (1, 6, 10, 23):
        z_in, x_emb = varied_batch(layer.state_shape, n=n, seed=n)
        with torch.no_grad():
            with buckets.using_bucket_ratio(1.0), FlopCounterMode(display=False) as counter:
                exact = layer(z_in, x_emb)
            assert counter.get_total_flops() == int(exact.flops.sum()) + n * layer.injection_flops()
            buckets.reset_padding_stats()
            with buckets.using_bucket_ratio(ratio):
                padded = layer(z_in, x_emb)
                pads = family != "mlp" and buckets.bucket_size(n) > n
        for name in ("iterations", "converged", "flops"):
            assert torch.equal(getattr(padded, name), getattr(exact, name)), (n, name)
        for name in ("state", "residual", "first_residual"):
            torch.testing.assert_close(getattr(padded, name), getattr(exact, name), rtol=1e-5, atol=1e-6,
                                       msg=lambda m, n=n, name=name: f"n={n} {name}: {m}")
        assert (buckets.padding_stats().padded_rows > 0) == pads, n


@pytest.mark.parametrize("family", ["conv1d", "conv2d"])
def test_channels_last_op_is_the_operator(family: str) -> None:
    """The channels-last convolution computes the operator on the same samples, only stored with
    the channels last."""
    torch.manual_seed(0)
    op = make_layer(family).down
    x = torch.randn(7, *SHAPES[family])
    weight = op.scaled_weight()
    out = op.channels_last_op(x.movedim(1, -1).contiguous(), op.channels_last_weight(weight))
    assert out.is_contiguous()
    torch.testing.assert_close(out.movedim(-1, 1), op._op(x, weight), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("solver", SOLVER_NAMES)
@pytest.mark.parametrize("family", ["conv1d", "conv2d"])
def test_inference_solve_with_channels_last_equals_the_default_layout(family: str, solver: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A conv layer's CPU inference forward (solved with the channels last) gives the solve of the
    default layout: the same iterations, convergence and FLOPs, states and residuals up to float32
    rounding, and the state back as a contiguous ``[N, C, *spatial]`` tensor."""
    torch.manual_seed(0)
    layer = make_layer(family, solver)
    z_in, x_emb = varied_batch(layer.state_shape, n=23)
    calls = []
    channels_last_op = OperatorNormConv.channels_last_op
    monkeypatch.setattr(OperatorNormConv, "channels_last_op",
                        lambda self, x, w: calls.append(x.shape) or channels_last_op(self, x, w))
    with torch.no_grad(), buckets.using_bucket_ratio(1.0):
        fast = layer(z_in, x_emb)
    assert calls and calls[0] == (23, *SHAPES[family][1:], SHAPES[family][0])  # it ran channels-last
    with torch.no_grad():
        plain = get_solver(solver)(layer.fixed_point_map(), z_in, layer.inject(z_in, x_emb), tol=layer.tol,
                                   max_iter=layer.max_iter, flops_per_iteration=layer.flops_per_iteration())
    assert fast.state.shape == z_in.shape and fast.state.is_contiguous()
    for name in ("iterations", "converged", "flops"):
        assert torch.equal(getattr(fast, name), getattr(plain, name)), name
    for name in ("state", "residual", "first_residual"):
        torch.testing.assert_close(getattr(fast, name), getattr(plain, name), rtol=1e-5, atol=1e-6)


def test_channels_last_map_is_for_conv_layers_only() -> None:
    with pytest.raises(ValueError, match="channels_last applies to the conv families, not to 'mlp'"):
        make_layer("mlp").fixed_point_map(channels_last=True)


@pytest.mark.parametrize("solver", SOLVER_NAMES)
def test_converged_samples_leave_the_active_set(solver: str) -> None:
    torch.manual_seed(0)
    layer = make_layer("conv1d", solver)
    f, z0, u = mixed_start(layer, n=10)
    rows_per_call: list[int] = []
    with torch.no_grad():

        def recording_f(z: torch.Tensor, u_: torch.Tensor) -> torch.Tensor:
            assert z.shape[0] == u_.shape[0]
            rows_per_call.append(z.shape[0])
            return f(z, u_)

        result = get_solver(solver)(recording_f, z0, u, tol=layer.tol, max_iter=layer.max_iter,
                                    flops_per_iteration=layer.flops_per_iteration())
    assert sum(rows_per_call) == int(result.iterations.sum())
    assert len(rows_per_call) == int(result.iterations.max())
    assert rows_per_call[0] == 10
    assert rows_per_call == sorted(rows_per_call, reverse=True)
    assert rows_per_call[-1] < 10, "the active set never shrank"
    # At call i exactly the samples with more than i iterations were active.
    expected = [int((result.iterations > i).sum()) for i in range(len(rows_per_call))]
    assert rows_per_call == expected


@pytest.mark.parametrize("solver", SOLVER_NAMES)
def test_converged_sample_state_is_frozen(solver: str) -> None:
    """A sample that converges on its first evaluation keeps f(z0): later iterations of the others
    do not touch it."""
    torch.manual_seed(0)
    layer = make_layer("mlp", solver)
    f, z0, u = mixed_start(layer, n=8, warm=1)
    with torch.no_grad():
        result = get_solver(solver)(f, z0, u, tol=layer.tol, max_iter=layer.max_iter,
                                    flops_per_iteration=layer.flops_per_iteration())
        expected = f(z0[:1], u[:1])
    assert int(result.iterations[0]) == 1 and int(result.iterations[1:].min()) > 1
    torch.testing.assert_close(result.state[:1], expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Anderson vs plain iteration on a linear contraction with a known fixed point
# --------------------------------------------------------------------------------------------------


def linear_problem(scale: float = 1.0, d: int = 20, n: int = 16, seed: int = 0, dtype=torch.float32):
    """``f(z, u) = A z + u`` with symmetric ``A``, eigenvalues spread over [-0.95, 0.95] (so
    ``||A||_2 = 0.95``); exact fixed point ``(I - A)^{-1} u`` (solved in float64)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(-0.95, 0.95, d, dtype=torch.float64)) @ q.T
    u = torch.randn(n, d, generator=g, dtype=torch.float64) * scale
    exact = torch.linalg.solve(torch.eye(d, dtype=torch.float64) - a, u.T).T
    a, u, exact = a.to(dtype), u.to(dtype), exact.to(dtype)

    def f(z: torch.Tensor, u_: torch.Tensor) -> torch.Tensor:
        return z @ a.T + u_

    return f, torch.zeros(n, d, dtype=dtype), u, exact, a


LINEAR_TOL = 1e-5


def test_linear_problem_has_the_stated_norm() -> None:
    *_, a = linear_problem()
    assert float(torch.linalg.matrix_norm(a, ord=2)) == pytest.approx(0.95, rel=1e-5)


@pytest.mark.parametrize("solve", [fixed_point_solve, anderson_solve], ids=["fixed_point", "anderson"])
def test_solvers_reach_the_exact_fixed_point(solve) -> None:
    f, z0, u, exact, _ = linear_problem()
    result = solve(f, z0, u, tol=LINEAR_TOL, max_iter=2000, flops_per_iteration=1)
    assert bool(result.converged.all())
    # ||z - z*|| <= ||f(z) - z|| / (1 - 0.95) = 20 x tol (relative), with some float32 slack.
    err = (result.state - exact).norm(dim=1) / exact.norm(dim=1)
    assert float(err.max()) <= 30 * LINEAR_TOL


def test_anderson_needs_no_more_iterations_than_plain_iteration() -> None:
    f, z0, u, exact, _ = linear_problem()
    plain = fixed_point_solve(f, z0, u, tol=LINEAR_TOL, max_iter=2000, flops_per_iteration=1)
    anderson = anderson_solve(f, z0, u, tol=LINEAR_TOL, max_iter=2000, flops_per_iteration=1)
    assert bool(plain.converged.all()) and bool(anderson.converged.all())
    torch.testing.assert_close(anderson.state, plain.state, rtol=0, atol=30 * LINEAR_TOL * float(exact.norm(dim=1).max()))
    assert int(anderson.iterations.sum()) <= int(plain.iterations.sum())


def test_anderson_iterations_do_not_depend_on_the_scale_of_the_problem() -> None:
    small = linear_problem(scale=1e-3)
    large = linear_problem(scale=1e3)
    it_small = anderson_solve(*small[:3], tol=LINEAR_TOL, max_iter=2000, flops_per_iteration=1).iterations.sum()
    it_large = anderson_solve(*large[:3], tol=LINEAR_TOL, max_iter=2000, flops_per_iteration=1).iterations.sum()
    assert abs(int(it_small) - int(it_large)) <= 0.05 * int(it_large)


@pytest.mark.parametrize("solve", [fixed_point_solve, anderson_solve], ids=["fixed_point", "anderson"])
def test_solvers_accept_float64_states(solve) -> None:
    f, z0, u, exact, _ = linear_problem(dtype=torch.float64)
    result = solve(f, z0, u, tol=1e-10, max_iter=5000, flops_per_iteration=1)
    assert result.state.dtype == torch.float64
    torch.testing.assert_close(result.state, exact, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------------


def _loss_and_inputs(layer: FPILayer, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z_in = torch.randn(3, *layer.state_shape, generator=g)
    x_emb = torch.randn(3, *layer.state_shape, generator=g).requires_grad_()
    weights = torch.randn(3, *layer.state_shape, generator=g)

    def loss() -> torch.Tensor:
        state = layer(z_in, x_emb).state
        return (state * weights).sum() + 0.1 * (state**2).sum()

    return loss, x_emb


def _finite_difference(loss, tensors: list[torch.Tensor], h: float = 1e-6) -> list[torch.Tensor]:
    grads = []
    with torch.no_grad():
        for t in tensors:
            fd = torch.zeros_like(t)
            flat, out = t.view(-1), fd.view(-1)
            for i in range(flat.numel()):
                old = float(flat[i])
                flat[i] = old + h
                plus = float(loss())
                flat[i] = old - h
                minus = float(loss())
                flat[i] = old
                out[i] = (plus - minus) / (2 * h)
            grads.append(fd)
    return grads


def _max_relative_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max() / y.abs().max()) for x, y in zip(a, b, strict=True))


@pytest.mark.usefixtures("float64_default")
def test_implicit_gradient_matches_finite_differences() -> None:
    torch.manual_seed(0)
    layer = FPILayer("mlp", (5,), rank=3, lipschitz=0.5, tol=1e-12, max_iter=5000, backward="implicit").eval()
    loss, x_emb = _loss_and_inputs(layer)
    tensors = [*layer.parameters(), x_emb]
    loss().backward()
    autograd = [t.grad.clone() for t in tensors]
    reference = _finite_difference(loss, tensors)
    assert all(bool(g.abs().max() > 0) for g in reference)
    # The backward fixed-point solve stops at a hard-coded relative tol of 1e-5 (see attach_gradient).
    assert _max_relative_error(autograd, reference) < 1e-4

    # The phantom (Jacobian-free) gradient is a different, cheaper approximation, but finite.
    for t in tensors:
        t.grad = None
    layer.backward = "phantom"
    loss().backward()
    phantom = [t.grad.clone() for t in tensors]
    assert all(bool(torch.isfinite(g).all()) for g in phantom)
    assert _max_relative_error(phantom, reference) > 1e-2


@pytest.mark.usefixtures("float64_default")
def test_implicit_gradient_is_exact_for_a_slow_contraction() -> None:
    """f(z, u) = relu(0.9 * relu(z) + u) with u > 0: z* = 10 u, so dz*/du = 10 I exactly."""
    layer = FPILayer("mlp", (4,), rank=4, lipschitz=0.9, tol=1e-13, max_iter=5000, backward="implicit").eval()
    with torch.no_grad():
        for op in (layer.down, layer.up):
            op.weight.copy_(torch.eye(4))
            op.refresh_norm(10)  # sigma = 1, so the effective weight is sqrt(0.9) * I
        layer.inject_state.weight.zero_()
        layer.inject_state.bias.fill_(1.0)
        layer.inject_input.weight.copy_(torch.eye(4))
    x_emb = torch.rand(2, 4).requires_grad_()  # u = 1 + x_emb > 0: every ReLU is active
    weights = torch.randn(2, 4)
    state = layer(torch.zeros(2, 4), x_emb).state
    torch.testing.assert_close(state.detach(), 10 * (1 + x_emb.detach()), rtol=1e-9, atol=0)
    (state * weights).sum().backward()
    torch.testing.assert_close(x_emb.grad, 10 * weights, rtol=1e-4, atol=0)


# --------------------------------------------------------------------------------------------------
# Contraction of the operators
# --------------------------------------------------------------------------------------------------


def _perturb_and_refresh(layer: FPILayer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for op in (layer.down, layer.up):
            # Large enough that the un-normalised norm is far above the target (the clamp is active).
            op.weight.mul_(5).add_(torch.randn(op.weight.shape, generator=g))
            op.refresh_norm(200)


@pytest.mark.parametrize("family", ["mlp", "conv1d"])
def test_small_layers_are_contractions_after_construction(family: str) -> None:
    for seed in range(3):
        torch.manual_seed(seed)
        layer = make_layer(family)
        assert layer.lipschitz_bound() <= layer.lipschitz * 1.001


@pytest.mark.parametrize("family", ["mlp", "conv1d", "conv2d"])
def test_layers_are_contractions_after_perturbation_and_refresh(family: str) -> None:
    for seed in range(3):
        torch.manual_seed(seed)
        layer = make_layer(family)
        _perturb_and_refresh(layer, seed)
        bound = layer.lipschitz_bound()
        assert bound <= layer.lipschitz * 1.001
        # The clamp is active on both factors, so the bound is (close to) the target, not far below.
        assert bound >= layer.lipschitz * 0.99


@pytest.mark.parametrize(("family", "shape", "rank", "kernel_size"),
                         [("mlp", (64,), 64, 1), ("conv1d", (32, 20), 32, 5), ("conv2d", (4, 5, 5), 4, 3)],
                         ids=["mlp64", "conv1d32", "conv2d4"])
def test_default_sized_layers_are_contractions_after_construction(family, shape, rank, kernel_size) -> None:
    bounds = []
    for seed in range(5):
        torch.manual_seed(seed)
        layer = FPILayer(family, shape, rank=rank, kernel_size=kernel_size, lipschitz=0.9)
        bounds.append(layer.lipschitz_bound())
    assert max(bounds) <= 0.9 * 1.001, bounds


@pytest.mark.parametrize("signal_shape", [(16,), (5, 6)], ids=["1d", "2d"])
def test_conv_power_iteration_agrees_with_exact_operator_norm(signal_shape) -> None:
    torch.manual_seed(0)
    for lipschitz, scale in [(0.9, 5.0), (0.9, 0.05)]:  # clamp active / inactive
        op = OperatorNormConv(3, 4, 3, signal_shape, lipschitz)
        with torch.no_grad():
            op.weight.mul_(scale)
        sigma = op.refresh_norm(200)
        exact = op.exact_operator_norm()
        assert exact == pytest.approx(min(sigma, lipschitz), rel=0.01)
        # sigma itself is the norm of the raw operator: check against a dense matrix of the raw conv.
        d = 3 * int(torch.tensor(signal_shape).prod())
        basis = torch.eye(d).view(d, 3, *signal_shape)
        with torch.no_grad():
            dense = op._op(basis, op.weight).reshape(d, -1)
        assert sigma == pytest.approx(float(torch.linalg.matrix_norm(dense, ord=2)), rel=0.01)


def test_linear_exact_norm_agrees_with_power_iteration() -> None:
    torch.manual_seed(0)
    op = OperatorNormLinear(12, 7, 0.8)
    with torch.no_grad():
        op.weight.mul_(10)
    sigma = op.refresh_norm(200)
    assert sigma == pytest.approx(float(torch.linalg.matrix_norm(op.weight.detach(), ord=2)), rel=1e-4)
    assert op.exact_operator_norm() == pytest.approx(0.8, rel=1e-4)


def test_exact_operator_norm_refuses_huge_operators() -> None:
    op = OperatorNormConv(2, 2, 3, (8, 8), 0.9)
    with pytest.raises(ValueError, match="max_dim"):
        op.exact_operator_norm(max_dim=10)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def test_unknown_solver_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        FPILayer("mlp", (8,), rank=2, solver="newton")  # type: ignore[arg-type]
    assert "newton" in str(info.value)
    for name in SOLVERS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="unknown solver 'broyden'; valid solvers: fixed_point, anderson"):
        get_solver("broyden")


def test_register_a_solver(monkeypatch: pytest.MonkeyPatch) -> None:
    """register_solver / get_solver / list_solvers: a registered solver is a layer's solver by name."""
    monkeypatch.setattr("dynalay_env.fpi.SOLVERS", dict(SOLVERS))
    register_solver("plain", fixed_point_solve)
    assert list_solvers() == ["fixed_point", "anderson", "plain"] and get_solver("plain") is fixed_point_solve
    FPILayer("mlp", (8,), rank=2, solver="plain")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="solver 'plain' is already registered; pass overwrite=True"):
        register_solver("plain", anderson_solve)


def test_unknown_family_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        FPILayer("conv3d", (8, 4, 4, 4), rank=2)
    for name in LAYER_FAMILIES:
        assert name in str(info.value)


def test_unknown_backward_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="phantom.*implicit"):
        FPILayer("mlp", (8,), rank=2, backward="exact")  # type: ignore[arg-type]


@pytest.mark.parametrize("lipschitz", [0.0, 1.0, 1.5, -0.5])
def test_lipschitz_outside_unit_interval_is_refused(lipschitz: float) -> None:
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        FPILayer("mlp", (8,), rank=2, lipschitz=lipschitz)


def test_state_shape_must_fit_family() -> None:
    with pytest.raises(ValueError, match="conv1d"):
        FPILayer("conv1d", (8,), rank=2)


@pytest.mark.parametrize(("z_shape", "x_shape"), [((2, 7), (2, 8)), ((2, 8), (2, 7)), ((2, 8, 1), (2, 8, 1)),
                                                  ((2, 8), (3, 8))])
def test_forward_with_wrong_shape_names_expected_shape(z_shape, x_shape) -> None:
    layer = FPILayer("mlp", (8,), rank=2, name="probe")
    with pytest.raises(ValueError) as info:
        layer(torch.zeros(z_shape), torch.zeros(x_shape))
    message = str(info.value)
    assert "[N, 8]" in message and "probe" in message
    assert str(tuple(z_shape)) in message


def test_even_conv_kernel_is_refused() -> None:
    with pytest.raises(ValueError, match="odd"):
        OperatorNormConv(2, 2, 4, (8,), 0.9)
