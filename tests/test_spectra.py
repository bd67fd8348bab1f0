"""Spectra of M(z) = JᵀJ: closed forms (linear decoders), the LPIPS Hessian identity, partial methods and
stochastic estimators against the full spectrum, statistics, scan invariance and resume, input errors."""

import functools
import json

import pytest
import torch

import tangentlens
from tangentlens import spectra
from tangentlens._operator import _Operator
from tangentlens.models import StyleGAN2Generator


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _orthogonal(n, seed):
    return torch.linalg.qr(_rand(n, n, seed=seed))[0]


def _linear(W):
    return lambda z: z @ W.T


def _steep(D=24, d=16, decay=0.6, seed=0):
    """W = U diag(s) Vᵀ with geometric singular values: eigenvalues s² of M known, gaps large."""
    U = _orthogonal(D, seed)[:, :d]
    V = _orthogonal(d, seed + 1)
    s = decay ** torch.arange(d, dtype=torch.float64)
    return U @ torch.diag(s) @ V.T, s.square()


@functools.cache
def _tiny_generator(res=8):
    return StyleGAN2Generator(
        z_dim=6, w_dim=6, img_resolution=res, channel_max=8, mapping_layers=2, seed=0
    ).double()


@functools.cache
def _lpips():
    return tangentlens.LPIPS("vgg16", pretrained=False).double()


# ---- linear generators: M = WᵀW exactly ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["full", "randomized", "lanczos"])
def test_linear_metric_exact(method):
    W, lam = _steep()
    z = _rand(3, 16, seed=5)
    k = None if method == "full" else 4
    sp = spectra.spectrum(_linear(W), z, method=method, k=k, oversample=4, tol=1e-9)
    kk = sp.k
    ref = torch.linalg.eigvalsh(W.T @ W).flip(0)[:kk]
    torch.testing.assert_close(sp.eigenvalues, ref.expand(3, kk), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sp.eigenvalues[0], lam[:kk], rtol=1e-9, atol=1e-12)
    V = sp.eigenvectors
    # eigenvectors: M v = λ v (partial methods: to their reported residuals) and orthonormal
    res = ((W.T @ W) @ V - V * sp.eigenvalues[:, None]).norm(dim=1)
    if method == "full":
        assert (res <= 1e-9).all()
    else:
        torch.testing.assert_close(res, sp.residuals, rtol=1e-6, atol=1e-12)
        assert (sp.error_bounds <= 1e-9 * sp.eigenvalues).all()
    torch.testing.assert_close(V[0].T @ V[0], torch.eye(kk, dtype=torch.float64), rtol=0, atol=1e-9)
    if method == "full":
        torch.testing.assert_close(sp.metric, (W.T @ W).expand(3, 16, 16), rtol=1e-12, atol=1e-12)
        assert (sp.error_bounds == 0).all()


@pytest.mark.parametrize("via", ["gram", "svd"])
def test_full_splits_points_on_cpu(monkeypatch, via):
    G = _tiny_generator(8)
    z = _rand(5, 6, seed=19)
    whole = spectra.spectrum(G, z, method="full", via=via)
    calls = []
    name = "gram" if via == "gram" else "jv"
    orig = getattr(_Operator, name)
    monkeypatch.setattr(spectra.solve, "CPU_ROWS_PER_PASS", 14)  # two points of 1 + 6 rows per pass
    monkeypatch.setattr(_Operator, name, lambda self, x, V: calls.append(len(x)) or orig(self, x, V))
    split = spectra.spectrum(G, z, method="full", via=via)
    assert calls == [2, 2, 1]
    scale = whole.eigenvalues.max().item()
    torch.testing.assert_close(split.metric, whole.metric, rtol=1e-12, atol=1e-13 * scale)
    torch.testing.assert_close(split.eigenvalues, whole.eigenvalues, rtol=1e-12, atol=1e-13 * scale)
    assert split.eigenvectors.shape == whole.eigenvectors.shape == (5, 6, 6)


def test_full_svd_keeps_small_eigenvalues():
    # condition number 1e12: the Gram squares it past float64's reach, the SVD does not
    s = torch.logspace(0, -6, 5, dtype=torch.float64)
    W = _orthogonal(8, 0)[:, :5] @ torch.diag(s) @ _orthogonal(5, 1).T
    sp = spectra.spectrum(_linear(W), _rand(1, 5), via="svd")
    torch.testing.assert_close(sp.eigenvalues[0], s.square(), rtol=1e-6, atol=0)


