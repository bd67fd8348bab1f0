"""Path sampling and lerp / slerp with tangents: native vs reference, geometry, degenerate rows, errors."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tangentlens.ops as ops
import tangentlens.paths as paths
from conftest import ALL_DTYPES, ULP_TOL, requires_cuda, requires_native
from tangentlens import reference

IMPLS = ["reference", pytest.param("native", marks=requires_native)]
FIELDS = ["z0", "z1", "t", "p0", "p1", "tangent"]


def _rand(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


# ---- sample -----------------------------------------------------------------------------------------


@requires_native
@pytest.mark.parametrize("dim", [2, 3, 7, 64, 513])
@pytest.mark.parametrize("interp", ["slerp", "lerp"])
@pytest.mark.parametrize("sampling", ["full", "end"])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_sample_native_matches_reference(dim, interp, sampling, dtype):
    kw = dict(interp=interp, sampling=sampling, dtype=dtype, eps=1e-4)
    nat = paths.sample(7, 2**32 - 3, 9, dim, impl="native", **kw)
    ref = paths.sample(7, 2**32 - 3, 9, dim, impl="reference", **kw)
    for f in FIELDS:
        a, b = getattr(nat, f), getattr(ref, f)
        assert (a is None) == (b is None), f
        if a is None:
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, f
        if f == "t":
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, **ULP_TOL[dtype], msg=f)


@requires_native
def test_sample_endpoints_are_the_philox_streams():
    s = paths.sample(5, 100, 20, 32, dtype=torch.float64)
    assert torch.equal(s.z0, ops.philox_normal(5, 100, 20, 32, stream=0, dtype=torch.float64))
    assert torch.equal(s.z1, ops.philox_normal(5, 100, 20, 32, stream=1, dtype=torch.float64))
    assert torch.equal(s.t, reference.philox_uniform53(5, 100, 20, 2))


@pytest.mark.parametrize("impl", IMPLS)
def test_slerp_sample_geometry(impl):
    eps = 1e-4
    s = paths.sample(3, 0, 64, 512, eps=eps, dtype=torch.float64, impl=impl)
    a = s.z0 / s.z0.norm(dim=1, keepdim=True)
    b = s.z1 / s.z1.norm(dim=1, keepdim=True)
    theta = torch.acos((a * b).sum(1))
    ones = torch.ones(64, dtype=torch.float64)
    torch.testing.assert_close(s.p0.norm(dim=1), ones, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(s.p1.norm(dim=1), ones, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(
        (s.p0 * s.tangent).sum(1), 0 * ones, rtol=0, atol=1e-13
    )  # tangent to the sphere
    torch.testing.assert_close(s.tangent.norm(dim=1), theta, rtol=1e-12, atol=1e-12)  # speed = angle
    # p(t + eps) - p(t) = eps p'(t) + O(eps^2 theta^2)
    fd = (s.p1 - s.p0) / eps
    assert ((fd - s.tangent).norm(dim=1) <= eps * theta**2).all()
    # t in [0, 1); the points lie on the arc from a to b: p = a cos(t theta) + c sin(t theta)
    assert (s.t >= 0).all() and (s.t < 1).all() and s.t.unique().numel() == 64
    torch.testing.assert_close((s.p0 * a).sum(1), torch.cos(s.t * theta), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_end_sampling_starts_at_z0(impl):
    s = paths.sample(3, 0, 8, 16, sampling="end", dtype=torch.float64, impl=impl)
    assert torch.equal(s.t, torch.zeros(8, dtype=torch.float64))
    torch.testing.assert_close(s.p0, s.z0 / s.z0.norm(dim=1, keepdim=True), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("impl", IMPLS)
def test_lerp_sample_returns_only_what_lerp_needs(impl):
    s = paths.sample(3, 0, 8, 16, interp="lerp", impl=impl)
    assert s.z0 is not None and s.z1 is not None and s.t.shape == (8,)
    assert s.p0 is None and s.p1 is None and s.tangent is None


@requires_native
def test_sample_optional_outputs():
    s = paths.sample(3, 0, 8, 16, endpoints=False, step=False, tangent=True)
    full = paths.sample(3, 0, 8, 16)
    assert s.z0 is None and s.z1 is None and s.p1 is None
    assert torch.equal(s.p0, full.p0) and torch.equal(s.tangent, full.tangent)


@requires_native
@settings(max_examples=15, deadline=None)
@given(
    start=st.integers(0, 2**64 - 40), cuts=st.lists(st.integers(0, 40), max_size=3), dim=st.integers(2, 20)
)
def test_sample_chunking_is_bit_identical(start, cuts, dim):
    # start + 40 <= 2**64: a range past the last index is refused (issue 17), it used to wrap to index 0
    whole = paths.sample(99, start, 40, dim)
    edges = sorted({0, 40, *cuts})
    parts = [paths.sample(99, start + a, b - a, dim) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    for f in FIELDS:
        assert torch.equal(torch.cat([getattr(p, f) for p in parts]), getattr(whole, f)), f


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(interp="cubic"), ValueError, "interp: expected"),
        (dict(sampling="mid"), ValueError, "sampling: expected"),
        (dict(eps=float("nan")), ValueError, "eps: expected a finite"),
        (dict(dim=1), ValueError, "dim: expected >= 2 for slerp"),
        (dict(dtype=torch.int64), TypeError, "dtype: expected"),
        (dict(seed=-1), ValueError, "seed"),
    ],
)
def test_sample_bad_arguments(kwargs, exc, match):
    args = dict(seed=0, start=0, count=2, dim=8)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        paths.sample(**args)


# ---- slerp / lerp on arbitrary tensors --------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize(
    "shape,tshape", [((5, 8), (5,)), ((4, 3, 6), (4,)), ((4, 3, 6), (4, 3)), ((2, 513), ()), ((17,), ())]
)
def test_slerp_matches_float64_formula(impl, dtype, shape, tshape):
    a, b = _rand(*shape, dtype=dtype, seed=1), _rand(*shape, dtype=dtype, seed=2)
    t = (
        torch.rand(tshape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        if tshape
        else 0.37
    )
    p, tan = paths.slerp_with_tangent(a, b, t, impl=impl)
    assert p.shape == a.shape and p.dtype == dtype and tan.shape == a.shape
    # Independent float64 formula (SPEC 4) on the flattened vectors.
    nb = len(tshape) if tshape else (1 if len(shape) >= 2 else 0)
    n = math.prod(shape[:nb])
    A, B = a.double().reshape(n, -1), b.double().reshape(n, -1)
    T = torch.as_tensor(t, dtype=torch.float64).expand(shape[:nb]).reshape(n, 1)
    A, B = A / A.norm(dim=1, keepdim=True), B / B.norm(dim=1, keepdim=True)
    d = (A * B).sum(1, keepdim=True)
    th = torch.acos(d)
    C = B - d * A
    C = C / C.norm(dim=1, keepdim=True)
    P = A * torch.cos(T * th) + C * torch.sin(T * th)
    TAN = th * (C * torch.cos(T * th) - A * torch.sin(T * th))
    tol = ULP_TOL[dtype] if dtype != torch.float64 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p.double().reshape(n, -1), P.to(dtype).double(), **tol)
    torch.testing.assert_close(tan.double().reshape(n, -1), TAN.to(dtype).double(), **tol)
    torch.testing.assert_close(paths.slerp(a, b, t, impl=impl), p, rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_slerp_endpoints_and_fd_tangent(impl):
    a, b = _rand(6, 10, seed=4), _rand(6, 10, seed=5)
    torch.testing.assert_close(paths.slerp(a, b, 0.0, impl=impl), a / a.norm(dim=1, keepdim=True))
    torch.testing.assert_close(paths.slerp(a, b, 1.0, impl=impl), b / b.norm(dim=1, keepdim=True))
    t = torch.linspace(0.1, 0.9, 6, dtype=torch.float64)
    h = 1e-6
    fd = (paths.slerp(a, b, t + h, impl=impl) - paths.slerp(a, b, t - h, impl=impl)) / (2 * h)
    _, tan = paths.slerp_with_tangent(a, b, t, impl=impl)
    torch.testing.assert_close(tan, fd, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("impl", IMPLS)
def test_slerp_non_contiguous_inputs(impl):
    base_a, base_b = _rand(8, 12, seed=6), _rand(8, 12, seed=7)
    a, b = base_a.t(), base_b.t()  # [12, 8], non-contiguous
    t = torch.rand(12, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    p, tan = paths.slerp_with_tangent(a, b, t, impl=impl)
    p2, tan2 = paths.slerp_with_tangent(a.contiguous(), b.contiguous(), t, impl=impl)
    assert torch.equal(p, p2) and torch.equal(tan, tan2)
    sl = _rand(6, 20, seed=9)[:, ::2]  # stride 2 along the vector
    p3 = paths.slerp(sl, sl.flip(0), 0.5, impl=impl)
    torch.testing.assert_close(p3, paths.slerp(sl.contiguous(), sl.flip(0).contiguous(), 0.5, impl=impl))


@pytest.mark.parametrize("impl", IMPLS)
def test_slerp_identical_directions(impl):
    a = _rand(3, 9, seed=10)
    b = 2.5 * a  # same direction, theta = 0
    p, tan = paths.slerp_with_tangent(a, b, torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64), impl=impl)
    torch.testing.assert_close(p, a / a.norm(dim=1, keepdim=True), rtol=1e-14, atol=1e-14)
    assert torch.isfinite(tan).all() and tan.abs().max() < 1e-6


@pytest.mark.parametrize("impl", IMPLS)
def test_slerp_antipodal_rows_use_the_canonical_circle(impl):
    a = _rand(4, 7, seed=11)
    b = -3.0 * a
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    p, tan = paths.slerp_with_tangent(a, b, t, impl=impl)
    ua = a / a.norm(dim=1, keepdim=True)
    assert torch.isfinite(p).all() and torch.isfinite(tan).all()
    torch.testing.assert_close(p.norm(dim=1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(tan.norm(dim=1), torch.full((4,), math.pi, dtype=torch.float64))
    torch.testing.assert_close(p[0], ua[0])
    torch.testing.assert_close(p[3], -ua[3], rtol=1e-12, atol=1e-12)
    # At t = 1/2 the path is orthogonal to a and lies in span(a, e_k), k = argmin |a_k|.
    k = int(ua[2].abs().argmin())
    assert abs(float(p[2] @ ua[2])) < 1e-12
    e_k = torch.zeros(7, dtype=torch.float64)
    e_k[k] = 1
    c = e_k - ua[2] * ua[2, k]
    torch.testing.assert_close(p[2], c / c.norm())


@pytest.mark.parametrize("impl", IMPLS)
def test_slerp_nearly_parallel_rows_stay_accurate(impl):
    # |d| > 0.995 takes the explicit |b - a d| pass; compare with an exact float64 rotation.
    a = _rand(5, 64, seed=12)
    a = a / a.norm(dim=1, keepdim=True)
    u = _rand(5, 64, seed=13)
    u = u - (u * a).sum(1, keepdim=True) * a
    u = u / u.norm(dim=1, keepdim=True)
    phi = torch.tensor([1e-9, 1e-6, 1e-3, 0.05, math.pi - 1e-7], dtype=torch.float64)
    b = a * torch.cos(phi)[:, None] + u * torch.sin(phi)[:, None]
    t = torch.full((5,), 0.3, dtype=torch.float64)
    p, tan = paths.slerp_with_tangent(a, b, t, impl=impl)
    exp_p = a * torch.cos(0.3 * phi)[:, None] + u * torch.sin(0.3 * phi)[:, None]
    exp_tan = phi[:, None] * (u * torch.cos(0.3 * phi)[:, None] - a * torch.sin(0.3 * phi)[:, None])
    torch.testing.assert_close(p, exp_p, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(tan, exp_tan, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
def test_slerp_zero_vector_is_a_clear_error(impl):
    a, b = _rand(4, 5, seed=14), _rand(4, 5, seed=15)
    b[2] = 0
    with pytest.raises((ValueError, RuntimeError), match="row 2 has a zero"):
        paths.slerp(a, b, 0.5, impl=impl)
    a[1] = float("inf")
    with pytest.raises((ValueError, RuntimeError), match="row 1 has a zero"):
        paths.slerp(a, b, 0.5, impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_lerp_with_tangent(impl, dtype):
    a, b = _rand(4, 3, 5, dtype=dtype, seed=16), _rand(4, 3, 5, dtype=dtype, seed=17)
    t = torch.rand(4, dtype=torch.float64, generator=torch.Generator().manual_seed(18))
    p, tan = paths.lerp_with_tangent(a, b, t, impl=impl)
    A, B = a.double(), b.double()
    torch.testing.assert_close(p, (A + t[:, None, None] * (B - A)).to(dtype), **ULP_TOL[dtype])
    torch.testing.assert_close(tan, (B - A).to(dtype), **ULP_TOL[dtype])
    assert torch.equal(paths.lerp(a, b, t, impl=impl), p)


@pytest.mark.parametrize(
    "a,b,t,exc,match",
    [
        (torch.ones(3, 4), torch.ones(3, 5), 0.5, ValueError, "b: expected the shape of a"),
        (
            torch.ones(3, 4),
            torch.ones(3, 4, dtype=torch.float64),
            0.5,
            TypeError,
            "b: expected the dtype of a",
        ),
        (torch.ones(3, 4), torch.ones(3, 4), torch.ones(2), ValueError, "t: shape"),
        (torch.ones(3, 4), torch.ones(3, 4), torch.ones(3, 4), ValueError, "leaves no vector dims"),
        (
            torch.ones(3, 1),
            -torch.ones(3, 1),
            0.5,
            (ValueError, RuntimeError),
            "slerp needs vectors of dim >= 2",
        ),
        (torch.ones(3, 4, dtype=torch.int64), torch.ones(3, 4, dtype=torch.int64), 0.5, TypeError, "a.dtype"),
        (torch.tensor(1.0), torch.tensor(2.0), 0.5, ValueError, "at least one dimension"),
    ],
)
@pytest.mark.parametrize("impl", IMPLS)
def test_interpolation_bad_arguments(a, b, t, exc, match, impl):
    with pytest.raises(exc, match=match):
        paths.slerp(a, b, t, impl=impl)


# ---- autograd, opcheck, compile ---------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["slerp", "lerp"])
def test_gradcheck_float64(impl, mode):
    fn = paths.slerp_with_tangent if mode == "slerp" else paths.lerp_with_tangent
    a = _rand(3, 5, seed=19).requires_grad_()
    b = _rand(3, 5, seed=20).requires_grad_()
    t = torch.tensor([0.1, 0.5, 0.8], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, t: fn(a, b, t, impl=impl), (a, b, t))


@requires_native
def test_opcheck_path_ops():
    for dtype in (torch.float32, torch.float64):
        a, b = _rand(6, 9, dtype=dtype, seed=21), _rand(6, 9, dtype=dtype, seed=22)
        t = torch.rand(6, dtype=torch.float64)
        for mode in (0, 1):
            for with_tangent in (False, True):
                torch.library.opcheck(
                    torch.ops.tangentlens.interpolate.default, (a, b, t, mode, with_tangent)
                )
        outs = [torch.empty(5, 8, dtype=dtype) for _ in range(5)]
        t_out = torch.empty(5, dtype=torch.float64)
        torch.library.opcheck(
            torch.ops.tangentlens.paths_sample_.default, (*outs[:2], t_out, *outs[2:], 3, 4, 8, 1, True, 1e-4)
        )


@requires_native
def test_torch_compile_fullgraph_paths():
    def f(a, b, t):
        p, tan = paths.slerp_with_tangent(a, b, t)
        return p + 0.5 * tan

    a, b, t = _rand(4, 8, seed=23), _rand(4, 8, seed=24), torch.rand(4, dtype=torch.float64)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(a, b, t), f(a, b, t), rtol=0, atol=0)


# ---- CUDA --------------------------------------------------------------------------------------------


@requires_cuda
@requires_native
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("interp", ["slerp", "lerp"])
def test_cuda_sample_matches_cpu(dtype, interp):
    cpu = paths.sample(5, 2**32 - 9, 300, 513, interp=interp, dtype=dtype)
    gpu = paths.sample(5, 2**32 - 9, 300, 513, interp=interp, dtype=dtype, device="cuda")
    for f in FIELDS:
        a, b = getattr(cpu, f), getattr(gpu, f)
        if a is None:
            assert b is None
            continue
        if f in ("z0", "z1", "t"):
            assert torch.equal(a, b.cpu()), f  # counter-based: bit-identical across devices
        else:
            torch.testing.assert_close(b.cpu(), a, **ULP_TOL[dtype], msg=f)


@requires_cuda
@requires_native
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_cuda_interpolate_matches_cpu(dtype):
    a, b = _rand(50, 4, 33, dtype=dtype, seed=25), _rand(50, 4, 33, dtype=dtype, seed=26)
    b[3] = -a[3]
    b[4] = a[4]
    t = torch.rand(50, dtype=torch.float64)
    for fn in (paths.slerp_with_tangent, paths.lerp_with_tangent):
        pc, tc = fn(a, b, t)
        pg, tg = fn(a.cuda(), b.cuda(), t.cuda())
        torch.testing.assert_close(pg.cpu(), pc, **ULP_TOL[dtype])
        torch.testing.assert_close(tg.cpu(), tc, **ULP_TOL[dtype])
    b[7] = 0
    with pytest.raises(RuntimeError, match="row 7 has a zero"):
        paths.slerp(a.cuda(), b.cuda(), t.cuda())


@requires_native
def test_raw_sample_op_checks_its_outputs():
    def run(**over):
        outs = dict(
            z0=torch.empty(0, 8),
            z1=torch.empty(0, 8),
            t=torch.empty(5, dtype=torch.float64),
            p0=torch.empty(5, 8),
            p1=torch.empty(0, 8),
            tangent=torch.empty(5, 8),
        )
        outs.update(over)
        args = [outs[k] for k in ("z0", "z1", "t", "p0", "p1", "tangent")]
        torch.ops.tangentlens.paths_sample_(*args, 1, 0, 8, 1, True, 1e-4)

    run()  # the valid call
    with pytest.raises(RuntimeError, match="p0: required"):
        run(p0=torch.empty(0, 8))
    with pytest.raises(RuntimeError, match=r"tangent: expected shape \[5, 8\]"):
        run(tangent=torch.empty(5, 7))
    with pytest.raises(RuntimeError, match="one dtype"):
        run(tangent=torch.empty(5, 8, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="t: expected a contiguous float64"):
        run(t=torch.empty(5))
    with pytest.raises(RuntimeError, match="path_kind: expected"):
        torch.ops.tangentlens.paths_sample_(
            *[torch.empty(0, 8)] * 2,
            torch.empty(5, dtype=torch.float64),
            *[torch.empty(0, 8)] * 3,
            1,
            0,
            8,
            7,
            True,
            1e-4,
        )


# ---- torchmetrics' slerp of raw vectors (pure PyTorch, used by the PPL engine) ----------------------------


def _torchmetrics_slerp_any(a: list[float], b: list[float], t: float, eps: float = 1e-7) -> list[float]:
    """torchmetrics' slerp_any for one row, from its description, in Python floats."""
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    ua = [x / max(na, eps) for x in a]
    ub = [x / max(nb, eps) for x in b]
    d = sum(x * y for x, y in zip(ua, ub, strict=True))
    zero = math.sqrt(sum(x * x for x in ua)) < eps or math.sqrt(sum(x * x for x in ub)) < eps
    if zero or d > 1 - eps or d < -1 + eps:
        return [x + (y - x) * t for x, y in zip(a, b, strict=True)]
    w = math.acos(d)
    s = max(math.sin(w), eps)
    return [(math.sin((1 - t) * w) * x + math.sin(t * w) * y) / s for x, y in zip(a, b, strict=True)]


