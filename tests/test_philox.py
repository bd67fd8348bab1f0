"""Counter-based generator: known answers, native vs reference, chunking invariance, statistics."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tangentlens.ops as ops
from conftest import ALL_DTYPES, requires_cuda, requires_native
from tangentlens import reference

# Random123's published known-answer vectors for philox4x32_10: (counter, key, output).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]
IMPLS = ["reference", pytest.param("native", marks=requires_native)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_known_answer_vectors(impl, ctr, key, expected):
    seed = key[0] | (key[1] << 32)
    got = ops.philox4x32_10(torch.tensor([ctr]), seed, impl=impl)
    assert tuple(got[0].tolist()) == expected


@requires_native
def test_raw_generator_native_equals_reference_bitwise():
    g = torch.Generator().manual_seed(0)
    ctr = torch.randint(0, 2**32, (20000, 4), generator=g, dtype=torch.int64)
    for seed in (0, 1, 0xDEADBEEFCAFEF00D, 2**64 - 1):
        assert torch.equal(
            ops.philox4x32_10(ctr, seed, impl="native"), ops.philox4x32_10(ctr, seed, impl="reference")
        )


def test_raw_generator_rejects_bad_counters():
    with pytest.raises(ValueError, match=r"counters: expected shape \[N, 4\]"):
        ops.philox4x32_10(torch.zeros(3, 3, dtype=torch.int64), 0)
    with pytest.raises(ValueError, match="uint32 words"):
        ops.philox4x32_10(torch.tensor([[0, 0, 0, 2**32]]), 0)
    with pytest.raises(TypeError, match="counters: expected an int64 tensor"):
        ops.philox4x32_10(torch.zeros(3, 4, dtype=torch.int32), 0)


@requires_native
@pytest.mark.parametrize("dim", [1, 2, 7, 64, 513])
@pytest.mark.parametrize("start", [0, 2**32 - 3, 2**64 - 5])
def test_native_normals_match_reference(dim, start):
    count = 5  # at 2**64 - 5: the last five indices (a range past 2**64 is refused, issue 17)
    nat = ops.philox_normal(11, start, count, dim, dtype=torch.float64, impl="native")
    ref = ops.philox_normal(11, start, count, dim, dtype=torch.float64, impl="reference")
    # Our log/sincos are built from exact + - * / (bit-reproducible everywhere); libm's differ by an ulp.
    torch.testing.assert_close(nat, ref, rtol=4e-15, atol=4e-15)


@requires_native
def test_native_normals_match_reference_on_many_values():
    nat = ops.philox_normal(3, 1000, 2000, 100, dtype=torch.float64, impl="native")
    ref = ops.philox_normal(3, 1000, 2000, 100, dtype=torch.float64, impl="reference")
    err = ((nat - ref).abs() / ref.abs().clamp_min(1.0)).max().item()
    assert err < 4e-15, err


@requires_native
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_reduced_dtypes_are_the_rounded_float64(dtype):
    x64 = ops.philox_normal(5, 7, 64, 33, dtype=torch.float64)
    x = ops.philox_normal(5, 7, 64, 33, dtype=dtype)
    expected = x64.to(torch.float32).to(dtype) if dtype != torch.float64 else x64
    assert torch.equal(x, expected)


@requires_native
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**64 - 1),
    start=st.integers(0, 2**64 - 60),  # the last index is 2**64 - 1 at most (issue 17: no wrap-around)
    dim=st.integers(1, 40),
    cuts=st.lists(st.integers(0, 60), max_size=4),
)
def test_chunking_is_bit_identical(seed, start, dim, cuts):
    count = 60
    whole = ops.philox_normal(seed, start, count, dim)
    edges = sorted({0, count, *cuts})
    parts = [
        ops.philox_normal(seed, start + a, b - a, dim) for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    assert torch.equal(torch.cat(parts), whole)


@requires_native
def test_out_writes_into_a_strided_row_slice():
    buf = torch.full((10, 12), 7.0)
    view = buf[2:8, :5]  # row stride 12
    ops.philox_normal(9, 2, 6, 5, out=view)
    assert torch.equal(view, ops.philox_normal(9, 2, 6, 5))
    assert (buf[:, 5:] == 7.0).all() and (buf[:2] == 7.0).all() and (buf[8:] == 7.0).all()


def test_rows_depend_on_seed_stream_and_index():
    a = ops.philox_normal(1, 0, 4, 16)
    assert not torch.equal(a, ops.philox_normal(2, 0, 4, 16))
    assert not torch.equal(a, ops.philox_normal(1, 0, 4, 16, stream=1))
    assert not torch.equal(a[1:], a[:-1])
    # The pair (seed, start) is a 64-bit key / 64-bit row: seeds differing only in the high word differ.
    assert not torch.equal(a, ops.philox_normal(1 + 2**32, 0, 4, 16))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(seed=-1), ValueError, "seed: expected an int in"),
        (dict(seed=2**64), ValueError, "seed: expected an int in"),
        (dict(seed=1.5), TypeError, "seed: expected an int"),
        (dict(start=-3), ValueError, "start: expected an int in"),
        (dict(count=-1), ValueError, "count: expected a non-negative int"),
        (dict(dim=2.0), ValueError, "dim: expected a non-negative int"),
        (dict(stream=2**32), ValueError, "stream: expected an int in"),
        (dict(dtype=torch.int32), TypeError, "dtype: expected one of"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, exc, match):
    args = dict(seed=0, start=0, count=2, dim=3)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        ops.philox_normal(**args)


def test_bad_out_is_refused():
    with pytest.raises(ValueError, match=r"out: expected shape \(2, 3\)"):
        ops.philox_normal(0, 0, 2, 3, out=torch.empty(3, 2))
    with pytest.raises(ValueError, match="out: expected unit stride"):
        ops.philox_normal(0, 0, 2, 3, out=torch.empty(3, 2).t())
    with pytest.raises(TypeError, match="out.dtype"):
        ops.philox_normal(0, 0, 2, 3, out=torch.empty(2, 3, dtype=torch.int64))


def test_empty_requests():
    assert ops.philox_normal(0, 0, 0, 5).shape == (0, 5)
    assert ops.philox_normal(0, 0, 3, 0).shape == (3, 0)


# ---- statistics -------------------------------------------------------------------------------------


def normality_failures(x: np.ndarray) -> list[str]:
    """Checks a sample of n draws that should be N(0, 1); bounds are ~6 standard errors, so a correct
    generator passes with overwhelming probability and a biased one of the sizes below fails."""
    from scipy import stats

    n = x.size
    fails = []
    se = {
        "mean": 1 / math.sqrt(n),
        "var": math.sqrt(2 / n),
        "skew": math.sqrt(6 / n),
        "kurt": math.sqrt(24 / n),
    }
    m, v = x.mean(), x.var()
    if abs(m) > 6 * se["mean"]:
        fails.append(f"mean {m}")
    if abs(v - 1) > 6 * se["var"]:
        fails.append(f"var {v}")
    if abs(stats.skew(x)) > 6 * se["skew"]:
        fails.append(f"skew {stats.skew(x)}")
    if abs(stats.kurtosis(x)) > 6 * se["kurt"]:
        fails.append(f"excess kurtosis {stats.kurtosis(x)}")
    p = stats.kstest(x, "norm").pvalue
    if p < 1e-6:
        fails.append(f"KS p = {p}")
    return fails


@pytest.fixture(scope="module")
def big_sample() -> np.ndarray:
    return ops.philox_normal(2024, 0, 4000, 250, dtype=torch.float64).numpy()  # 1M normals


def test_normals_pass_moment_and_ks_checks(big_sample):
    assert normality_failures(big_sample.ravel()) == []
    # Each column position (cos halves, sin halves, across rows) is N(0, 1) on its own too.
    assert normality_failures(big_sample[:, 0::2].ravel()) == []
    assert normality_failures(big_sample[:, 1::2].ravel()) == []


def test_the_statistical_checks_have_power(big_sample):
    x = big_sample.ravel()
    assert normality_failures(x * 1.01) != []  # 1 % scale error
    assert normality_failures(x + 0.01) != []  # 0.01 bias
    # A unit-variance uniform has the right mean and variance: only the shape checks can catch it.
    u = np.random.default_rng(0).random(x.size)
    assert normality_failures(np.sqrt(3) * (2 * u - 1)) != []


def test_pairs_and_rows_are_uncorrelated(big_sample):
    n = big_sample.shape[0] * (big_sample.shape[1] // 2)
    cos_half, sin_half = big_sample[:, 0::2].ravel(), big_sample[:, 1::2].ravel()
    for a, b in [(cos_half, sin_half), (big_sample[:-1].ravel(), big_sample[1:].ravel())]:
        r = np.corrcoef(a, b)[0, 1]
        assert abs(r) < 6 / math.sqrt(n), r
    # Radius and angle of Box-Muller pairs are independent: squared radii are Exp(1/2), mean 2, var 4.
    r2 = cos_half**2 + sin_half**2
    assert abs(r2.mean() - 2) < 6 * 2 / math.sqrt(n)


def test_uniform_t_is_uniform():
    from scipy import stats

    t = reference.philox_uniform53(77, 0, 200000, 2).numpy()
    assert t.min() >= 0 and t.max() < 1
    assert stats.kstest(t, "uniform").pvalue > 1e-6


# ---- torch.library checks -----------------------------------------------------------------------


@requires_native
def test_opcheck_philox_ops():
    ctr = torch.randint(0, 2**32, (17, 4), dtype=torch.int64)
    torch.library.opcheck(torch.ops.tangentlens.philox4x32_10.default, (ctr, 123))
    for dtype in (torch.float32, torch.float64):
        out = torch.empty(6, 9, dtype=dtype)
        torch.library.opcheck(torch.ops.tangentlens.philox_normal_.default, (out, 5, 3, 0))


@requires_native
def test_torch_compile_fullgraph():
    def f(x):
        return x + ops.philox_normal(1, 10, x.shape[0], x.shape[1], dtype=x.dtype)

    x = torch.ones(4, 6)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), f(x))


# ---- CUDA --------------------------------------------------------------------------------------------


@requires_cuda
@requires_native
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_cuda_normals_bit_identical_to_cpu(dtype):
    for start, count, dim in [(0, 1000, 512), (2**32 - 7, 33, 7), (2**64 - 9, 9, 1)]:
        cpu = ops.philox_normal(42, start, count, dim, dtype=dtype)
        gpu = ops.philox_normal(42, start, count, dim, dtype=dtype, device="cuda")
        assert torch.equal(gpu.cpu(), cpu)


@requires_cuda
@requires_native
def test_cuda_raw_generator_and_kat():
    ctr = torch.randint(0, 2**32, (4096, 4), dtype=torch.int64)
    assert torch.equal(ops.philox4x32_10(ctr.cuda(), 99).cpu(), ops.philox4x32_10(ctr, 99))
    for c, key, expected in KAT:
        got = ops.philox4x32_10(torch.tensor([c], device="cuda"), key[0] | (key[1] << 32))
        assert tuple(got[0].tolist()) == expected


@requires_cuda
@requires_native
def test_cuda_opcheck():
    out = torch.empty(6, 9, device="cuda")
    torch.library.opcheck(torch.ops.tangentlens.philox_normal_.default, (out, 5, 3, 0))