def test_orthogonal_columns_alignment():
    # columns of W orthogonal with distinct norms: M diagonal, V a permutation (axis aligned)
    norms = torch.tensor([0.5, 3.0, 1.0, 2.0, 0.1], dtype=torch.float64)
    W = _orthogonal(9, 2)[:, :5] * norms
    st = spectra.spectrum(_linear(W), _rand(2, 5)).stats()
    torch.testing.assert_close(
        st["column_orthogonality"], torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(
        st["off_diagonal_energy"], torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(
        st["alignment_distance"], torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0
    )
    torch.testing.assert_close(st["alignment_max"], torch.ones(2, dtype=torch.float64), atol=1e-12, rtol=0)


def test_rotation_breaks_alignment():
    norms = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5, 0.25], dtype=torch.float64)
    W = _orthogonal(10, 3)[:, :6] * norms
    R = _orthogonal(6, 4)
    aligned = spectra.spectrum(_linear(W), _rand(1, 6)).stats()
    rotated = spectra.spectrum(_linear(W @ R.T), _rand(1, 6)).stats()
    assert aligned["alignment_distance"].item() < 1e-9
    assert rotated["alignment_distance"].item() > 0.5
    assert rotated["alignment_max"].item() < 0.9
    assert rotated["column_orthogonality"].item() > 0.05
    assert rotated["off_diagonal_energy"].item() > 0.01
    # the spectrum itself is rotation invariant
    torch.testing.assert_close(rotated["trace"], aligned["trace"])
    torch.testing.assert_close(rotated["log_det"], aligned["log_det"])


# ---- statistics on closed forms ------------------------------------------------------------------------


def test_stats_diagonal_closed_form():
    lam = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.01], dtype=torch.float64)
    st = spectra.Spectrum.from_metric(torch.diag(lam)[None]).stats()
    p = lam / lam.sum()
    expected = {
        "trace": lam.sum(),
        "log_det": lam.log().sum(),
        "condition_number": lam[0] / lam[-1],
        "participation_ratio": lam.sum() ** 2 / (lam**2).sum(),
        "entropy_rank": torch.exp(-(p * p.log()).sum()),
        "column_orthogonality": torch.tensor(0.0, dtype=torch.float64),
        "off_diagonal_energy": torch.tensor(0.0, dtype=torch.float64),
        "alignment_distance": torch.tensor(0.0, dtype=torch.float64),
        "alignment_max": torch.tensor(1.0, dtype=torch.float64),
    }
    for name, v in expected.items():
        torch.testing.assert_close(st[name][0], v, rtol=1e-12, atol=1e-12, msg=name)
    # cumulative fractions: .516, .774, .903, .967, .99936, 1 -> 99 % and 99.9 % need 5, 99.99 % needs 6
    assert st["dims_99"].item() == 5 and st["dims_99.9"].item() == 5 and st["dims_99.99"].item() == 6


def test_stats_partial_spectrum_omits_full_only():
    W, _ = _steep()
    st = spectra.spectrum(_linear(W), _rand(1, 16), k=3, method="lanczos").stats()
    assert "log_det" not in st and "column_orthogonality" not in st and "condition_number" not in st
    assert {"trace", "participation_ratio", "alignment_max"} <= set(st)


def test_column_orthogonality_formula():
    A = _rand(7, 4, seed=9)
    M = A.T @ A
    st = spectra.Spectrum.from_metric(M[None]).stats()
    want = 0.5 * (torch.diagonal(M).log().sum() - torch.logdet(M))
    torch.testing.assert_close(st["column_orthogonality"][0], want)
    off = (M**2).sum() - (torch.diagonal(M) ** 2).sum()
    torch.testing.assert_close(st["off_diagonal_energy"][0], off / (M**2).sum())


# ---- the LPIPS identity: Hessian of z' -> LPIPS(G(z), G(z')) at z is 2 M -----------------------------


def test_lpips_hessian_identity():
    G, lp = _tiny_generator(32), _lpips()
    z = _rand(1, 6, seed=11)
    sp = spectra.spectrum(G, z, distance=lp)
    e0 = lp.embed(G(z)).detach()
    H = torch.autograd.functional.hessian(lambda zp: (lp.embed(G(zp)) - e0).square().sum(), z).reshape(6, 6)
    torch.testing.assert_close(H, 2 * sp.metric[0], rtol=1e-8, atol=1e-12 * H.abs().max().item())
    # the LPIPS Gram fast path and the SVD of the explicit embedding Jacobian agree
    svd = spectra.spectrum(G, z, distance=lp, via="svd")
    torch.testing.assert_close(svd.metric, sp.metric, rtol=1e-9, atol=1e-12 * H.abs().max().item())