def test_slerp_raw_matches_torchmetrics_and_its_tangent():
    g = torch.Generator().manual_seed(31)
    a = torch.randn(6, 5, generator=g, dtype=torch.float64) * torch.tensor([[0.5], [1], [2], [3], [1], [1]])
    b = torch.randn(6, 5, generator=g, dtype=torch.float64)
    b[3] = -2.5 * a[3]  # antipodal: lerp
    b[4] = 3 * a[4]  # collinear: lerp
    a[5] = 0  # zero: lerp
    t = torch.tensor([0.0, 0.3, 1.0, 0.6, 0.2, 0.7], dtype=torch.float64)
    p, dp = paths.slerp_raw_with_tangent(a, b, t)
    ref = torch.tensor(
        [_torchmetrics_slerp_any(a[i].tolist(), b[i].tolist(), float(t[i])) for i in range(6)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(p, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p[0], a[0], rtol=0, atol=1e-15)  # t = 0 is a itself, not a/|a|
    torch.testing.assert_close(p[2], b[2], rtol=1e-12, atol=1e-12)  # t = 1 is b
    # norms move between |a| and |b| (slerp_any), while unit=True stays on the sphere
    q, dq = paths.slerp_raw_with_tangent(a[:3], b[:3], t[:3], unit=True)
    torch.testing.assert_close(q.norm(dim=1), torch.ones(3, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(q, p[:3] / p[:3].norm(dim=1, keepdim=True), rtol=1e-12, atol=0)
    # tangents vs central differences
    h = 1e-6
    for unit, (val, tan) in ((False, (p, dp)), (True, (q, dq))):
        rows = slice(None) if not unit else slice(0, 3)
        fwd = paths.slerp_raw_with_tangent(a[rows], b[rows], t[rows] + h, unit=unit)[0]
        bwd = paths.slerp_raw_with_tangent(a[rows], b[rows], t[rows] - h, unit=unit)[0]
        torch.testing.assert_close(tan, (fwd - bwd) / (2 * h), rtol=1e-6, atol=1e-8)
        assert val.shape == tan.shape
    # a scalar t and a float32 input
    p32, _ = paths.slerp_raw_with_tangent(a[:3].float(), b[:3].float(), 0.25)
    assert p32.dtype == torch.float32
    with pytest.raises(ValueError, match="b: expected the shape of a"):
        paths.slerp_raw_with_tangent(a, b[:, :4], 0.5)