# ---- partial methods and estimators vs the full spectrum -------------------------------------------------


def _mildly_nonlinear(W):
    return lambda z: torch.tanh(0.3 * (z @ W.T)) / 0.3 + 0.05 * (z @ W.T) ** 2


@pytest.mark.parametrize("method", ["randomized", "lanczos"])
@pytest.mark.parametrize("nonlinear", [False, True])
def test_partial_vs_full(method, nonlinear):
    W, _ = _steep(D=30, d=20, decay=0.7, seed=7)
    fn = _mildly_nonlinear(W) if nonlinear else _linear(W)
    z = _rand(3, 20, seed=13)
    full = spectra.spectrum(fn, z, method="full")
    part = spectra.spectrum(fn, z, k=5, method=method, oversample=3, tol=1e-6)
    rel = (part.eigenvalues - full.eigenvalues[:, :5]).abs() / full.eigenvalues[:, :5]
    assert rel.max() < 1e-3
    # honest bounds: the true error never exceeds the residual bound
    assert ((part.eigenvalues - full.eigenvalues[:, :5]).abs() <= part.error_bounds + 1e-12).all()
    # and the eigenvectors span the same directions
    dist = spectra.grassmann_distance(part.eigenvectors, full.eigenvectors[:, :, :5])
    assert dist.max() < 1e-3


@pytest.mark.parametrize("precision", ["tf32", "bf16", "fp16"])
def test_reduced_precision_against_float64(precision):
    # float32 StyleGAN2 + LPIPS in z space (the mapping runs under autocast too); TF32 is emulated on the CPU
    G = StyleGAN2Generator(z_dim=6, w_dim=6, img_resolution=16, channel_max=8, mapping_layers=2, seed=0)
    lp = tangentlens.LPIPS("vgg16", pretrained=False)
    z = _rand(2, 6, seed=3)
    ref = spectra.spectrum(G.double(), z, distance=lp.double()).eigenvalues[:, :3]
    G, lp = G.float(), lp.float()
    errors = {}
    for method, k in (("full", None), ("lanczos", 3)):
        sp = spectra.spectrum(G, z.float(), distance=lp, precision=precision, method=method, k=k)
        errors[method] = ((sp.eigenvalues[:, :3] - ref).abs() / ref).max().item()
    print(f"spectrum {precision}: top-3 max relative error {errors}")
    assert max(errors.values()) < (0.02 if precision == "tf32" else 0.15)
    if precision == "tf32":  # the emulation is on: float32 alone is ~1e-6 off
        assert min(errors.values()) > 1e-4


def test_partial_on_stylegan_warm_start():
    G = _tiny_generator(8)
    z = _rand(2, 6, seed=17)
    full = spectra.spectrum(G, z, method="full")
    kw = dict(k=2, method="randomized", oversample=1, tol=1e-6, iters=100)
    cold = spectra.spectrum(G, z, **kw)
    torch.testing.assert_close(cold.eigenvalues, full.eigenvalues[:, :2], rtol=1e-8, atol=0)
    warm = spectra.spectrum(G, z + 1e-3, init=cold, **kw)
    assert (warm.iterations <= cold.iterations).all()


def test_trace_estimators():
    W, lam = _steep(D=30, d=20, decay=0.85, seed=3)
    z = _rand(4, 20, seed=1)
    tr = lam.sum()
    for method in ("hutchinson", "hutch++"):
        est = spectra.trace(_linear(W), z, probes=60, method=method, seed=2)
        assert (est.stderr > 0).all()
        assert ((est.estimate - tr).abs() <= 4 * est.stderr + 1e-9).all(), (method, est, tr)
    hpp = spectra.trace(_linear(W), z, probes=60, method="hutch++", seed=2)
    hut = spectra.trace(_linear(W), z, probes=60, seed=2)
    assert hpp.stderr.mean() < hut.stderr.mean()  # the deflation pays on a decaying spectrum


def test_off_diagonal_energy_estimate():
    A = _rand(12, 8, seed=4)
    M = A.T @ A
    exact = (M**2).sum() - (torch.diagonal(M) ** 2).sum()
    est = spectra.off_diagonal_energy(_linear(A), _rand(2, 8), probes=400, seed=5)
    assert ((est.estimate - exact).abs() <= 4 * est.stderr).all(), (est, exact)
    assert (est.stderr < 0.25 * exact).all()


def test_consistency():
    W, _ = _steep(d=8, D=12)
    sp = spectra.spectrum(_linear(W), _rand(3, 8))
    v = _rand(5, 8, seed=8)
    c = spectra.consistency(quadratic_forms=sp.quadratic_forms(v), eigenvectors=sp.eigenvectors, k=3)
    assert abs(c["qform_correlation_mean"] - 1.0) < 1e-12  # a linear map: the same metric everywhere
    assert c["grassmann_mean"] < 1e-6
    agg = spectra.aggregate(sp.stats())
    assert agg["trace"]["std"] < 1e-9 and agg["trace"]["count"] == 3


# ---- scan --------------------------------------------------------------------------------------------------


def _scan(**kw):
    args = dict(k=3, method="full", batch_size=2, progress=False, num_directions=4, store_eigenvectors=True)
    args.update(kw)
    return spectra.scan(_tiny_generator(8), 5, seed=3, **args)


def test_scan_batch_invariance_and_json(tmp_path):
    a, b = _scan(batch_size=2), _scan(batch_size=5)
    torch.testing.assert_close(a.eigenvalues, b.eigenvalues, rtol=1e-10, atol=0)
    for name in a.stats:
        torch.testing.assert_close(a.stats[name], b.stats[name], rtol=1e-9, atol=1e-12, msg=name)
    # point i is philox_normal(seed, i): the spectrum of G at it
    z = tangentlens.ops.philox_normal(3, 0, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(a.eigenvalues, spectra.spectrum(_tiny_generator(8), z, k=3).eigenvalues)
    path = tmp_path / "scan.json"
    a.to_json(path)
    back = spectra.ScanResult.from_json(path)
    assert torch.equal(back.eigenvalues, a.eigenvalues) and torch.equal(back.eigenvectors, a.eigenvectors)
    assert back.config == json.loads(json.dumps(a.config))
    assert set(a.aggregate()) >= {"trace", "eigenvalues", "participation_ratio"}
    assert set(a.consistency()) >= {"qform_correlation_mean", "grassmann_mean"}


def test_scan_partial_is_batch_invariant():
    kw = dict(method="lanczos", k=2, oversample=1, tol=1e-6)
    a, b = _scan(batch_size=1, **kw), _scan(batch_size=4, **kw)
    torch.testing.assert_close(a.eigenvalues, b.eigenvalues, rtol=1e-9, atol=0)
    assert torch.equal(a.iterations, b.iterations)


def test_scan_resume(tmp_path):
    ckpt = tmp_path / "scan.pt"
    full = _scan()
    first = spectra.scan(
        _tiny_generator(8),
        2,
        seed=3,
        k=3,
        method="full",
        batch_size=2,
        progress=False,
        num_directions=4,
        store_eigenvectors=True,
        checkpoint=ckpt,
    )
    assert first.num_points == 2
    resumed = _scan(checkpoint=ckpt)
    assert resumed.resumed_from == 2
    for name, v in full._rows().items():  # same batches: bit-identical
        assert torch.equal(resumed._rows()[name], v), name
    with pytest.raises(ValueError, match="another configuration"):
        _scan(checkpoint=ckpt, k=2)


def test_scan_plots(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    res = _scan()
    ax = res.plot_eigenvalue_decay()
    ax2 = res.plot_alignment()
    ax.figure.savefig(tmp_path / "a.png")
    ax2.figure.savefig(tmp_path / "b.png")
    with pytest.raises(ValueError, match="store_eigenvectors"):
        _scan(store_eigenvectors=False).plot_alignment()


def test_spaces_w_and_wplus():
    G = _tiny_generator(8)
    z = _rand(2, 6, seed=21)
    ws = G.mapping(z, None)
    sw = spectra.spectrum(G, ws[:, 0], space="w")
    swp = spectra.spectrum(G, ws, space="w+")
    assert sw.dim == 6 and swp.dim == G.num_ws * 6
    # w broadcast = w+ restricted to the "all ws equal" directions: tr M_w = tr(Bᵀ M_w+ B), B = [I; I; ...]
    Bm = torch.eye(6, dtype=torch.float64).repeat(G.num_ws, 1)
    torch.testing.assert_close(sw.metric, Bm.T @ swp.metric @ Bm, rtol=1e-9, atol=1e-14)


# ---- errors -----------------------------------------------------------------------------------------------


def test_bad_inputs_name_the_argument():
    W, _ = _steep()
    fn = _linear(W)
    z = _rand(2, 16)
    cases = [
        (dict(z=z, k=0), "k: expected an int in \\[1, 16\\], got 0"),
        (dict(z=z, method="power"), "method: expected one of"),
        (dict(z=z, via="qr"), "via: expected one of"),
        (dict(z=z, space="w"), "space: 'w' needs a generator"),
        (dict(z=z, tol=0.0), "tol: expected a positive finite number, got 0.0"),
        (dict(z=z[0]), "z: expected points \\[B, d\\]"),
        (dict(z=z * float("nan")), "z: expected finite values"),
        (dict(z=z, method="full", init=z), "init: a warm start applies"),
        (
            dict(z=z, k=2, method="lanczos", init=z),
            "init: expected a Spectrum or eigenvectors \\[2, 16, k0\\]",
        ),
    ]
    for kw, msg in cases:
        zz = kw.pop("z")
        with pytest.raises(ValueError, match=msg):
            spectra.spectrum(fn, zz, **kw)
    with pytest.raises(ValueError, match="z: expected \\[B, 6\\] for space 'z', got \\(2, 5\\)"):
        spectra.spectrum(_tiny_generator(8), _rand(2, 5))
    with pytest.raises(TypeError, match="distance: expected None, 'l2'.*got function"):
        spectra.spectrum(fn, z, distance=lambda a, b: a)
    with pytest.raises(TypeError, match="fn_or_generator: expected a generator"):
        spectra.spectrum(3, z)
    with pytest.raises(ValueError, match="num_points: expected an int >= 1, got 0"):
        spectra.scan(_tiny_generator(8), 0)
    with pytest.raises(ValueError, match="probes: expected an int >= 6"):
        spectra.trace(fn, z, probes=3, method="hutch++")


def test_exported():
    assert tangentlens.spectrum is spectra.spectrum
    assert tangentlens.spectra is spectra


def test_cli_spectrum(tmp_path, capsys):
    from tangentlens import cli

    out = tmp_path / "s.json"
    args = ["spectrum", "--generator", "test_spectra:_tiny_generator", "--points", "3", "--k", "2"]
    rc = cli.main([*args, "--batch-size", "2", "--method", "full", "--no-progress", "--json", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["points"] == 3 and "trace" in printed["stats"]
    res = spectra.ScanResult.from_json(out)
    assert res.eigenvalues.shape == (3, 2)
    assert cli.main(["spectrum", "--generator", "no_such_module:G", "--points", "2", "--no-progress"]) == 2
    assert "cannot import module 'no_such_module'" in capsys.readouterr().err


# ---- generators through as_generator's adapters ------------------------------------------------------------


class _Decoder(torch.nn.Module):
    """A VAE-style object: decode(z) and z_dim, no mapping network."""

    def __init__(self, W):
        super().__init__()
        self.W = torch.nn.Parameter(W)
        self.z_dim = W.shape[1]

    def decode(self, z):
        return torch.tanh(z @ self.W.T).reshape(z.shape[0], 1, 4, -1)


def test_vae_decoder_and_output_range_through_adapters():
    W, _ = _steep()  # its first 16 rows: a 4 x 4 image from a latent of width 16
    dec = _Decoder(W[:16].clone())
    z = _rand(2, 16, seed=9)
    sp = spectra.spectrum(dec, z, k=3, method="full")
    J = torch.func.vmap(torch.func.jacrev(lambda zz: dec.decode(zz[None]).flatten()))(z)
    ref = torch.linalg.eigvalsh(J.transpose(1, 2) @ J).flip(-1)[:, :3]
    torch.testing.assert_close(sp.eigenvalues, ref, rtol=1e-9, atol=1e-12)
    # the scan reads z_dim from the decoder (no z_dim= needed) and equals the per-point spectra
    res = spectra.scan(dec, 3, k=3, method="full", batch_size=2, progress=False)
    z_scan = tangentlens.ops.philox_normal(0, 0, 3, 16, stream=spectra.STREAM_LATENT, dtype=torch.float64)
    want = spectra.spectrum(dec, z_scan, k=3, method="full").eigenvalues
    torch.testing.assert_close(res.eigenvalues, want, rtol=1e-12, atol=0)
    # a generator declared in [0, 255] is measured in [-1, 1] units: M scales by 1 / 127.5²
    g255 = tangentlens.generators.as_generator(
        lambda zz: (dec.decode(zz) + 1) * 127.5, z_dim=16, output_range="0_255"
    )
    torch.testing.assert_close(spectra.spectrum(g255, z, k=3, method="full").eigenvalues, sp.eigenvalues)
